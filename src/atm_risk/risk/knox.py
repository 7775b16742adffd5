"""The Knox test for space-time clustering (near-repeat), with Monte Carlo p-values.

For every pair of events, count the pairs that are close in space (distance in a band) and
in time (lag in a band); compare with the same counts after randomly permuting the event
times (which keeps the spatial and the temporal pattern, and breaks their interaction).
A ratio observed / expected well above 1 with a small p-value marks a near-repeat band;
the widest such bands are the bandwidths for near-repeat features (Johnson et al. 2007,
"Space-time patterns of risk: a cross national assessment of residential burglary
victimization", J. Quant. Criminol. 23).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.spatial import cKDTree

from atm_risk.risk.grid import FloatArray


@dataclass(frozen=True)
class KnoxCell:
    distance_m: tuple[float, float]
    lag_days: tuple[float, float]
    observed: int
    expected: float
    p_value: float

    @property
    def ratio(self) -> float:
        return self.observed / self.expected if self.expected > 0 else float("nan")

    def as_dict(self) -> dict[str, Any]:
        return {
            "distance_m": list(self.distance_m),
            "lag_days": list(self.lag_days),
            "observed": self.observed,
            "expected": round(self.expected, 3),
            "ratio": round(self.ratio, 3),
            "p_value": self.p_value,
        }


def knox_test(
    t: FloatArray,
    x: FloatArray,
    y: FloatArray,
    *,
    distance_bands: Sequence[float] = (0, 200, 400, 800, 1600),
    lag_bands: Sequence[float] = (0, 7, 14, 28, 56),
    n_permutations: int = 199,
    seed: int = 0,
) -> list[KnoxCell]:
    """Observed and permutation-expected pair counts per (distance band, lag band)."""
    xy = np.column_stack([x, y])
    pairs = cKDTree(xy).query_pairs(r=float(distance_bands[-1]), output_type="ndarray")
    i, j = pairs[:, 0], pairs[:, 1]
    d = np.hypot(x[i] - x[j], y[i] - y[j])
    d_bin = np.digitize(d, distance_bands, right=True) - 1
    d_bin[d == 0] = 0
    n_d, n_t = len(distance_bands) - 1, len(lag_bands) - 1

    def table(times: FloatArray) -> FloatArray:
        lag = np.abs(times[i] - times[j])
        t_bin = np.digitize(lag, lag_bands, right=True) - 1
        t_bin[lag == 0] = 0
        ok = (d_bin >= 0) & (d_bin < n_d) & (t_bin >= 0) & (t_bin < n_t)
        counts = np.bincount(d_bin[ok] * n_t + t_bin[ok], minlength=n_d * n_t)
        return counts.reshape(n_d, n_t).astype(np.float64)

    observed = table(t)
    rng = np.random.default_rng(seed)
    sims = np.stack([table(rng.permutation(t)) for _ in range(n_permutations)])
    expected = sims.mean(axis=0)
    p = (1 + (sims >= observed[None]).sum(axis=0)) / (n_permutations + 1)
    return [
        KnoxCell(
            (float(distance_bands[a]), float(distance_bands[a + 1])),
            (float(lag_bands[b]), float(lag_bands[b + 1])),
            int(observed[a, b]),
            float(expected[a, b]),
            float(p[a, b]),
        )
        for a in range(n_d)
        for b in range(n_t)
    ]


def suggest_bandwidths(
    cells: Sequence[KnoxCell], *, alpha: float = 0.05, min_ratio: float = 1.2
) -> tuple[float, float] | None:
    """The widest distance and lag bands still significantly above chance, if any."""
    hot = [c for c in cells if c.p_value <= alpha and c.ratio >= min_ratio]
    if not hot:
        return None
    return max(c.distance_m[1] for c in hot), max(c.lag_days[1] for c in hot)
