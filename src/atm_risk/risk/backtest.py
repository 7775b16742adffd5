"""The fixed benchmark protocol of DOMAIN.md on timed points, for the model and every baseline.

Origins: 26, weekly at 00:00; the last = (day of the last event) - 7 days. For each origin,
fit on the events strictly before it and predict [origin, origin + 7 days). Hit rate at
k % coverage = events of the week in the top ceil(k/100 * cells) cells / events of the week,
ties broken by ascending cell index; PAI = hit rate / coverage fraction.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.base import clone

from atm_risk.risk import metrics
from atm_risk.risk.baselines import (
    GridForecaster,
    GridSEPP,
    PriorCounts,
    ProspectiveHotspot,
    RetrospectiveHotspot,
)
from atm_risk.risk.events import Events
from atm_risk.risk.grid_model import NearRepeatGridModel
from atm_risk.risk.history import History


def default_methods() -> dict[str, GridForecaster]:
    return {
        "model": NearRepeatGridModel(),
        "prior_counts": PriorCounts(),
        "prior_counts_decay_365d": PriorCounts(decay_days=365.0),
        "retrospective_hotspot": RetrospectiveHotspot(),
        "prospective_hotspot": ProspectiveHotspot(),
        "sepp": GridSEPP(),
    }


def protocol_origins(history: History, n_origins: int = 26, step_days: float = 7.0) -> list[float]:
    last_day = math.floor(float(history.t[-1]))
    last = last_day - 7.0
    return [last - step_days * k for k in range(n_origins - 1, -1, -1)]


@dataclass
class MethodResult:
    name: str
    kind: str
    hits: dict[int, list[int]] = field(default_factory=dict)  # coverage -> per origin
    positive_share: dict[int, list[float]] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class BacktestResult:
    dataset: str
    n_events: int
    n_cells: int
    crs: str
    origins: list[float]
    events_per_origin: list[int]
    methods: dict[str, MethodResult]
    coverages: tuple[int, ...] = metrics.COVERAGES

    def pooled_hit_rate(self, name: str, k: int) -> float:
        total = sum(self.events_per_origin)
        return sum(self.methods[name].hits[k]) / total if total else math.nan

    def per_origin_rates(self, name: str, k: int) -> list[float]:
        return [
            h / n if n else math.nan
            for h, n in zip(self.methods[name].hits[k], self.events_per_origin, strict=True)
        ]

    def best_baseline(self, k: int = 5) -> str:
        baselines = [m for m in self.methods.values() if m.kind == "baseline"]
        return max(baselines, key=lambda m: self.pooled_hit_rate(m.name, k)).name

    def as_json(self) -> dict[str, Any]:
        methods: dict[str, Any] = {}
        for name, m in self.methods.items():
            hit = {str(k): self.pooled_hit_rate(name, k) for k in self.coverages}
            methods[name] = {
                "kind": m.kind,
                "hit_rate": hit,
                "pai": {str(k): hit[str(k)] / (k / 100) for k in self.coverages},
                "per_origin_mean": {
                    str(k): dict(
                        zip(
                            ("mean", "low", "high"),
                            metrics.bootstrap_mean_interval(self.per_origin_rates(name, k)),
                            strict=True,
                        )
                    )
                    for k in self.coverages
                },
                "flagged_with_risk_above_zero": {
                    str(k): float(np.mean(m.positive_share[k])) for k in self.coverages
                },
                "seconds": round(m.seconds, 3),
            }
        comparisons = {}
        models = [m.name for m in self.methods.values() if m.kind == "model"]
        if models and any(m.kind == "baseline" for m in self.methods.values()):
            for k in self.coverages:
                best = self.best_baseline(k)
                for model in models:
                    comparisons[f"{model}_vs_{best}_at_{k}"] = metrics.paired_bootstrap(
                        self.methods[model].hits[k],
                        self.methods[best].hits[k],
                        self.events_per_origin,
                    ) | {"model": model, "baseline": best, "coverage": k}
        return {
            "dataset": self.dataset,
            "protocol": "DOMAIN.md: 150 m UTM grid, 26 weekly origins, 7-day horizon",
            "n_events": self.n_events,
            "n_cells": self.n_cells,
            "crs": self.crs,
            "events_in_test_weeks": int(sum(self.events_per_origin)),
            "methods": methods,
            "comparisons": comparisons,
        }


def run_backtest(
    events: Events,
    *,
    methods: dict[str, GridForecaster] | None = None,
    n_origins: int = 26,
    horizon_days: float = 7.0,
    coverages: Sequence[int] = metrics.COVERAGES,
    progress: Callable[[str], None] | None = None,
) -> BacktestResult:
    history = History.from_events(events)
    methods = methods or default_methods()
    origins = protocol_origins(history, n_origins)
    results = {
        name: MethodResult(
            name=name,
            kind=getattr(est, "kind", "baseline"),
            hits={k: [] for k in coverages},
            positive_share={k: [] for k in coverages},
        )
        for name, est in methods.items()
    }
    per_origin = []
    for n, origin in enumerate(origins, start=1):
        test = history.window(origin, origin + horizon_days)
        per_origin.append(len(test))
        for name, est in methods.items():
            start = time.perf_counter()
            fitted = clone(est).fit(history, origin=origin)
            risk = fitted.predict(horizon_days)
            results[name].seconds += time.perf_counter() - start
            for k in coverages:
                results[name].hits[k].append(metrics.hits(risk, test.cell, k))
                results[name].positive_share[k].append(metrics.share_flagged_positive(risk, k))
        if progress:
            progress(f"origin {n}/{len(origins)}: {len(test)} events")
    return BacktestResult(
        dataset=events.name,
        n_events=len(events),
        n_cells=history.grid.n_cells,
        crs=history.grid.crs,
        origins=origins,
        events_per_origin=per_origin,
        methods=results,
        coverages=tuple(coverages),
    )
