"""The transparent baseline score: incident exposure with distance and time decay.

This is not a fitted model. It proves the flow (ingest -> score -> rank) and gives analysts
a score they can recompute by hand:

    score = (exposure + PRIOR) * site_factor * night_factor * hardening_factor

``exposure`` sums, over every recorded physical attack (explosive or ram raid) that started
before the as-of time, a Gaussian kernel of the distance times a half-life decay of its age.
An incident known only to the municipality counts with a kernel widened by its location
uncertainty, re-normalised so that it carries the same weight as an exact one, spread wider.

The factors are assumptions (documented below), not estimates; the fitted model that replaces
them is judged against baselines in the backtest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd

from atm_risk.atms.models import Atm, SiteType
from atm_risk.features.engine import incident_ages_days
from atm_risk.geo import FloatArray, project
from atm_risk.incidents.models import PHYSICAL_ATTACKS, GeocodePrecision, Incident

SCORER = "exposure_baseline"
SCORER_VERSION = "1"
PRIOR = 0.01
REASON_RADIUS_M = 25_000.0
# Assumed multipliers (not fitted). Free-standing and foyer machines are named risk factors
# (DOMAIN.md); night closure and cash protection are what cut Dutch attacks after 2019.
SITE_FACTORS = {SiteType.FREE_STANDING: 1.5, SiteType.FOYER: 1.3, SiteType.WALL: 1.2}
NIGHT_CLOSURE_FACTOR = 0.5
MEASURE_FACTORS = {
    "dye_ink": 0.6,
    "glue": 0.6,
    "gas_neutraliser": 0.7,
    "reinforced_safe": 0.7,
    "bollards": 0.85,
    "relocated_indoors": 0.6,
}
_CHUNK = 2048


@dataclass(frozen=True)
class BaselineParams:
    spatial_bandwidth_m: float
    half_life_days: float
    location_uncertainty_m: dict[str, float]
    metric_crs: str


@dataclass(frozen=True)
class Reason:
    factor: str
    effect: float
    text: str

    def as_dict(self) -> dict[str, object]:
        return {"factor": self.factor, "effect": round(self.effect, 6), "text": self.text}


@dataclass(frozen=True)
class BaselineScore:
    atm_pk: int
    score: float
    exposure: float
    reasons: list[Reason]
    features: dict[str, float | int | None]


def score_atms(
    atms: list[Atm], incidents: list[Incident], *, as_of: datetime, params: BaselineParams
) -> list[BaselineScore]:
    """Score every machine as of ``as_of`` using only incidents that started before it."""
    usable = [
        i
        for i in incidents
        if i.method in PHYSICAL_ATTACKS
        and i.occurred_from < as_of
        and i.lat is not None
        and i.lon is not None
        and i.geocode_precision is not GeocodePrecision.NONE
    ]
    ax, ay = project([a.lon for a in atms], [a.lat for a in atms], params.metric_crs)
    ix, iy = project(
        np.array([i.lon for i in usable], dtype=float),
        np.array([i.lat for i in usable], dtype=float),
        params.metric_crs,
    )
    sigma = np.asarray(
        [params.location_uncertainty_m.get(str(i.geocode_precision), 0.0) for i in usable]
    )
    h0 = params.spatial_bandwidth_m
    h = np.sqrt(h0**2 + sigma**2)
    norm = (h0 / h) ** 2 if usable else np.zeros(0)
    ages = incident_ages_days(
        pd.Series([i.occurred_from for i in usable], dtype="datetime64[ns, UTC]"),
        pd.Series([i.occurred_to for i in usable], dtype="datetime64[ns, UTC]"),
        as_of,
    )
    decay = 0.5 ** (ages / params.half_life_days)

    out: list[BaselineScore] = []
    for start in range(0, len(atms), _CHUNK):
        sl = slice(start, start + _CHUNK)
        dx = ax[sl, None] - ix[None, :]
        dy = ay[sl, None] - iy[None, :]
        dist = np.hypot(dx, dy)
        contrib = norm[None, :] * np.exp(-0.5 * (dist / h[None, :]) ** 2) * decay[None, :]
        exposure = contrib.sum(axis=1)
        for k, atm in enumerate(atms[sl]):
            out.append(_explain(atm, float(exposure[k]), dist[k], contrib[k], ages, usable, as_of))
    return out


def _explain(
    atm: Atm,
    exposure: float,
    dist: FloatArray,
    contrib: FloatArray,
    ages: FloatArray,
    incidents: list[Incident],
    as_of: datetime,
) -> BaselineScore:
    reasons: list[Reason] = []
    near = dist <= REASON_RADIUS_M
    n_near = int(near.sum())
    n_near_year = int((near & (ages <= 365)).sum())
    if len(incidents) and exposure > 0:
        top = int(np.argmax(contrib))
        inc = incidents[top]
        # a place name, never coordinates (they could show another bank's machine)
        place = inc.municipality or inc.locality or inc.region or "a place without a name"
        simulated = " [SIMULATED incident]" if inc.simulated else ""
        approx = (
            " (municipality-level location)"
            if inc.geocode_precision is GeocodePrecision.MUNICIPALITY
            else ""
        )
        reasons.append(
            Reason(
                "incident_exposure",
                exposure,
                f"{n_near} recorded attack(s) within {REASON_RADIUS_M / 1000:.0f} km "
                f"({n_near_year} in the last 365 days); strongest: {place}, "
                f"{inc.when_text()}, {dist[top] / 1000:.1f} km away{approx}{simulated}",
            )
        )
    else:
        reasons.append(Reason("incident_exposure", 0.0, "no recorded attack nearby"))

    factor = 1.0
    site = SITE_FACTORS.get(atm.site_type, 1.0)
    if site != 1.0:
        factor *= site
        reasons.append(
            Reason("site_type", site, f"{atm.site_type.value.replace('_', ' ')} site (x{site:g})")
        )
    if atm.night_closure:
        factor *= NIGHT_CLOSURE_FACTOR
        reasons.append(
            Reason(
                "night_closure",
                NIGHT_CLOSURE_FACTOR,
                f"closed at night (x{NIGHT_CLOSURE_FACTOR:g})",
            )
        )
    elif atm.night_closure is False:
        reasons.append(Reason("night_closure", 1.0, "open during the 02:00-05:00 attack window"))
    for measure in atm.hardening or []:
        f = MEASURE_FACTORS.get(measure)
        if f is not None:
            factor *= f
            reasons.append(
                Reason("hardening", f, f"hardened: {measure.replace('_', ' ')} (x{f:g})")
            )
    score = (exposure + PRIOR) * factor
    nearest = float(dist.min()) if len(dist) else None
    features: dict[str, float | int | None] = {
        "incident_exposure": round(exposure, 6),
        "attacks_within_25km": n_near,
        "attacks_within_25km_365d": n_near_year,
        "nearest_attack_m": round(nearest, 1)
        if nearest is not None and math.isfinite(nearest)
        else None,
        "static_factor": round(factor, 6),
    }
    reasons.sort(key=lambda r: r.factor != "incident_exposure")
    return BaselineScore(atm.id, score, exposure, reasons, features)
