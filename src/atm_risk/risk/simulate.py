"""A documented generator of SIMULATED attack histories over real machine locations.

For demos and scale tests only: its output is labelled simulated in every row (column
``simulated = true``, ids ``SIM-…``, a note) and must never serve as evidence of model skill.

The process (all parameters below are assumptions, not estimates):

- **Background**: each machine is attacked at a yearly rate proportional to a terrain
  factor: x0.5 for every ``motorway_halving_m`` metres from the nearest motorway access,
  x1.5 for rural and x1.2 for intermediate areas, x2 within ``border_m`` of the Dutch-German
  border, x1.5 for free-standing and x1.3 for foyer sites, x0.5 with night closure.
- **Gang sprees**: a spree starts at a machine drawn by the same weights, then hops
  ``1 + Poisson(spree_extra_mean)`` times to another machine 5-60 km away (weighted by the
  terrain factor and exp(-distance / 20 km), which favours machines along motorways), an
  exponential number of days later (mean ``hop_days_mean``).
- **Calibration**: the expected total equals ``per_machine_rate`` x machines x years,
  ``spree_share`` of it in sprees. The default rate 0.9 % a year is the German average of
  DOMAIN.md (about 461 attacks on 52,000 machines in 2023).
- **Times**: local night, uniformly 02:00-05:00 (DOMAIN.md), in the machine's zone;
  method 90 % ``explosive_solid`` (Germany 2023), else ``explosive_gas``; outcome
  ``loot`` with probability 0.5.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from atm_risk.geo import project
from atm_risk.incidents.schemas import COUNTRY_ZONES

SIMULATED_NOTE = "SIMULATED by atm-risk simulate; not a real incident; never evidence of skill"


@dataclass(frozen=True)
class SimulationParams:
    start: date
    years: float = 3.0
    per_machine_rate: float = 0.009
    spree_share: float = 0.4
    spree_extra_mean: float = 2.0
    hop_days_mean: float = 2.0
    motorway_halving_m: float = 5_000.0
    border_m: float = 30_000.0
    seed: int = 0
    metric_crs: str = "EPSG:3035"


def terrain_weight(features: pd.DataFrame, params: SimulationParams) -> np.ndarray:
    """The relative yearly attack rate of each machine (see the module docstring)."""
    n = len(features)

    def col(name: str, default: float) -> np.ndarray:
        if name not in features:
            return np.full(n, default)
        return pd.to_numeric(features[name], errors="coerce").fillna(default).to_numpy(float)

    w = 0.5 ** (col("motorway_access_distance_m", 10_000.0) / params.motorway_halving_m)
    urban = features.get("urban_rural_class", pd.Series([None] * n)).astype(str).to_numpy()
    w = w * np.where(urban == "rural", 1.5, np.where(urban == "intermediate", 1.2, 1.0))
    w = w * np.where(col("nl_de_border_distance_m", math.inf) <= params.border_m, 2.0, 1.0)
    site = features.get("site_type", pd.Series(["unknown"] * n)).astype(str).to_numpy()
    w = w * np.where(site == "free_standing", 1.5, np.where(site == "foyer", 1.3, 1.0))
    w = w * np.where(col("night_closure", 0.0) >= 1.0, 0.5, 1.0)
    return np.asarray(w, dtype=float)


def simulate_attacks(machines: pd.DataFrame, params: SimulationParams) -> pd.DataFrame:
    """Simulated incidents in the canonical incident columns, one row per attack.

    ``machines`` needs atm_id, operator, lon, lat and may carry the feature-engine columns
    used by :func:`terrain_weight` and a ``country`` column.
    """
    rng = np.random.default_rng(params.seed)
    n = len(machines)
    weight = terrain_weight(machines, params)
    prob = weight / weight.sum()
    days = params.years * 365.25
    expected_total = params.per_machine_rate * n * params.years
    x, y = project(
        machines["lon"].to_numpy(float), machines["lat"].to_numpy(float), params.metric_crs
    )
    xy = np.column_stack([x, y])
    tree = cKDTree(xy)

    events: list[tuple[float, int, int | None]] = []  # (day offset, machine, spree id)
    n_background = rng.poisson(expected_total * (1 - params.spree_share))
    for machine, day in zip(
        rng.choice(n, size=n_background, p=prob), rng.uniform(0, days, n_background), strict=True
    ):
        events.append((float(day), int(machine), None))

    mean_size = 1 + params.spree_extra_mean
    n_sprees = rng.poisson(expected_total * params.spree_share / mean_size)
    for spree in range(n_sprees):
        day = float(rng.uniform(0, days))
        current = int(rng.choice(n, p=prob))
        for hop in range(1 + rng.poisson(params.spree_extra_mean)):
            if hop:
                near = np.asarray(tree.query_ball_point(xy[current], r=60_000.0), dtype=np.intp)
                d = np.hypot(*(xy[near] - xy[current]).T)
                ok = d >= 5_000.0
                if not ok.any():
                    break
                cand = near[ok]
                w = weight[cand] * np.exp(-d[ok] / 20_000.0)
                current = int(rng.choice(cand, p=w / w.sum()))
                day += float(rng.exponential(params.hop_days_mean))
            if day >= days:
                break
            events.append((day, current, spree))

    events.sort()
    start = datetime.combine(params.start, datetime.min.time())
    rows = []
    countries = machines["country"] if "country" in machines else pd.Series(["NL"] * n)
    for k, (day, machine, spree_id) in enumerate(events, start=1):
        m = machines.iloc[machine]
        country = countries.iloc[machine]
        country = country if isinstance(country, str) and country else "NL"
        zone = ZoneInfo(COUNTRY_ZONES.get(country, "Europe/Amsterdam"))
        night = (start + timedelta(days=math.floor(day))).date()
        local = datetime.combine(night, datetime.min.time(), tzinfo=zone) + timedelta(
            hours=2 + 3 * float(rng.random())
        )
        rows.append(
            {
                "incident_id": f"SIM-{k:06d}",
                "occurred_at": local.astimezone(UTC).isoformat(timespec="minutes"),
                "lat": round(float(m["lat"]), 6),
                "lon": round(float(m["lon"]), 6),
                "geocode_precision": "exact",
                "method": "explosive_solid" if rng.random() < 0.9 else "explosive_gas",
                "outcome": "loot" if rng.random() < 0.5 else "no_loot",
                "atm_id": m["atm_id"],
                "operator": m["operator"],
                "country": country,
                "spree": "" if spree_id is None else f"SPREE-{spree_id:04d}",
                "simulated": "true",
                "notes": SIMULATED_NOTE,
            }
        )
    return pd.DataFrame(
        rows,
        columns=[
            "incident_id",
            "occurred_at",
            "lat",
            "lon",
            "geocode_precision",
            "method",
            "outcome",
            "atm_id",
            "operator",
            "country",
            "spree",
            "simulated",
            "notes",
        ],
    )
