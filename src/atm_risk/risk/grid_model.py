"""The grid model: terrain-like long-run factors plus near-repeat features, learned on past
weeks with gradient boosting under monotonic constraints.

Features of a cell at an origin (only events before it): all-time count; counts decayed with
time constants of 7, 30, 90 and 365 days; the same long-run and medium-run counts smoothed
over 1, 3 and 9 cells (RTM-style spatial context); and the 1-cell smoothed 7-day count
(near-repeat). Every feature enters with a non-decreasing effect (monotonic constraint), so
the model cannot learn that more past crime means less risk.

Training rows come from ``n_train`` pseudo-origins, one week apart before the origin: the
features at each, labelled by whether an event fell in the cell in the following
``horizon`` days. Negative cells are subsampled (weights keep the fit unbiased).
"""

from __future__ import annotations

from typing import Self

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from threadpoolctl import threadpool_limits

from atm_risk.risk.baselines import GridForecaster, smooth
from atm_risk.risk.grid import FloatArray
from atm_risk.risk.history import History

DECAYS = (7.0, 30.0, 90.0, 365.0)
SMOOTHING_CELLS = (1.0, 3.0, 9.0)


_CACHE: dict[tuple[int, int, float], FloatArray] = {}
_CACHE_MAX = 64


def cell_features(history: History, origin: float) -> FloatArray:
    """A (n_cells, n_features) matrix of the features at ``origin`` (float32).

    Memoised per (event history, origin): the backtest asks for the same weekly
    pseudo-origins again and again.
    """
    past = history.before(origin)
    key = (id(past.t.base if past.t.base is not None else past.t), len(past), origin)
    cached = _CACHE.get(key)
    if cached is not None:
        return cached
    if len(_CACHE) >= _CACHE_MAX:
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[key] = _compute_features(past, origin)
    return _CACHE[key]


def _compute_features(past: History, origin: float) -> FloatArray:
    age = origin - past.t
    columns = [past.counts()]
    decayed = {d: past.counts(np.exp(-age / d)) for d in DECAYS}
    columns.extend(decayed.values())
    for base in (columns[0], decayed[365.0], decayed[30.0]):
        columns.extend(smooth(base, s) for s in SMOOTHING_CELLS)
    columns.append(smooth(decayed[7.0], 1.0))
    return np.column_stack([np.log1p(c.ravel()) for c in columns]).astype(np.float32)


class NearRepeatGridModel(GridForecaster):
    kind = "model"

    def __init__(
        self,
        n_train: int = 12,
        horizon_days: float = 7.0,
        negatives_per_positive: float = 20.0,
        max_iter: int = 100,
        learning_rate: float = 0.05,
        max_leaf_nodes: int = 15,
        random_state: int = 0,
    ) -> None:
        self.n_train = n_train
        self.horizon_days = horizon_days
        self.negatives_per_positive = negatives_per_positive
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.max_leaf_nodes = max_leaf_nodes
        self.random_state = random_state

    def _training_set(
        self, history: History, origin: float
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        rng = np.random.default_rng(self.random_state)
        xs, ys, ws = [], [], []
        for k in range(1, self.n_train + 1):
            o = origin - 7.0 * k
            if o - self.horizon_days <= (history.t[0] if len(history) else o):
                break
            label = np.zeros(history.grid.n_cells)
            future = history.window(o, min(o + self.horizon_days, origin))
            label[future.cell] = 1.0
            feats = cell_features(history, o)
            pos = np.flatnonzero(label > 0)
            neg = np.flatnonzero(label == 0)
            n_neg = min(len(neg), int(max(len(pos), 1) * self.negatives_per_positive))
            keep_neg = rng.choice(neg, size=n_neg, replace=False)
            rows = np.r_[pos, keep_neg]
            xs.append(feats[rows])
            ys.append(label[rows])
            ws.append(np.r_[np.ones(len(pos)), np.full(n_neg, len(neg) / max(n_neg, 1))])
        if not xs:
            return np.zeros((0, 0)), np.zeros(0), np.zeros(0)
        return np.vstack(xs), np.concatenate(ys), np.concatenate(ws)

    def fit(self, history: History, *, origin: float) -> Self:
        past = history.before(origin)
        x, y, w = self._training_set(past, origin)
        self.features_ = cell_features(past, origin)
        if len(y) == 0 or y.min() == y.max():
            self.estimator_ = None
            self.risk_ = self.features_[:, 0].copy()  # fall back to prior counts
            return self
        est = HistGradientBoostingClassifier(
            max_iter=self.max_iter,
            learning_rate=self.learning_rate,
            max_leaf_nodes=self.max_leaf_nodes,
            min_samples_leaf=20,
            l2_regularization=1.0,
            monotonic_cst=[1] * x.shape[1],
            random_state=self.random_state,
        )
        # Small problems: one thread is faster than OpenMP threads contending for 2 cores.
        with threadpool_limits(limits=1, user_api="openmp"):
            est.fit(x, y, sample_weight=w)
            self.risk_ = est.predict_proba(self.features_)[:, 1]
        self.estimator_ = est
        return self
