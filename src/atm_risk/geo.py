"""CRS helpers: projection to a metric CRS, UTM zone choice, and CRS checks.

Coordinates are stored as WGS84 lon/lat; every distance is computed after projecting to a
metric CRS (settings.metric_crs, default EPSG:3035).
"""

from __future__ import annotations

import math
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt
from pyproj import CRS, Transformer

WGS84 = "EPSG:4326"
FloatArray = npt.NDArray[np.float64]


class CRSMismatchError(ValueError):
    """Two spatial inputs that must share a CRS do not."""


@lru_cache(maxsize=32)
def _is_projected(crs: str) -> bool:
    return bool(CRS.from_user_input(crs).is_projected)


@lru_cache(maxsize=32)
def _transformer(src: str, dst: str) -> Transformer:
    return Transformer.from_crs(src, dst, always_xy=True)


# pyproj keeps one PROJ transformation per thread and builds it on the thread's first use,
# which costs 50-150 ms (operation search in proj.db). Request threads (the API's pool, the
# senders) come and go, so a few points - an incident's place - are projected on this one
# long-lived thread instead; large arrays (feature tables) are projected where they are,
# unless the caller is on the immediate path (``shared_thread=True``: a radius query's
# candidates, a few thousand points at most).
_FEW = 256
_LOCAL = threading.local()


def _mark_projector() -> None:
    _LOCAL.projector = True


_PROJECTOR = ThreadPoolExecutor(
    1, thread_name_prefix="atm-risk-projection", initializer=_mark_projector
)


def _transform(
    src: str, dst: str, a: npt.ArrayLike, b: npt.ArrayLike, shared_thread: bool = False
) -> tuple[Any, Any]:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.size == 1 and a.ndim == 1:
        # one point (an incident's place, asked for by several steps of one report)
        x, y = _point(src, dst, float(a[0]), float(b[0]))
        return np.array([x]), np.array([y])
    transformer = _transformer(src, dst)
    if (a.size <= _FEW or shared_thread) and not getattr(_LOCAL, "projector", False):
        return _PROJECTOR.submit(transformer.transform, a, b).result()
    return transformer.transform(a, b)


@lru_cache(maxsize=4096)
def _point(src: str, dst: str, a: float, b: float) -> tuple[float, float]:
    transform = _transformer(src, dst).transform
    if getattr(_LOCAL, "projector", False):
        x, y = transform(a, b)
    else:
        x, y = _PROJECTOR.submit(transform, a, b).result()
    return float(x), float(y)


def project(
    lon: npt.ArrayLike,
    lat: npt.ArrayLike,
    crs: str,
    *,
    source_crs: str = WGS84,
    shared_thread: bool = False,
) -> tuple[FloatArray, FloatArray]:
    """Project lon/lat (degrees) to ``crs``; returns x, y arrays in that CRS's units.
    ``shared_thread``: on the long-lived projection thread whatever the size."""
    if not _is_projected(crs):
        raise CRSMismatchError(f"{crs} is not a projected CRS; distances need metres")
    x, y = _transform(source_crs, crs, lon, lat, shared_thread)
    return np.asarray(x, dtype=float), np.asarray(y, dtype=float)


def unproject(
    x: npt.ArrayLike, y: npt.ArrayLike, crs: str, *, shared_thread: bool = False
) -> tuple[FloatArray, FloatArray]:
    """Metric ``crs`` coordinates back to lon/lat degrees (WGS84)."""
    lon, lat = _transform(crs, WGS84, x, y, shared_thread)
    return np.asarray(lon, dtype=float), np.asarray(lat, dtype=float)


def utm_crs_for(lon: float, lat: float) -> str:
    """The UTM zone CRS (WGS84 datum) for a point, e.g. the centre of a data set's bbox."""
    if not (-180 <= lon <= 180 and -84 <= lat <= 84):
        raise ValueError(f"no UTM zone for lon={lon}, lat={lat}")
    zone = min(math.floor((lon + 180) / 6) + 1, 60)
    return f"EPSG:{32600 + zone if lat >= 0 else 32700 + zone}"


def check_same_crs(left: object, right: object, *, what: str) -> None:
    """Raise :class:`CRSMismatchError` unless both CRS are the same (None is refused)."""
    if left is None or right is None:
        raise CRSMismatchError(f"{what}: a side has no CRS (left={left}, right={right})")
    if not CRS.from_user_input(left).equals(CRS.from_user_input(right)):
        raise CRSMismatchError(f"{what}: CRS differ: {left} vs {right}; reproject one side first")
