"""The Knox test finds a planted near-repeat pattern and nothing where there is none."""

from __future__ import annotations

import numpy as np

from atm_risk.risk.knox import knox_test, suggest_bandwidths


def _background(rng: np.random.Generator, n: int) -> tuple[np.ndarray, ...]:
    return rng.uniform(0, 365, n), rng.uniform(0, 20_000, n), rng.uniform(0, 20_000, n)


def test_planted_near_repeats_are_found() -> None:
    rng = np.random.default_rng(4)
    t, x, y = _background(rng, 300)
    # Each of 60 events gets a follower within 100 m and 3 days.
    k = 60
    t = np.r_[t, t[:k] + rng.uniform(0, 3, k)]
    x = np.r_[x, x[:k] + rng.uniform(-70, 70, k)]
    y = np.r_[y, y[:k] + rng.uniform(-70, 70, k)]
    cells = knox_test(
        t, x, y, distance_bands=(0, 200, 1000), lag_bands=(0, 7, 56), n_permutations=99
    )
    near = next(c for c in cells if c.distance_m == (0, 200) and c.lag_days == (0, 7))
    assert near.observed >= k
    assert near.ratio > 3
    assert near.p_value <= 0.02
    assert suggest_bandwidths(cells) == (200, 7)


def test_no_interaction_gives_no_bandwidth() -> None:
    rng = np.random.default_rng(5)
    t, x, y = _background(rng, 400)
    cells = knox_test(
        t, x, y, distance_bands=(0, 500, 2000), lag_bands=(0, 14, 60), n_permutations=99
    )
    assert all(c.p_value > 0.01 for c in cells)
    assert sum(c.observed for c in cells) > 0
