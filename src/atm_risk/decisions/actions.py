"""The recommended action per machine, with the reason in words.

In order of urgency (the first that applies wins):

``temporary_shutdown``
    a physical attack happened within ``shutdown_radius_km`` (widened by the attack's
    location uncertainty) in the last ``shutdown_days``: a gang may be active nearby and
    near-repeat risk is at its peak. The reason names the attack.
``night_closure``
    the machine is open at night, its yearly attack probability is at least
    ``night_closure_min_p_year`` (attacks happen mostly 02:00-05:00) and few withdrawals are
    made at night (at most ``night_withdrawal_max_share``, or unknown, which the reason says).
``harden``
    the best measure not yet installed averts more expected loss a year than it costs a
    year (cost / lifetime).
``monitor``
    none of the above.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from atm_risk.decisions.loss import DAYS_PER_YEAR, attacks_expected, yearly_probability
from atm_risk.decisions.measures import measure_options
from atm_risk.decisions.settings import DecisionSettings

UNCERTAINTY_SIGMAS = 2.0  # an attack known to sigma metres may lie 2 sigma further away


class Action(enum.StrEnum):
    TEMPORARY_SHUTDOWN = "temporary_shutdown"
    NIGHT_CLOSURE = "night_closure"
    HARDEN = "harden"
    MONITOR = "monitor"


class Band(enum.StrEnum):
    HIGH = "high"
    ELEVATED = "elevated"
    LOW = "low"


@dataclass(frozen=True)
class RecentAttack:
    """A physical attack with coordinates, projected, for the shutdown rule."""

    incident_pk: int
    label: str  # "feed/incident_id"
    occurred_at: datetime
    when_text: str  # local time as reported
    place: str
    method: str
    x: float
    y: float
    sigma_m: float


def euro(value: float) -> str:
    return f"EUR {value:,.0f}"


def _age_text(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    if hours < 48:
        return f"{hours:.0f} h ago"
    return f"{hours / 24:.0f} days ago"


def risk_bands(p_year: np.ndarray, settings: DecisionSettings) -> np.ndarray:
    return np.where(
        p_year >= settings.high_band_p_year,
        str(Band.HIGH),
        np.where(p_year >= settings.elevated_band_p_year, str(Band.ELEVATED), str(Band.LOW)),
    )


def recommend(
    machines: pd.DataFrame,
    probability: pd.Series,
    attacks: list[RecentAttack],
    *,
    as_of: datetime,
    horizon_days: float,
    settings: DecisionSettings,
) -> pd.DataFrame:
    """Band, expected loss and action with reasons for every machine.

    ``machines`` (indexed by atm_pk) has ``x, y`` (metric CRS), ``site_type``,
    ``hardening``, ``night_closure``, ``night_withdrawal_share``, ``cash_eur``,
    ``damage_eur``, ``loss_eur``; ``probability`` is P(attack within the horizon).
    """
    p = probability.reindex(machines.index).fillna(0.0).to_numpy(float)
    rate_h = attacks_expected(p)
    rate_year = rate_h * DAYS_PER_YEAR / horizon_days
    p_year = yearly_probability(p, horizon_days)
    loss = machines["loss_eur"].to_numpy(float)
    out = pd.DataFrame(
        {
            "probability": p,
            "p_year": p_year,
            "risk_band": risk_bands(p_year, settings),
            "expected_loss_eur": rate_h * loss,
            "expected_loss_year_eur": rate_year * loss,
            "action": str(Action.MONITOR),
        },
        index=machines.index,
    )
    reasons: dict[int, list[dict[str, Any]]] = {}

    # harden: the best offer by net yearly benefit
    options = measure_options(machines, pd.Series(rate_year, index=machines.index), settings)
    best = (
        options.sort_values(["atm_pk", "net_year_eur", "measure"], ascending=[True, False, True])
        .drop_duplicates("atm_pk")
        .set_index("atm_pk")
    )
    worth = best[best["net_year_eur"] > 0]
    out.loc[worth.index, "action"] = str(Action.HARDEN)
    for atm_pk, row in zip(worth.index, worth.to_dict("records"), strict=True):
        reasons[int(atm_pk)] = [
            {
                "action": str(Action.HARDEN),
                "measure": row["measure"],
                "averted_year_eur": round(float(row["averted_year_eur"]), 2),
                "annual_cost_eur": round(float(row["annual_cost_eur"]), 2),
                "text": f"{row['measure']} would avert {euro(row['averted_year_eur'])} of "
                f"expected loss a year for {euro(row['annual_cost_eur'])} a year "
                f"({euro(row['cost_eur'])} once)",
            }
        ]

    # night closure
    open_at_night = machines["night_closure"].astype("boolean").fillna(False).to_numpy() == 0
    share = machines["night_withdrawal_share"].astype(float).to_numpy()
    few = np.isnan(share) | (share <= settings.night_withdrawal_max_share)
    night = open_at_night & (p_year >= settings.night_closure_min_p_year) & few
    for atm_pk, py, sh in zip(machines.index[night], p_year[night], share[night], strict=True):
        usage = (
            "night withdrawals not known: check them before closing"
            if math.isnan(sh)
            else f"{sh:.0%} of withdrawals at night"
        )
        reasons[int(atm_pk)] = [
            {
                "action": str(Action.NIGHT_CLOSURE),
                "p_year": round(float(py), 5),
                "text": f"open at night with a {py:.1%} yearly attack probability (attacks "
                f"happen mostly 02:00-05:00); close 23:00-07:00; {usage}",
            },
            *reasons.get(int(atm_pk), []),
        ]
    out.loc[machines.index[night], "action"] = str(Action.NIGHT_CLOSURE)

    # temporary shutdown: the nearest recent attack within reach
    if attacks:
        until = timedelta(days=settings.shutdown_days)
        recent = [a for a in attacks if as_of - until <= a.occurred_at < as_of]
        if recent:
            _shutdowns(machines, recent, as_of, settings, out, reasons)

    monitor = out.index[out["action"] == str(Action.MONITOR)]
    for atm_pk, el, py in zip(
        monitor,
        out.loc[monitor, "expected_loss_year_eur"],
        out.loc[monitor, "p_year"],
        strict=True,
    ):
        reasons[int(atm_pk)] = [
            {
                "action": str(Action.MONITOR),
                "text": f"{py:.2%} yearly attack probability, {euro(el)} expected loss a "
                "year: below every action threshold",
            }
        ]
    out["action_reasons"] = pd.Series(reasons).reindex(out.index)
    out["best_measure"] = best["measure"].reindex(out.index)
    return out


def _shutdowns(
    machines: pd.DataFrame,
    recent: list[RecentAttack],
    as_of: datetime,
    settings: DecisionSettings,
    out: pd.DataFrame,
    reasons: dict[int, list[dict[str, Any]]],
) -> None:
    radius = settings.shutdown_radius_km * 1000.0
    xy = machines[["x", "y"]].to_numpy(float)
    ok = np.isfinite(xy).all(axis=1)
    tree = cKDTree(xy[ok])
    pks = machines.index.to_numpy()[ok]
    hits: dict[int, tuple[float, RecentAttack]] = {}
    # newest attack first; for each machine keep the nearest
    for attack in sorted(recent, key=lambda a: (a.occurred_at, a.incident_pk), reverse=True):
        reach = radius + UNCERTAINTY_SIGMAS * attack.sigma_m
        idx = tree.query_ball_point([attack.x, attack.y], reach)
        if not idx:
            continue
        d = np.hypot(xy[ok][idx, 0] - attack.x, xy[ok][idx, 1] - attack.y)
        for k, dist in zip(idx, d, strict=True):
            pk = int(pks[k])
            if pk not in hits or dist < hits[pk][0]:
                hits[pk] = (float(dist), attack)
    for pk, (dist, attack) in hits.items():
        end = attack.occurred_at + timedelta(days=settings.shutdown_days)
        where = (
            f"{dist / 1000:.1f} km away"
            if attack.sigma_m == 0
            else f"about {dist / 1000:.0f} km away (place known to ~{attack.sigma_m / 1000:.0f} km)"
        )
        age = _age_text(as_of - attack.occurred_at)
        out.loc[pk, "action"] = str(Action.TEMPORARY_SHUTDOWN)
        reasons[pk] = [
            {
                "action": str(Action.TEMPORARY_SHUTDOWN),
                "incident": attack.label,
                "incident_pk": attack.incident_pk,
                "distance_km": round(dist / 1000, 2),
                "occurred_at": attack.occurred_at.isoformat(),
                "until": end.isoformat(),
                "text": f"{attack.method.replace('_', ' ')} attack {attack.when_text} in "
                f"{attack.place} ({attack.label}), {where}, {age}: a gang may be active "
                f"nearby; shut down until {end:%Y-%m-%d %H:%M} UTC",
            },
            *reasons.get(pk, []),
        ]
