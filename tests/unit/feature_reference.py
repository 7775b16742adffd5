"""Brute-force reference implementations of the feature engine, for the tests only.

Written independently of ``atm_risk.features``: full distance matrices, double loops, plain
Python datetimes and a numerical integral for the Rice probability. Slow and simple on
purpose; use on a few dozen points at most.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import numpy.typing as npt
from scipy.special import i0e

FloatArray = npt.NDArray[np.float64]

# Restated here on purpose (not imported from the engine), so that a changed constant fails.
PHYSICAL = frozenset({"explosive_gas", "explosive_solid", "explosive_unspecified", "ram_raid"})
URBAN, INTERMEDIATE = 1500.0, 300.0
TREND_PRIOR_PER_DAY = 0.5 / 365.0


def distance_matrix(a: FloatArray, b: FloatArray) -> FloatArray:
    """Euclidean distances, shape (len(a), len(b)), by explicit differences."""
    a = np.asarray(a, dtype=float).reshape(-1, 2)
    b = np.asarray(b, dtype=float).reshape(-1, 2)
    dx = a[:, None, 0] - b[None, :, 0]
    dy = a[:, None, 1] - b[None, :, 1]
    return np.sqrt(dx * dx + dy * dy)


def nearest_distance(query: FloatArray, points: FloatArray) -> FloatArray:
    if len(points) == 0:
        return np.full(len(query), np.inf)
    return distance_matrix(query, points).min(axis=1)


def count_within(query: FloatArray, points: FloatArray, radius: float) -> npt.NDArray[np.int64]:
    return (distance_matrix(query, points) <= radius).sum(axis=1).astype(np.int64)


def count_others_within(xy: FloatArray, radius: float) -> npt.NDArray[np.int64]:
    """For each point, how many *other* points (by index) lie within ``radius``."""
    n = len(xy)
    out = np.zeros(n, dtype=np.int64)
    for i in range(n):
        for j in range(n):
            if i != j and math.dist(xy[i], xy[j]) <= radius:
                out[i] += 1
    return out


def gaussian_exposure(
    query: FloatArray, points: FloatArray, weights: FloatArray, sigma: FloatArray, h: float
) -> FloatArray:
    """sum_j w_j (h^2/h_j^2) exp(-d^2 / (2 h_j^2)), h_j^2 = h^2 + sigma_j^2, every pair."""
    out = np.zeros(len(query))
    for i, q in enumerate(query):
        for j, p in enumerate(points):
            hj2 = h * h + sigma[j] ** 2
            d2 = (q[0] - p[0]) ** 2 + (q[1] - p[1]) ** 2
            out[i] += weights[j] * (h * h / hj2) * math.exp(-d2 / (2 * hj2))
    return out


def within_probability(d: npt.ArrayLike, sigma: float, radius: float) -> FloatArray:
    """P(|X| <= radius) for X ~ N(mu, sigma^2 I) in the plane with |mu| = d.

    sigma == 0: 1 for d <= radius, else 0. Otherwise the integral over r in [0, radius] of the
    Rice density r/s^2 exp(-(r^2 + d^2)/(2 s^2)) I0(r d / s^2), by Simpson's rule on the
    part of [0, radius] where the density is not negligible (|r - d| <= 14 sigma).
    """
    d = np.atleast_1d(np.asarray(d, dtype=float))
    if sigma == 0:
        return (d <= radius).astype(float)
    lo = np.maximum(0.0, d - 14 * sigma)
    hi = np.minimum(radius, d + 14 * sigma)
    out = np.zeros(len(d))
    ok = hi > lo
    if not ok.any():
        return out
    n = 1001  # odd: Simpson
    u = np.linspace(0.0, 1.0, n)
    r = lo[ok, None] + (hi[ok] - lo[ok])[:, None] * u[None, :]
    dd = d[ok, None]
    s2 = sigma * sigma
    # exp(-(r^2+d^2)/(2s^2)) I0(z) == exp(-(r-d)^2/(2s^2)) i0e(z), z = r d / s^2
    density = r / s2 * np.exp(-((r - dd) ** 2) / (2 * s2)) * i0e(r * dd / s2)
    simpson = np.ones(n)
    simpson[1:-1:2] = 4.0
    simpson[2:-1:2] = 2.0
    step = (hi[ok] - lo[ok]) / (n - 1)
    out[ok] = step / 3.0 * (density * simpson).sum(axis=1)
    return out


def group_min(index: Iterable[int], values: Iterable[float], n: int) -> FloatArray:
    best: dict[int, float] = {}
    for i, v in zip(index, values, strict=True):
        best[i] = min(best.get(i, math.inf), v)
    return np.array([best.get(i, math.inf) for i in range(n)])


def point_segment_distance(p: Sequence[float], a: Sequence[float], b: Sequence[float]) -> float:
    ax, ay = a
    bx, by = b
    px, py = p
    vx, vy = bx - ax, by - ay
    length2 = vx * vx + vy * vy
    t = 0.0 if length2 == 0 else max(0.0, min(1.0, ((px - ax) * vx + (py - ay) * vy) / length2))
    return math.hypot(px - (ax + t * vx), py - (ay + t * vy))


def point_polyline_distance(p: Sequence[float], vertices: Sequence[Sequence[float]]) -> float:
    return min(
        point_segment_distance(p, vertices[k], vertices[k + 1]) for k in range(len(vertices) - 1)
    )


def urban_rural(density: float) -> str | None:
    if math.isnan(density):
        return None
    if density >= URBAN:
        return "urban"
    return "intermediate" if density >= INTERMEDIATE else "rural"


# --- dynamic features ----------------------------------------------------------------------


@dataclass(frozen=True)
class RefIncident:
    x: float
    y: float
    occurred_from: datetime
    occurred_to: datetime
    precision: str
    method: str
    atm_pk: float  # NaN when not linked


def age_days(occurred_from: datetime, occurred_to: datetime, as_of: datetime) -> float:
    """Age at ``as_of`` of the middle of [occurred_from, min(occurred_to, as_of)]."""
    end = min(occurred_to, as_of)
    middle = occurred_from + (end - occurred_from) / 2
    return max((as_of - middle).total_seconds() / 86_400.0, 0.0)


def usable(incidents: Sequence[RefIncident], as_of: datetime) -> list[RefIncident]:
    return [
        inc
        for inc in incidents
        if inc.occurred_from < as_of
        and inc.method in PHYSICAL
        and inc.precision != "none"
        and not (math.isnan(inc.x) or math.isnan(inc.y))
    ]


def dynamic_features(
    atm_xy: FloatArray,
    atm_pks: Sequence[float],
    incidents: Sequence[RefIncident],
    as_of: datetime,
    *,
    uncertainty: Mapping[str, float],
    bandwidths: Sequence[tuple[float, float]],
    count_windows: Sequence[tuple[float, float]],
    exposure_name: object,
    count_name: object,
) -> dict[str, FloatArray]:
    """Every dynamic feature column by brute force, keyed by the engine's column names."""
    used = usable(incidents, as_of)
    n = len(atm_xy)
    ages = [age_days(i.occurred_from, i.occurred_to, as_of) for i in used]
    sigmas = [float(uncertainty[i.precision]) for i in used]
    dist = distance_matrix(atm_xy, np.array([[i.x, i.y] for i in used], dtype=float))
    out: dict[str, FloatArray] = {}

    def prob(radius: float) -> FloatArray:  # shape (n, len(used))
        p = np.zeros((n, len(used)))
        for j, s in enumerate(sigmas):
            p[:, j] = within_probability(dist[:, j], s, radius)
        return p

    for h, days in bandwidths:
        col = np.zeros(n)
        for a in range(n):
            for j in range(len(used)):
                hj2 = h * h + sigmas[j] ** 2
                weight = math.exp(-ages[j] / days)
                col[a] += weight * h * h / hj2 * math.exp(-(dist[a, j] ** 2) / (2 * hj2))
        out[exposure_name(h, days)] = col  # type: ignore[operator]

    for radius, days in count_windows:
        p = prob(radius)
        recent = np.array([age < days for age in ages], dtype=bool)
        out[count_name(radius, days)] = p[:, recent].sum(axis=1)  # type: ignore[operator]

    p5 = prob(5_000.0)
    since = np.full(n, np.nan)
    for a in range(n):
        candidates = [ages[j] for j in range(len(used)) if p5[a, j] >= 0.5]
        if candidates:
            since[a] = min(candidates)
    out["days_since_last_attack_within_5km"] = since

    p50 = prob(50_000.0)
    trend = np.zeros(n)
    for a in range(n):
        last = sum(p50[a, j] for j in range(len(used)) if ages[j] < 90)
        before = sum(p50[a, j] for j in range(len(used)) if 90 <= ages[j] < 365)
        trend[a] = math.log(last / 90 + TREND_PRIOR_PER_DAY) - math.log(
            before / 275 + TREND_PRIOR_PER_DAY
        )
    out["regional_trend_50km_log_ratio"] = trend

    own = np.full(n, np.nan)
    for a, pk in enumerate(atm_pks):
        linked = [ages[j] for j, inc in enumerate(used) if inc.atm_pk == pk]
        if linked:
            own[a] = min(linked)
    out["days_since_last_attack_on_atm"] = own
    return out


def within_5km_probabilities(
    atm_xy: FloatArray, incidents: Sequence[RefIncident], uncertainty: Mapping[str, float]
) -> FloatArray:
    """P(within 5 km) for every (machine, incident) pair of ``incidents`` (all of them)."""
    dist = distance_matrix(atm_xy, np.array([[i.x, i.y] for i in incidents], dtype=float))
    p = np.zeros(dist.shape)
    for j, inc in enumerate(incidents):
        p[:, j] = within_probability(dist[:, j], float(uncertainty[inc.precision]), 5_000.0)
    return p
