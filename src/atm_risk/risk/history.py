"""Event history on the benchmark grid, with times in days (local clock times as given)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from atm_risk.risk.events import Events
from atm_risk.risk.grid import FloatArray, Grid, IntArray, project_utm

DAY = np.timedelta64(1, "D")


def to_days(times: npt.NDArray[np.datetime64]) -> FloatArray:
    """Days since 1970-01-01 00:00 (of the same clock)."""
    return np.asarray(
        (times - np.datetime64("1970-01-01T00:00")) / np.timedelta64(1, "s") / 86_400.0
    )


@dataclass(frozen=True)
class History:
    """Events sorted by time: t in days, projected x/y, and their grid cells."""

    t: FloatArray
    x: FloatArray
    y: FloatArray
    cell: IntArray
    grid: Grid

    def __len__(self) -> int:
        return len(self.t)

    def window(self, start: float, end: float) -> History:
        """Events with start <= t < end."""
        lo, hi = np.searchsorted(self.t, [start, end], side="left")
        return History(self.t[lo:hi], self.x[lo:hi], self.y[lo:hi], self.cell[lo:hi], self.grid)

    def before(self, origin: float) -> History:
        return self.window(-np.inf, origin)

    def counts(self, weights: FloatArray | None = None) -> FloatArray:
        """Weighted event count per cell as a (ny, nx) array (row 0 = south)."""
        flat = np.bincount(self.cell, weights=weights, minlength=self.grid.n_cells)
        return flat.reshape(self.grid.ny, self.grid.nx).astype(float)

    @classmethod
    def from_events(cls, events: Events, *, cell: float = 150.0) -> History:
        x, y, crs = project_utm(events.lon, events.lat)
        grid = Grid.covering(x, y, crs=crs, cell=cell)
        t = to_days(events.time)
        order = np.argsort(t, kind="stable")
        return cls(t[order], x[order], y[order], grid.index(x, y)[order], grid)
