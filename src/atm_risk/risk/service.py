"""Scoring runs (published atomically) and reading the latest ranking."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from atm_risk.atms.models import Atm
from atm_risk.atms.service import active_atms
from atm_risk.clock import Clock
from atm_risk.config import Settings
from atm_risk.db import transaction
from atm_risk.incidents.service import incidents_before
from atm_risk.risk import baseline
from atm_risk.risk.models import RiskRun, RiskScore, RunStatus
from atm_risk.tenancy.models import Operator

DEFAULT_HORIZON_DAYS = 28


def baseline_params(settings: Settings) -> baseline.BaselineParams:
    return baseline.BaselineParams(
        spatial_bandwidth_m=settings.baseline_spatial_bandwidth_m,
        half_life_days=settings.baseline_half_life_days,
        location_uncertainty_m=dict(settings.location_uncertainty_m),
        metric_crs=settings.metric_crs,
    )


def run_scoring(
    sessions: sessionmaker[Session],
    *,
    settings: Settings,
    clock: Clock,
    as_of: datetime | None = None,
) -> RiskRun:
    """Score every active machine and publish the run only when all scores are written.

    The run row is committed as ``running`` first, so that a crash leaves a trace; scores
    and the ``succeeded`` status are committed together, so that readers (who only see
    succeeded runs) never see a partial ranking. Any error marks the run ``failed``.
    """
    started = clock.now()
    as_of = as_of or started
    params = baseline_params(settings)
    with transaction(sessions) as session:
        run = RiskRun(
            scorer=baseline.SCORER,
            scorer_version=baseline.SCORER_VERSION,
            as_of=as_of,
            horizon_days=DEFAULT_HORIZON_DAYS,
            status=RunStatus.RUNNING,
            started_at=started,
            params={
                "spatial_bandwidth_m": params.spatial_bandwidth_m,
                "half_life_days": params.half_life_days,
                "location_uncertainty_m": params.location_uncertainty_m,
                "metric_crs": params.metric_crs,
            },
        )
        session.add(run)
    try:
        with transaction(sessions) as session:
            atms = active_atms(session)
            scores = baseline.score_atms(
                atms, incidents_before(session, as_of), as_of=as_of, params=params
            )
            # Highest score first; ties by machine id so that ranks are reproducible.
            scores.sort(key=lambda s: (-s.score, s.atm_pk))
            session.add_all(
                RiskScore(
                    run_id=run.id,
                    atm_pk=s.atm_pk,
                    rank=rank,
                    score=s.score,
                    probability=None,  # the baseline is not calibrated
                    reasons=[r.as_dict() for r in s.reasons],
                    features=s.features,
                )
                for rank, s in enumerate(scores, start=1)
            )
            db_run = session.get_one(RiskRun, run.id)
            db_run.status = RunStatus.SUCCEEDED
            db_run.n_scored = len(scores)
            db_run.finished_at = clock.now()
        run.status, run.n_scored = RunStatus.SUCCEEDED, len(scores)
        return run
    except BaseException as exc:
        with transaction(sessions) as session:
            db_run = session.get_one(RiskRun, run.id)
            db_run.status = RunStatus.FAILED
            db_run.error = f"{type(exc).__name__}: {exc}"[:4000]
            db_run.finished_at = clock.now()
        raise


def latest_run(session: Session) -> RiskRun | None:
    """The most recent published (succeeded) run."""
    return session.scalar(
        select(RiskRun)
        .where(RiskRun.status == RunStatus.SUCCEEDED)
        .order_by(RiskRun.finished_at.desc(), RiskRun.id.desc())
        .limit(1)
    )


@dataclass(frozen=True)
class RankedAtm:
    rank: int
    score: float
    operator: str
    atm_id: str
    lat: float
    lon: float
    address: str | None
    city: str | None
    site_type: str
    night_closure: bool | None
    reasons: list[dict[str, Any]]

    def reasons_text(self) -> str:
        return "; ".join(str(r["text"]) for r in self.reasons)


def ranking(session: Session, run: RiskRun, *, top: int | None = None) -> list[RankedAtm]:
    query = (
        select(RiskScore, Atm, Operator.name)
        .join(Atm, RiskScore.atm_pk == Atm.id)
        .join(Operator, Atm.operator_id == Operator.id)
        .where(RiskScore.run_id == run.id)
        .order_by(RiskScore.rank)
    )
    if top is not None:
        query = query.limit(top)
    return [
        RankedAtm(
            rank=s.rank,
            score=s.score,
            operator=op_name,
            atm_id=atm.atm_id,
            lat=atm.lat,
            lon=atm.lon,
            address=atm.address,
            city=atm.city,
            site_type=str(atm.site_type),
            night_closure=atm.night_closure,
            reasons=s.reasons,
        )
        for s, atm, op_name in session.execute(query)
    ]
