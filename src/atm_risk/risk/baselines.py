"""The simple methods crime analysts already use, each a scikit-learn style estimator.

``fit(history, origin=...)`` learns from events strictly before ``origin`` and returns
``self``; ``predict(horizon_days)`` gives a risk per grid cell for
[origin, origin + horizon). Parameters are set in ``__init__`` only; fitted attributes end
in ``_``; inputs are never modified.
"""

from __future__ import annotations

import math
from typing import Self

import numpy as np
from scipy import ndimage
from sklearn.base import BaseEstimator

from atm_risk.risk.grid import FloatArray
from atm_risk.risk.history import History


class GridForecaster(BaseEstimator):  # type: ignore[misc]
    kind = "baseline"
    risk_: FloatArray

    def fit(self, history: History, *, origin: float) -> Self:
        raise NotImplementedError

    def predict(self, horizon_days: float = 7.0) -> FloatArray:
        return self.risk_


def smooth(counts: FloatArray, sigma_cells: float) -> FloatArray:
    """Gaussian smoothing of a cell grid; zero outside the grid."""
    if sigma_cells <= 0:
        return counts
    return np.asarray(
        ndimage.gaussian_filter(counts, sigma=sigma_cells, mode="constant", truncate=4.0)
    )


class PriorCounts(GridForecaster):
    """Events per cell so far, optionally weighted by exp(-age / decay_days).

    The 'naive' predictor of open_cp; independent re-tests find it hard to beat.
    """

    def __init__(self, decay_days: float | None = None) -> None:
        self.decay_days = decay_days

    def fit(self, history: History, *, origin: float) -> Self:
        past = history.before(origin)
        weights = None if self.decay_days is None else np.exp(-(origin - past.t) / self.decay_days)
        self.risk_ = past.counts(weights).ravel()
        return self


class RetrospectiveHotspot(GridForecaster):
    """Kernel density of the events in the last ``window_days`` (Gaussian, ``bandwidth_m``)."""

    def __init__(self, bandwidth_m: float = 300.0, window_days: float = 365.0) -> None:
        self.bandwidth_m = bandwidth_m
        self.window_days = window_days

    def fit(self, history: History, *, origin: float) -> Self:
        past = history.window(origin - self.window_days, origin)
        self.risk_ = smooth(past.counts(), self.bandwidth_m / history.grid.cell).ravel()
        return self


class ProspectiveHotspot(GridForecaster):
    """Bowers, Johnson & Pease (2004), "Prospective hot-spotting", Brit. J. Criminol. 44(5).

    Each event of the last ``window_days`` adds 1/(1 + d) * 1/(1 + w) to every cell whose
    centre lies within ``bandwidth_m`` of it, d = distance in cell widths, w = whole weeks
    since the event.
    """

    def __init__(self, bandwidth_m: float = 400.0, window_days: float = 56.0) -> None:
        self.bandwidth_m = bandwidth_m
        self.window_days = window_days

    def fit(self, history: History, *, origin: float) -> Self:
        grid = history.grid
        past = history.window(origin - self.window_days, origin)
        risk = np.zeros((grid.ny, grid.nx))
        if len(past):
            reach = math.ceil(self.bandwidth_m / grid.cell) + 1
            off = np.arange(-reach, reach + 1)
            dx, dy = np.meshgrid(off, off)
            ix, iy = grid.ix_iy(past.x, past.y)
            cx = ix[:, None] + dx.ravel()[None, :]
            cy = iy[:, None] + dy.ravel()[None, :]
            centre_x = grid.xmin + (cx + 0.5) * grid.cell
            centre_y = grid.ymin + (cy + 0.5) * grid.cell
            dist = np.hypot(centre_x - past.x[:, None], centre_y - past.y[:, None])
            weeks = np.floor((origin - past.t) / 7.0)[:, None]
            weight = 1.0 / (1.0 + dist / grid.cell) / (1.0 + weeks)
            ok = (
                (dist <= self.bandwidth_m) & (cx >= 0) & (cy >= 0) & (cx < grid.nx) & (cy < grid.ny)
            )
            np.add.at(risk, (cy[ok], cx[ok]), np.broadcast_to(weight, dist.shape)[ok])
        self.risk_ = risk.ravel()
        return self


class GridSEPP(GridForecaster):
    """Grid self-exciting point process (Mohler et al. 2015, JASA 110(512)), fitted by EM.

    In each cell c: lambda_c(t) = mu_c + sum_{t_i < t in c} theta * omega * exp(-omega (t - t_i)),
    with a background rate per cell and one triggering kernel shared by all cells.
    The forecast for [origin, origin + h) is the expected number of events in it.
    """

    def __init__(self, n_iter: int = 50, init_theta: float = 0.3, init_omega: float = 0.1) -> None:
        self.n_iter = n_iter
        self.init_theta = init_theta
        self.init_omega = init_omega

    def fit(self, history: History, *, origin: float) -> Self:
        past = history.before(origin)
        n_cells = history.grid.n_cells
        self.origin_ = origin
        self.t_ = past.t
        self.cell_ = past.cell
        if len(past) == 0:
            self.mu_ = np.zeros(n_cells)
            self.theta_, self.omega_ = 0.0, self.init_omega
            return self
        span = max(origin - float(past.t[0]), 1.0)
        # All (earlier i, later j) pairs within the same cell.
        order = np.lexsort((past.t, past.cell))
        cells, t = past.cell[order], past.t[order]
        starts = np.flatnonzero(np.r_[True, cells[1:] != cells[:-1]])
        sizes = np.diff(np.r_[starts, len(cells)])
        pi, pj = [], []
        for s, n in zip(starts, sizes, strict=True):
            if n > 1:
                a, b = np.triu_indices(n, k=1)
                pi.append(s + a)
                pj.append(s + b)
        i_idx = np.concatenate(pi) if pi else np.zeros(0, dtype=np.int64)
        j_idx = np.concatenate(pj) if pj else np.zeros(0, dtype=np.int64)
        lag = t[j_idx] - t[i_idx]
        theta, omega = self.init_theta, self.init_omega
        mu = np.bincount(cells, minlength=n_cells) / span
        for _ in range(self.n_iter):
            trig = theta * omega * np.exp(-omega * lag)
            lam = mu[cells].copy()
            np.add.at(lam, j_idx, trig)
            p_back = mu[cells] / lam
            p_trig = trig / lam[j_idx]
            mu = np.bincount(cells, weights=p_back, minlength=n_cells) / span
            total_trig = p_trig.sum()
            theta = float(total_trig / len(t))
            omega = (
                float(total_trig / max((p_trig * lag).sum(), 1e-12)) if total_trig > 0 else omega
            )
        self.mu_, self.theta_, self.omega_ = mu, theta, omega
        return self

    def predict(self, horizon_days: float = 7.0) -> FloatArray:
        age0 = self.origin_ - self.t_
        excite = self.theta_ * (
            np.exp(-self.omega_ * age0) - np.exp(-self.omega_ * (age0 + horizon_days))
        )
        return self.mu_ * horizon_days + np.bincount(
            self.cell_, weights=excite, minlength=len(self.mu_)
        )
