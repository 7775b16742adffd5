"""The outcome of one ingest: what was accepted, what was rejected and why."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Rejection:
    location: str  # "line 3" or "feature 7"
    reason: str

    def __str__(self) -> str:
        return f"{self.location}: {self.reason}"


@dataclass
class IngestReport:
    """Counts and rejections; ``written`` is False when nothing was committed."""

    source: str
    accepted: int = 0
    rejections: list[Rejection] = field(default_factory=list)
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    written: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def rejected(self) -> int:
        return len(self.rejections)

    def summary_line(self) -> str:
        return f"accepted {self.accepted}, rejected {self.rejected}"

    def lines(self) -> list[str]:
        """The summary line first, then one ``location: reason`` line per rejected row."""
        out = [self.summary_line()]
        out.extend(str(r) for r in self.rejections)
        out.extend(self.notes)
        if self.written:
            out.append(
                f"written: {self.inserted} new, {self.updated} updated, {self.unchanged} unchanged"
            )
        else:
            out.append("written: nothing")
        return out
