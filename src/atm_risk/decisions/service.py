"""Decisions from the store: the machine table they need, recent attacks, and the decision
step of a scoring run (published in the same transaction as the scores)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from atm_risk.atms.models import Atm, AtmStatus
from atm_risk.config import Settings
from atm_risk.decisions.actions import RecentAttack, recommend
from atm_risk.decisions.loss import BASE_RATE_SCALED, MODEL, base_rate_probability, loss_per_attack
from atm_risk.geo import project
from atm_risk.incidents.models import PHYSICAL_ATTACKS, GeocodePrecision, Incident
from atm_risk.tenancy.models import Operator


def machine_frame(
    session: Session,
    settings: Settings,
    *,
    atm_pks: Sequence[int] | None = None,
    operator_id: int | None = None,
) -> pd.DataFrame:
    """Active machines (indexed by atm_pk) with what decisions need, incl. metric x/y and
    the loss per attack resolved from machine, operator and settings."""
    query = (
        select(
            Atm.id.label("atm_pk"),
            Atm.atm_id,
            Atm.operator_id,
            Operator.code.label("operator"),
            Atm.lon,
            Atm.lat,
            Atm.country,
            Atm.city,
            Atm.address,
            Atm.site_type,
            Atm.hardening,
            Atm.night_closure,
            Atm.night_withdrawal_share,
            Atm.residential_building,
            Atm.cash_at_risk_eur,
            Atm.property_damage_eur,
            Operator.cash_at_risk_eur.label("operator_cash_at_risk_eur"),
            Operator.property_damage_eur.label("operator_property_damage_eur"),
        )
        .join(Operator, Atm.operator_id == Operator.id)
        .where(Atm.status == AtmStatus.ACTIVE)
        .order_by(Atm.id)
    )
    if operator_id is not None:
        query = query.where(Atm.operator_id == operator_id)
    rows = session.execute(query).mappings().all()
    frame = pd.DataFrame([dict(r) for r in rows])
    if frame.empty:
        frame = pd.DataFrame(columns=[c.name for c in query.selected_columns])
    frame = frame.set_index("atm_pk")
    if atm_pks is not None:
        frame = frame.loc[frame.index.intersection(pd.Index(list(atm_pks)))]
    frame["site_type"] = frame["site_type"].astype(str)
    frame["hardening"] = [list(h or []) for h in frame["hardening"]]
    x, y = project(frame["lon"].to_numpy(float), frame["lat"].to_numpy(float), settings.metric_crs)
    frame["x"], frame["y"] = x, y
    return frame.join(loss_per_attack(frame, settings.decisions))


def _place(incident: Incident) -> str:
    parts = [incident.locality, incident.municipality]
    place = ", ".join(dict.fromkeys(p for p in parts if p)) or incident.region or ""
    return place or (incident.country or "unknown place")


def recent_attacks(
    session: Session, settings: Settings, *, as_of: datetime, days: float | None = None
) -> list[RecentAttack]:
    """Physical attacks with coordinates that started in the ``days`` before ``as_of``."""
    days = settings.decisions.shutdown_days if days is None else days
    rows = list(
        session.scalars(
            select(Incident)
            .where(
                Incident.occurred_from >= as_of - timedelta(days=days),
                Incident.occurred_from < as_of,
                Incident.method.in_([str(m) for m in PHYSICAL_ATTACKS]),
                Incident.geocode_precision != GeocodePrecision.NONE,
                Incident.lon.is_not(None),
            )
            .order_by(Incident.occurred_from, Incident.id)
        )
    )
    if not rows:
        return []
    lon = np.array([r.lon for r in rows], dtype=float)
    lat = np.array([r.lat for r in rows], dtype=float)
    x, y = project(lon, lat, settings.metric_crs)
    sigma = settings.location_uncertainty_m
    return [
        RecentAttack(
            incident_pk=r.id,
            label=f"{r.feed}/{r.incident_id}" + (" [SIMULATED]" if r.simulated else ""),
            occurred_at=r.occurred_from,
            when_text=r.when_text(),
            place=_place(r),
            method=str(r.method),
            x=float(x[k]),
            y=float(y[k]),
            sigma_m=float(sigma.get(str(r.geocode_precision), 0.0)),
        )
        for k, r in enumerate(rows)
    ]


def decide(
    session: Session,
    settings: Settings,
    *,
    scores: pd.DataFrame,
    as_of: datetime,
    horizon_days: float,
) -> tuple[pd.DataFrame, str]:
    """Probability, band, expected loss and action for every scored machine.

    ``scores`` is indexed by atm_pk with ``score`` and ``probability`` (NaN where the scorer
    gives none). Returns the decisions (indexed like ``scores``) and the probability method.
    """
    machines = machine_frame(session, settings, atm_pks=list(scores.index))
    scores = scores.reindex(machines.index)
    probability = scores["probability"].astype(float)
    if len(probability) and probability.notna().all():
        method = MODEL
    else:
        method = BASE_RATE_SCALED
        probability = pd.Series(
            base_rate_probability(
                scores["score"].to_numpy(float),
                machines["country"],
                horizon_days=horizon_days,
                rates=settings.decisions.attack_rate_per_machine_year,
            ),
            index=machines.index,
        )
    attacks = recent_attacks(session, settings, as_of=as_of)
    decisions = recommend(
        machines,
        probability,
        attacks,
        as_of=as_of,
        horizon_days=horizon_days,
        settings=settings.decisions,
    )
    return decisions, method


def finite(value: object) -> float | None:
    """A float for the database, None for missing or non-finite values."""
    if value is None:
        return None
    number = float(value)  # type: ignore[arg-type]
    return number if np.isfinite(number) else None
