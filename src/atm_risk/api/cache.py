"""What the API keeps of the published run last asked about. A published run never changes,
so its totals and its ranking per scope can be kept until the next run is published (then
everything starts afresh); one ``RunCache`` per app."""

from __future__ import annotations

import threading
from array import array
from collections.abc import Callable, Hashable
from typing import Any

from atm_risk.risk.models import RiskRun

MAX_ITEMS = 200_000  # encoded ranking items kept in all (about 350 bytes each: 70 MB)


class Encoded:
    """JSON items in one buffer, separated by commas, and where each starts: a page is one
    slice. (One buffer: a bytes object per item would hold orjson's 4 KB allocation each.)"""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._starts = array("q")
        self._blob = b""

    def add(self, item: bytes) -> None:
        self._starts.append(len(self._buffer))
        self._buffer += item
        self._buffer += b","

    def done(self) -> Encoded:
        self._starts.append(len(self._buffer))
        self._blob, self._buffer = bytes(self._buffer), bytearray()
        return self

    def __len__(self) -> int:
        return max(len(self._starts) - 1, 0)

    def page(self, offset: int, limit: int) -> bytes:
        """Items ``offset`` to ``offset + limit - 1`` joined by commas."""
        end = min(offset + limit, len(self))
        if offset >= end:
            return b""
        return self._blob[self._starts[offset] : self._starts[end] - 1]


class RunCache:
    """- ``count``: totals per scope and filter;
    - ``items`` / ``fill``: the unfiltered ranking of a scope as encoded JSON items, so that a
      page is a slice. The first request of a scope starts filling it in the background (it
      and the requests during the fill read the database); at most ``max_items`` items are
      kept in all (``max_items=0``: never)."""

    def __init__(self, max_items: int = MAX_ITEMS) -> None:
        self.max_items = max_items
        self._lock = threading.Lock()
        self._run: tuple[int, Any] | None = None
        self._counts: dict[Hashable, int] = {}
        self._items: dict[Hashable, Encoded] = {}
        self._kept = 0
        self._busy: set[Hashable] = set()  # being filled, or too big to keep
        self._fills: list[threading.Thread] = []

    def _at(self, run: RiskRun) -> tuple[int, Any]:
        """The key of ``run``; forget everything of another run. Call with the lock held."""
        this = (run.id, run.finished_at)
        if self._run != this:
            self._run, self._counts, self._items, self._kept = this, {}, {}, 0
            self._busy = set()
        return this

    def count(self, run: RiskRun, key: Hashable, compute: Callable[[], int | None]) -> int:
        with self._lock:
            this = self._at(run)
            total = self._counts.get(key)
        if total is None:
            total = int(compute() or 0)
            with self._lock:
                if self._run == this:
                    self._counts[key] = total
        return total

    def items(self, run: RiskRun, key: Hashable) -> Encoded | None:
        with self._lock:
            self._at(run)
            return self._items.get(key)

    def fill(self, run: RiskRun, key: Hashable, load: Callable[[], Encoded]) -> None:
        """Start filling ``key`` with ``load()`` in the background, unless it is already
        being filled or known to be too big."""
        if self.max_items <= 0:
            return
        with self._lock:
            this = self._at(run)
            if key in self._items or key in self._busy:
                return
            self._busy.add(key)

        def work() -> None:
            try:
                items: Encoded | None = load()
            except Exception:  # the requests go on reading the database
                items = None
            with self._lock:
                if self._run != this:
                    return
                if items is not None and self._kept + len(items) <= self.max_items:
                    self._items[key] = items
                    self._kept += len(items)
                if items is None:
                    self._busy.discard(key)  # try again later; too big stays busy

        thread = threading.Thread(target=work, name="atm-risk-ranking-fill", daemon=True)
        with self._lock:
            self._fills = [t for t in self._fills if t.is_alive()] + [thread]
        thread.start()

    @property
    def scopes_kept(self) -> int:
        with self._lock:
            return len(self._items)

    def join(self, timeout: float | None = None) -> None:
        """Wait for the fills under way (tests, shutdown)."""
        with self._lock:
            fills = list(self._fills)
        for thread in fills:
            thread.join(timeout)
