"""The benchmark grid of DOMAIN.md: UTM metres, 150 m cells over all events, no mask."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from atm_risk.geo import project, utm_crs_for

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Grid:
    """Square cells; cell index = iy * nx + ix with iy = 0 the southern row."""

    crs: str
    xmin: float
    ymin: float
    cell: float
    nx: int
    ny: int

    @property
    def n_cells(self) -> int:
        return self.nx * self.ny

    @classmethod
    def covering(cls, x: FloatArray, y: FloatArray, *, crs: str, cell: float = 150.0) -> Grid:
        xmin = math.floor(float(x.min()) / cell) * cell
        ymin = math.floor(float(y.min()) / cell) * cell
        nx = math.floor((float(x.max()) - xmin) / cell) + 1
        ny = math.floor((float(y.max()) - ymin) / cell) + 1
        return cls(crs=crs, xmin=xmin, ymin=ymin, cell=cell, nx=nx, ny=ny)

    def ix_iy(self, x: FloatArray, y: FloatArray) -> tuple[IntArray, IntArray]:
        ix = np.floor((x - self.xmin) / self.cell).astype(np.int64)
        iy = np.floor((y - self.ymin) / self.cell).astype(np.int64)
        if (ix < 0).any() or (iy < 0).any() or (ix >= self.nx).any() or (iy >= self.ny).any():
            raise ValueError("points outside the grid")
        return ix, iy

    def index(self, x: FloatArray, y: FloatArray) -> IntArray:
        ix, iy = self.ix_iy(x, y)
        return iy * self.nx + ix

    def centres(self) -> tuple[FloatArray, FloatArray]:
        iy, ix = np.divmod(np.arange(self.n_cells), self.nx)
        return self.xmin + (ix + 0.5) * self.cell, self.ymin + (iy + 0.5) * self.cell


def project_utm(lon: FloatArray, lat: FloatArray) -> tuple[FloatArray, FloatArray, str]:
    """Project to the UTM zone of the centre of the data's bounding box."""
    centre_lon = (float(lon.min()) + float(lon.max())) / 2
    centre_lat = (float(lat.min()) + float(lat.max())) / 2
    crs = utm_crs_for(centre_lon, centre_lat)
    x, y = project(lon, lat, crs)
    return x, y, crs
