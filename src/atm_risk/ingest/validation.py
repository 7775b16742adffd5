"""Turn source rows into validated canonical records, collecting every rejection."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from atm_risk.ingest.errors import IngestError
from atm_risk.ingest.readers import Source, SourceRow
from atm_risk.ingest.report import Rejection

RecordT = TypeVar("RecordT", bound=BaseModel)

GEOMETRY = "@geometry"
"""Pseudo-column: satisfied when the source carries geometries (GeoJSON, GeoPackage)."""


class RowError(ValueError):
    """A profile's mapping failed for one row; the message is the reason shown to the user."""


@dataclass(frozen=True)
class Profile:
    """How one kind of source file maps onto the canonical columns.

    ``required`` lists groups of alternatives: every group needs one of its columns, e.g.
    ``(("lat", GEOMETRY), ...)`` accepts a ``lat`` column or geometries.
    """

    name: str
    description: str
    required: tuple[tuple[str, ...], ...]
    to_canonical: Callable[[SourceRow], dict[str, Any]]
    default_feed: str | None = None

    def check_columns(self, source: Source) -> None:
        present = set(source.columns)
        if source.format != "csv":
            present.add(GEOMETRY)
        missing = [
            " or ".join(a if a != GEOMETRY else "a geometry" for a in group)
            for group in self.required
            if not present.intersection(group)
        ]
        if missing:
            raise IngestError(
                f"{source.path}: missing required column(s) for profile '{self.name}': "
                + "; ".join(missing)
            )


def format_validation_error(exc: ValidationError) -> str:
    """One line per problem: ``field: message (got 'value')``."""
    parts = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "row"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "missing" or ("input" in err and err["input"] is None):
            parts.append(f"{loc}: required, missing")
            continue
        shown = repr(err.get("input"))
        if len(shown) > 60:
            shown = shown[:57] + "..."
        parts.append(f"{loc}: {msg} (got {shown})" if loc != "row" else msg)
    return "; ".join(parts)


@dataclass
class Validated(Generic[RecordT]):
    records: list[tuple[str, RecordT]]  # (location, record)
    rejections: list[Rejection]


def validate_source(
    source: Source,
    profile: Profile,
    schema: type[RecordT],
    *,
    key: Callable[[RecordT], Hashable],
    describe_key: Callable[[RecordT], str],
    context: dict[str, Any] | None = None,
) -> Validated[RecordT]:
    """Validate every row; a key seen twice in one file rejects the later row."""
    profile.check_columns(source)
    records: list[tuple[str, RecordT]] = []
    rejections: list[Rejection] = []
    first_seen: dict[Hashable, str] = {}
    for row in source.rows:
        try:
            record = schema.model_validate(profile.to_canonical(row), context=context)
        except ValidationError as exc:
            rejections.append(Rejection(row.location, format_validation_error(exc)))
            continue
        except RowError as exc:
            rejections.append(Rejection(row.location, str(exc)))
            continue
        k = key(record)
        if k in first_seen:
            rejections.append(
                Rejection(
                    row.location,
                    f"duplicate {describe_key(record)}: already given at {first_seen[k]}",
                )
            )
            continue
        first_seen[k] = row.location
        records.append((row.location, record))
    rejections.extend(source.unreadable)
    rejections.sort(key=lambda r: _location_order(r.location))
    return Validated(records, rejections)


def _location_order(location: str) -> tuple[str, int]:
    kind, _, number = location.partition(" ")
    return (kind, int(number) if number.isdigit() else 0)


def pick(values: dict[str, Any], names: Iterable[str]) -> dict[str, Any]:
    """The named columns that hold a value, as a dict (for canonical profiles). An empty
    cell is left out, so that an optional field takes its default (an empty ``site_type``
    is ``unknown``, not a rejected row) and a required one is reported missing."""
    return {n: values[n] for n in names if values.get(n) is not None}
