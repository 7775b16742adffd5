"""Baselines and the grid model reproduce known behaviour on data with a planted answer."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone

from atm_risk.risk.baselines import GridSEPP, PriorCounts, ProspectiveHotspot, RetrospectiveHotspot
from atm_risk.risk.grid import Grid
from atm_risk.risk.grid_model import NearRepeatGridModel
from atm_risk.risk.history import History

GRID = Grid(crs="EPSG:32631", xmin=0.0, ymin=0.0, cell=150.0, nx=40, ny=40)


def _history(t: np.ndarray, x: np.ndarray, y: np.ndarray) -> History:
    order = np.argsort(t, kind="stable")
    t, x, y = t[order], x[order], y[order]
    return History(t, x, y, GRID.index(x, y), GRID)


def _planted_hotspot(seed: int = 1) -> tuple[History, int]:
    rng = np.random.default_rng(seed)
    n_noise, n_hot = 300, 120
    hot_x, hot_y = 20 * 150 + 75.0, 10 * 150 + 75.0
    x = np.r_[rng.uniform(0, 6000, n_noise), hot_x + rng.uniform(-60, 60, n_hot)]
    y = np.r_[rng.uniform(0, 6000, n_noise), hot_y + rng.uniform(-60, 60, n_hot)]
    t = rng.uniform(0, 365, n_noise + n_hot)
    hot_cell = int(GRID.index(np.array([hot_x]), np.array([hot_y]))[0])
    return _history(t, x, y), hot_cell


@pytest.mark.parametrize(
    "method",
    [PriorCounts(), PriorCounts(decay_days=90), RetrospectiveHotspot(), GridSEPP()],
)
def test_a_fixed_hotspot_is_ranked_first(method: object) -> None:
    history, hot = _planted_hotspot()
    risk = clone(method).fit(history, origin=366.0).predict(7.0)
    assert int(np.argmax(risk)) == hot


def test_prior_counts_ignores_events_at_or_after_the_origin() -> None:
    history, _ = _planted_hotspot()
    early = PriorCounts().fit(history, origin=100.0).risk_
    assert early.sum() == (history.t < 100.0).sum()


def test_prospective_hotspot_follows_bowers_weights() -> None:
    # One event in the centre of cell (5, 5), 10 days (one whole week) before the origin.
    x, y = np.array([5 * 150 + 75.0]), np.array([5 * 150 + 75.0])
    history = _history(np.array([90.0]), x, y)
    risk = ProspectiveHotspot(bandwidth_m=400, window_days=56).fit(history, origin=100.0).risk_
    grid = risk.reshape(GRID.ny, GRID.nx)
    assert grid[5, 5] == pytest.approx(1.0 / 1.0 / 2.0)  # d = 0 cells, w = 1 week
    assert grid[5, 6] == pytest.approx(1.0 / 2.0 / 2.0)  # d = 1 cell
    assert grid[5, 8] == 0.0  # 450 m > 400 m
    old = ProspectiveHotspot(window_days=5).fit(history, origin=100.0).risk_
    assert old.sum() == 0.0


def _simulate_grid_hawkes(
    mu: float, theta: float, omega: float, horizon: float, cells: list[int], seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Background Poisson events per cell plus their offspring (branching construction)."""
    rng = np.random.default_rng(seed)
    times, where = [], []
    for cell in cells:
        gen = list(rng.uniform(0, horizon, rng.poisson(mu * horizon)))
        while gen:
            t = gen.pop()
            times.append(t)
            where.append(cell)
            for child in t + rng.exponential(1 / omega, rng.poisson(theta)):
                if child < horizon:
                    gen.append(child)
    return np.asarray(times), np.asarray(where)


def test_sepp_recovers_a_planted_self_exciting_process() -> None:
    theta, omega = 0.5, 0.2
    cells = list(range(0, GRID.n_cells, 23))[:60]
    t, cell = _simulate_grid_hawkes(0.02, theta, omega, 1000.0, cells, seed=7)
    iy, ix = np.divmod(cell, GRID.nx)
    history = _history(t, ix * 150 + 75.0, iy * 150 + 75.0)
    fit = GridSEPP(n_iter=200).fit(history, origin=1000.0)
    assert fit.theta_ == pytest.approx(theta, abs=0.1)
    assert fit.omega_ == pytest.approx(omega, rel=0.35)
    assert np.mean(fit.mu_[cells]) == pytest.approx(0.02, rel=0.25)


def test_estimators_follow_scikit_learn_conventions() -> None:
    history, _ = _planted_hotspot()
    before = (history.t.copy(), history.cell.copy())
    model = NearRepeatGridModel(n_train=4, max_iter=20)
    assert clone(model).get_params()["n_train"] == 4
    fitted = model.fit(history, origin=300.0)
    assert fitted is model
    assert hasattr(model, "estimator_")
    assert hasattr(model, "risk_")
    np.testing.assert_array_equal(history.t, before[0])
    np.testing.assert_array_equal(history.cell, before[1])


def test_grid_model_finds_the_planted_hotspot() -> None:
    history, hot = _planted_hotspot()
    risk = NearRepeatGridModel(n_train=6, max_iter=30).fit(history, origin=330.0).predict(7.0)
    assert hot in np.argsort(-risk)[:3]
