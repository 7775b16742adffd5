"""Training the machine model from the store, with its backtest and model card."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy.orm import Session

from atm_risk.config import Settings
from atm_risk.features.store import area_context, atm_frame, feature_config, incident_frame
from atm_risk.risk.atm_model import (
    AtmRiskModel,
    model_card,
    rolling_backtest,
    save_model,
    training_table,
)


def train_from_store(
    session: Session,
    settings: Settings,
    *,
    now: datetime,
    horizon_days: float = 28.0,
    countries: set[str] | None = None,
    until: datetime | None = None,
    n_test: int = 12,
    output: Path | None = None,
) -> dict[str, Any]:
    """Train on rolling windows up to ``until`` (default: the day of the last incident).

    Windows after the last recorded incident are left out: a file that stops is a gap in
    the data, not evidence that attacks stopped.
    """
    atms = atm_frame(session)
    if countries:
        atms = atms[atms["country"].isin(countries)].reset_index(drop=True)
    incidents = incident_frame(session)
    if atms.empty or incidents.empty:
        raise ValueError("training needs stored machines and incidents")
    first = pd.to_datetime(incidents["occurred_from"], utc=True).min().to_pydatetime()
    last = pd.to_datetime(incidents["occurred_from"], utc=True).max().to_pydatetime()
    until = until or last
    horizon = timedelta(days=horizon_days)
    start = first + timedelta(days=365)  # a year of history before the first window
    n_windows = math.floor((until - start) / horizon)
    if n_windows < 10:
        raise ValueError(
            f"only {n_windows} windows of {horizon_days:g} days between {start} and {until}"
        )
    origins = [
        datetime.combine((start + k * horizon).date(), datetime.min.time(), tzinfo=UTC)
        for k in range(n_windows)
    ]
    config = feature_config(settings)
    table = training_table(
        atms, incidents, area_context(session, settings), origins, horizon, config
    )
    model = AtmRiskModel(horizon_days=horizon_days)
    backtest = rolling_backtest(table, n_test=n_test, model=model)
    model.fit(table)
    card = model_card(
        model, atms=atms, incidents=incidents, table=table, backtest=backtest, trained_at=now
    )
    card["countries"] = sorted(countries) if countries else "all"
    card["promotion"] = promotion(backtest)
    if output is not None:
        save_model(model, card, output)
    return card


def promotion(backtest: dict[str, Any]) -> dict[str, Any]:
    """A model is promoted (used by `atm-risk score`) only when its rolling backtest beats
    prior counts on both ranking (share of attacks in the top 10 %) and probability (Brier
    skill > 0)."""
    methods = backtest["methods"]
    model, prior = methods["model"], methods["prior_counts"]
    ranking_ok = (
        model["share_of_expected_attacks_in_top"]["10"]
        >= prior["share_of_expected_attacks_in_top"]["10"]
    )
    brier_ok = model["brier_skill_vs_prior_counts"] > 0
    return {
        "promoted": bool(ranking_ok and brier_ok),
        "beats_prior_counts_top_10": bool(ranking_ok),
        "brier_skill_vs_prior_counts_positive": bool(brier_ok),
        "rule": "share in top 10 % >= prior counts and Brier skill vs prior counts > 0",
    }
