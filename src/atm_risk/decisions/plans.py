"""The two plans: which machines to harden within a budget, where to post K units tonight.

Both read one published scoring run (its probabilities and the machines it scored), so the
plans and the ranking always agree. The optimisation itself lives in
:mod:`atm_risk.decisions.budget` (multiple-choice knapsack) and
:mod:`atm_risk.decisions.patrol` (maximal covering location problem).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import shapely
from scipy.spatial import cKDTree
from sklearn.cluster import DBSCAN
from sqlalchemy import select
from sqlalchemy.orm import Session

from atm_risk.areas.service import load_layer
from atm_risk.config import Settings
from atm_risk.decisions.budget import KnapsackSolution, solve_budget
from atm_risk.decisions.loss import attacks_expected
from atm_risk.decisions.measures import measure_options
from atm_risk.decisions.patrol import coverage_matrix, solve_mclp
from atm_risk.decisions.service import machine_frame
from atm_risk.decisions.settings import DecisionSettings
from atm_risk.features import context
from atm_risk.features.store import area_context
from atm_risk.geo import WGS84, unproject
from atm_risk.risk.models import RiskRun, RiskScore, RunStatus
from atm_risk.tenancy.models import Operator

NIGHT_ZONE = ZoneInfo("Europe/Amsterdam")
NIGHT_START = time(22, 0)  # the night D runs 22:00 on D to 06:00 on D + 1 (local)
REGION_LAYERS = ("nl_provinces", "de_states", "nl_municipalities", "de_districts")
MAX_LISTED = 25  # machines and escape routes listed per unit (all are counted)


class PlanError(ValueError):
    """The plan cannot be made as asked (no run, unknown operator or region)."""


def _scores(session: Session, run: RiskRun) -> pd.DataFrame:
    rows = session.execute(
        select(
            RiskScore.atm_pk,
            RiskScore.rank,
            RiskScore.probability,
            RiskScore.action,
            RiskScore.risk_band,
        ).where(RiskScore.run_id == run.id)
    ).all()
    frame = pd.DataFrame(rows, columns=["atm_pk", "rank", "probability", "action", "risk_band"])
    return frame.set_index("atm_pk")


def machines_with_rates(
    session: Session, settings: Settings, run: RiskRun, operator_id: int | None
) -> pd.DataFrame:
    scores = _scores(session, run)
    machines = machine_frame(session, settings, atm_pks=list(scores.index), operator_id=operator_id)
    machines = machines.join(scores, how="inner")
    if machines["probability"].isna().any():
        raise PlanError(
            f"run {run.id} has machines without a probability; re-score with this version"
        )
    rate_h = attacks_expected(machines["probability"].to_numpy(float))
    machines["attacks_per_day"] = rate_h / run.horizon_days
    return machines


def operator_id(session: Session, code: str | None) -> int | None:
    if code is None:
        return None
    op = session.scalar(select(Operator).where(Operator.code == code))
    if op is None:
        op = session.scalar(select(Operator).where(Operator.name == code))
    if op is None:
        raise PlanError(f"no operator {code!r}; see `atm-risk rank` for the operators scored")
    return op.id


# --------------------------------------------------------------------------- hardening


def solve_hardening(
    machines: pd.DataFrame,
    decisions: DecisionSettings,
    budget_eur: float,
    *,
    time_limit_s: float = 5.0,
) -> tuple[float, pd.DataFrame, KnapsackSolution]:
    """Total expected loss a year, the offers, and the chosen offers within the budget."""
    rate_year = machines["attacks_per_day"] * 365.0
    total = float((rate_year * machines["loss_eur"]).sum())
    options = measure_options(machines, rate_year, decisions)
    solution = solve_budget(
        options["atm_pk"].to_numpy(np.int64),
        options["cost_eur"].to_numpy(float),
        options["averted_year_eur"].to_numpy(float),
        budget_eur,
        time_limit_s=time_limit_s,
    )
    return total, options, solution


@dataclass
class HardeningPlan:
    run_id: int
    as_of: datetime
    budget_eur: float
    operator: str | None
    items: pd.DataFrame  # one row per chosen (machine, measure)
    spent_eur: float
    averted_year_eur: float
    expected_loss_year_eur: float  # of all machines in scope, before the plan
    method: str
    optimal: bool
    bound_eur: float | None
    n_machines: int
    n_options: int

    @property
    def share_averted(self) -> float:
        return (
            self.averted_year_eur / self.expected_loss_year_eur
            if self.expected_loss_year_eur
            else 0.0
        )

    def summary(self) -> dict[str, Any]:
        return {
            "plan": "hardening",
            "run_id": self.run_id,
            "as_of": self.as_of.isoformat(),
            "operator": self.operator,
            "budget_eur": self.budget_eur,
            "spent_eur": round(self.spent_eur, 2),
            "machines_hardened": len(self.items),
            "loss_averted_year_eur": round(self.averted_year_eur, 2),
            "expected_loss_year_eur": round(self.expected_loss_year_eur, 2),
            "share_of_expected_loss_averted": round(self.share_averted, 6),
            "paying_back_within_lifetime": int((self.items["net_year_eur"] > 0).sum())
            if len(self.items)
            else 0,
            "solver": self.method,
            "optimal": self.optimal,
            "upper_bound_eur": None if self.bound_eur is None else round(self.bound_eur, 2),
            "machines_considered": self.n_machines,
            "options_considered": self.n_options,
        }


def hardening_plan(
    session: Session,
    settings: Settings,
    run: RiskRun,
    *,
    budget_eur: float,
    operator: str | None = None,
    time_limit_s: float = 5.0,
) -> HardeningPlan:
    """Machines and measures that avert the most expected loss a year within the budget.

    At most one new measure per machine; measures of a group the machine already has are
    not offered. The budget is a one-off spend (installed cost).
    """
    if not math.isfinite(budget_eur) or budget_eur < 0:
        raise PlanError(f"budget must be a non-negative amount in EUR, got {budget_eur}")
    machines = machines_with_rates(session, settings, run, operator_id(session, operator))
    total, options, solution = solve_hardening(
        machines, settings.decisions, budget_eur, time_limit_s=time_limit_s
    )
    chosen = options.iloc[solution.chosen].copy()
    info = machines.loc[
        chosen["atm_pk"], ["operator", "atm_id", "city", "address", "site_type", "rank"]
    ]
    chosen = pd.concat([chosen.reset_index(drop=True), info.reset_index(drop=True)], axis=1)
    chosen["payback_years"] = chosen["cost_eur"] / chosen["averted_year_eur"].where(
        chosen["averted_year_eur"] > 0
    )
    chosen = chosen.sort_values(["averted_year_eur", "atm_pk"], ascending=[False, True])
    return HardeningPlan(
        run_id=run.id,
        as_of=run.as_of,
        budget_eur=budget_eur,
        operator=operator,
        items=chosen.reset_index(drop=True),
        spent_eur=float(solution.cost),
        averted_year_eur=float(solution.value),
        expected_loss_year_eur=total,
        method=solution.method,
        optimal=solution.optimal,
        bound_eur=solution.bound,
        n_machines=len(machines),
        n_options=len(options),
    )


# --------------------------------------------------------------------------- patrol


@dataclass
class Unit:
    position: int
    kind: str  # motorway_access | police_station | risk_cluster
    label: str
    lon: float
    lat: float
    machines: list[dict[str, Any]]  # nearest-unit assignment, highest loss first
    n_machines: int
    expected_loss_eur: float  # tonight, of the machines assigned to this unit
    escape_routes: list[dict[str, Any]]


@dataclass
class PatrolPlan:
    run_id: int
    as_of: datetime
    night: date
    units_asked: int
    minutes: float
    radius_m: float
    region: str | None
    units: list[Unit]
    covered_eur: float
    total_eur: float
    method: str
    optimal: bool
    n_candidates: int
    n_machines: int
    candidates_by_kind: dict[str, int] = field(default_factory=dict)

    @property
    def share_covered(self) -> float:
        return self.covered_eur / self.total_eur if self.total_eur else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "plan": "patrol",
            "run_id": self.run_id,
            "as_of": self.as_of.isoformat(),
            "night": self.night.isoformat(),
            "region": self.region,
            "units": len(self.units),
            "minutes": self.minutes,
            "reach_km": round(self.radius_m / 1000, 2),
            "expected_loss_tonight_eur": round(self.total_eur, 2),
            "covered_eur": round(self.covered_eur, 2),
            "share_of_risk_covered": round(self.share_covered, 6),
            "machines_covered": sum(u.n_machines for u in self.units),
            "machines_in_scope": self.n_machines,
            "candidates": self.candidates_by_kind,
            "solver": self.method,
            "optimal": self.optimal,
        }


def run_for_night(session: Session, night: date | None) -> tuple[RiskRun, date]:
    """The latest published run before the night starts (default: the latest run)."""
    query = select(RiskRun).where(RiskRun.status == RunStatus.SUCCEEDED)
    if night is not None:
        start = datetime.combine(night, NIGHT_START, NIGHT_ZONE)
        query = query.where(RiskRun.as_of <= start)
    run = session.scalar(query.order_by(RiskRun.as_of.desc(), RiskRun.id.desc()).limit(1))
    if run is None:
        when = f" before the night of {night}" if night else ""
        raise PlanError(f"no published scoring run{when}; run `atm-risk score` first")
    if night is None:
        night = run.as_of.astimezone(NIGHT_ZONE).date()
    return run, night


def _region(session: Session, settings: Settings, name: str) -> shapely.Geometry:
    wanted = name.strip().casefold()
    seen: list[str] = []
    for layer in REGION_LAYERS:
        try:
            frame = load_layer(session, layer)
        except LookupError:
            continue
        names = frame["feature_name"].astype(str)
        hit = frame[names.str.casefold() == wanted]
        if len(hit):
            metric = hit.set_crs(WGS84, allow_override=True).to_crs(settings.metric_crs)
            return shapely.union_all(shapely.make_valid(metric.geometry.to_numpy()))
        seen.extend(names.head(20))
    raise PlanError(
        f"no region named {name!r} in {', '.join(REGION_LAYERS)}; for example: "
        + ", ".join(sorted(set(seen))[:12])
    )


def _candidates(
    session: Session,
    settings: Settings,
    machines: pd.DataFrame,
    weight: np.ndarray,
    radius: float,
) -> pd.DataFrame:
    """Waiting positions: motorway access points, police stations, high-risk clusters."""
    ctx = area_context(
        session,
        settings,
        only={
            context.NL_TERRITORY,
            context.DE_TERRITORY,
            context.NL_MUNICIPALITIES,
            context.NL_MOTORWAY,
            context.DE_MOTORWAY,
            context.NL_POLICE,
            context.DE_BW_POLICE,
        },
    )
    frames = []
    for layer in ctx.motorway:
        labels = layer.labels or [None] * len(layer.xy)
        frames.append(
            pd.DataFrame(
                {
                    "kind": "motorway_access",
                    "label": [lab or f"{layer.name} #{k}" for k, lab in enumerate(labels)],
                    "x": layer.xy[:, 0],
                    "y": layer.xy[:, 1],
                }
            )
        )
    for layer in ctx.police:
        names = layer.labels or [None] * len(layer.xy)
        frames.append(
            pd.DataFrame(
                {
                    "kind": "police_station",
                    "label": [
                        f"police station {n}" if n else f"{layer.name} #{k}"
                        for k, n in enumerate(names)
                    ],
                    "x": layer.xy[:, 0],
                    "y": layer.xy[:, 1],
                }
            )
        )
    top = (
        weight >= np.quantile(weight, settings.decisions.patrol_cluster_quantile)
        if len(weight)
        else np.zeros(0, bool)
    )
    top &= weight > 0
    if top.any():
        xy = machines.loc[top, ["x", "y"]].to_numpy(float)
        labels = DBSCAN(eps=radius / 2, min_samples=1).fit_predict(xy)
        w = weight[top]
        for cluster in np.unique(labels):
            m = labels == cluster
            cx, cy = np.average(xy[m], axis=0, weights=w[m])
            frames.append(
                pd.DataFrame(
                    {
                        "kind": ["risk_cluster"],
                        "label": [f"centre of {int(m.sum())} high-risk machine(s)"],
                        "x": [cx],
                        "y": [cy],
                    }
                )
            )
    if not frames:
        return pd.DataFrame(columns=["kind", "label", "x", "y"])
    cands = pd.concat(frames, ignore_index=True)
    cands = cands.drop_duplicates(["x", "y"]).reset_index(drop=True)
    return cands


def patrol_plan(
    session: Session,
    settings: Settings,
    *,
    units: int,
    minutes: float,
    region: str | None = None,
    night: date | None = None,
    time_limit_s: float = 5.0,
) -> PatrolPlan:
    """K waiting positions that cover the most of tonight's expected loss within T minutes.

    Tonight's expected loss of a machine is its attack rate per day (from the run's
    probability over its horizon; attacks happen at night) times its loss per attack. A unit
    covers a machine when the straight-line distance x road factor is driven in T minutes at
    the configured speed.
    """
    if units < 1:
        raise PlanError("units must be at least 1")
    if not (0 < minutes <= 240):
        raise PlanError("minutes must be between 0 and 240")
    dec = settings.decisions
    run, night = run_for_night(session, night)
    machines = machines_with_rates(session, settings, run, None)
    area = _region(session, settings, region) if region else None
    if area is not None:
        inside = shapely.contains_xy(area, machines["x"].to_numpy(), machines["y"].to_numpy())
        machines = machines[inside]
    radius = dec.patrol_radius_m(minutes)
    weight = (machines["attacks_per_day"] * machines["loss_eur"]).to_numpy(float)
    total = float(weight.sum())
    cands = _candidates(session, settings, machines, weight, radius)
    if area is not None and len(cands):
        cands = cands[shapely.contains_xy(area, cands["x"].to_numpy(), cands["y"].to_numpy())]
        cands = cands.reset_index(drop=True)
    motorway = cands[cands["kind"] == "motorway_access"].reset_index(drop=True)
    demand_xy = machines[["x", "y"]].to_numpy(float)
    site_xy = cands[["x", "y"]].to_numpy(float)
    cover = coverage_matrix(demand_xy, site_xy, radius)
    solution = solve_mclp(cover, weight, units, time_limit_s=time_limit_s)
    chosen = solution.sites
    plan_units: list[Unit] = []
    covered_eur = 0.0
    if len(chosen):
        tree = cKDTree(site_xy[chosen])
        dist, nearest = tree.query(demand_xy, k=1) if len(demand_xy) else (np.zeros(0), [])
        within = np.asarray(dist) <= radius
        mw_tree = cKDTree(motorway[["x", "y"]].to_numpy(float)) if len(motorway) else None
        lon, lat = unproject(site_xy[chosen, 0], site_xy[chosen, 1], settings.metric_crs)
        for pos, site in enumerate(chosen):
            mine = np.flatnonzero(within & (np.asarray(nearest) == pos))
            order = mine[np.lexsort((machines.index.to_numpy()[mine], -weight[mine]))]
            listed = [
                {
                    "operator": machines["operator"].iat[i],
                    "atm_id": machines["atm_id"].iat[i],
                    "city": machines["city"].iat[i],
                    "expected_loss_tonight_eur": round(float(weight[i]), 2),
                    "distance_km": round(float(np.asarray(dist)[i]) / 1000, 2),
                }
                for i in order[:MAX_LISTED]
            ]
            routes: list[dict[str, Any]] = []
            if mw_tree is not None:
                idx = mw_tree.query_ball_point(site_xy[site], radius)
                ex = motorway.iloc[idx]
                d = np.hypot(ex["x"] - site_xy[site, 0], ex["y"] - site_xy[site, 1])
                for k in np.argsort(d.to_numpy(), kind="stable")[:MAX_LISTED]:
                    routes.append(
                        {
                            "label": ex["label"].iat[k],
                            "distance_km": round(float(d.iat[k]) / 1000, 2),
                        }
                    )
            unit_eur = float(weight[mine].sum())
            covered_eur += unit_eur
            plan_units.append(
                Unit(
                    position=pos + 1,
                    kind=str(cands["kind"].iat[site]),
                    label=str(cands["label"].iat[site]),
                    lon=float(lon[pos]),
                    lat=float(lat[pos]),
                    machines=listed,
                    n_machines=len(mine),
                    expected_loss_eur=unit_eur,
                    escape_routes=routes,
                )
            )
    return PatrolPlan(
        run_id=run.id,
        as_of=run.as_of,
        night=night,
        units_asked=units,
        minutes=minutes,
        radius_m=radius,
        region=region,
        units=plan_units,
        covered_eur=covered_eur,
        total_eur=total,
        method=solution.method,
        optimal=solution.optimal,
        n_candidates=len(cands),
        n_machines=len(machines),
        candidates_by_kind={str(k): int(v) for k, v in cands["kind"].value_counts().items()},
    )
