"""Scoring runs (published atomically) and reading the latest ranking."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import numpy as np
import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from atm_risk.atms.models import Atm
from atm_risk.atms.service import active_atms
from atm_risk.clock import Clock
from atm_risk.config import Settings
from atm_risk.db import transaction
from atm_risk.decisions.service import decide, finite
from atm_risk.features.store import compute_features
from atm_risk.incidents.service import incidents_before
from atm_risk.risk import baseline
from atm_risk.risk.atm_model import AtmRiskModel, load_model
from atm_risk.risk.explain import top_reasons
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


@dataclass(frozen=True)
class Scored:
    atm_pk: int
    score: float
    probability: float | None
    reasons: list[dict[str, Any]]
    features: dict[str, Any]


class Scorer(Protocol):
    name: str
    version: str
    horizon_days: int

    def params(self) -> dict[str, Any]: ...

    def score(self, session: Session, as_of: datetime) -> list[Scored]: ...


class BaselineScorer:
    """The transparent exposure baseline (not calibrated: probability is None)."""

    name = baseline.SCORER
    version = baseline.SCORER_VERSION
    horizon_days = DEFAULT_HORIZON_DAYS

    def __init__(self, settings: Settings, *, note: str | None = None) -> None:
        self._params = baseline_params(settings)
        self.note = note

    def params(self) -> dict[str, Any]:
        p = self._params
        return {
            "why_not_the_model": self.note,
            "spatial_bandwidth_m": p.spatial_bandwidth_m,
            "half_life_days": p.half_life_days,
            "location_uncertainty_m": p.location_uncertainty_m,
            "metric_crs": p.metric_crs,
        }

    def score(self, session: Session, as_of: datetime) -> list[Scored]:
        scores = baseline.score_atms(
            active_atms(session), incidents_before(session, as_of), as_of=as_of, params=self._params
        )
        return [
            Scored(s.atm_pk, s.score, None, [r.as_dict() for r in s.reasons], s.features)
            for s in scores
        ]


class ModelScorer:
    """The fitted machine model: a calibrated probability and its top factors in words."""

    name = "atm_risk_model"

    def __init__(self, model: AtmRiskModel, card: dict[str, Any], settings: Settings) -> None:
        self.model, self.card, self.settings = model, card, settings
        self.version = str(card.get("data_sha256", ""))[:12]
        self.horizon_days = int(model.horizon_days)

    def params(self) -> dict[str, Any]:
        return {
            "target": self.card.get("target"),
            "trained_at": self.card.get("trained_at"),
            "training_period": self.card.get("training_period"),
            "countries": self.card.get("countries"),
        }

    def score(self, session: Session, as_of: datetime) -> list[Scored]:
        table = compute_features(session, self.settings, as_of=as_of)
        if table.empty:
            return []
        prob = self.model.predict_proba(table)
        contrib = self.model.contributions(table)
        countries = self.card.get("countries")
        out = []
        for k, atm_pk in enumerate(table.index):
            row = table.loc[atm_pk]
            reasons = top_reasons(contrib.loc[atm_pk], row)
            if isinstance(countries, list) and row.get("country") not in countries:
                reasons.append(
                    {
                        "factor": "model_scope",
                        "effect": 0.0,
                        "text": f"outside the model's training area ({', '.join(countries)})",
                    }
                )
            features = {
                c: (None if isinstance(v, float) and math.isnan(v) else v)
                for c, v in row.items()
                if c in self.model.features_
            }
            out.append(Scored(int(atm_pk), float(prob[k]), float(prob[k]), reasons, features))
        return out


def default_scorer(settings: Settings) -> Scorer:
    """The model at ``settings.model_path`` if its card says it was promoted (it beat prior
    counts in its backtest), else the transparent baseline, which records why."""
    path = settings.model_path
    if path is None or not path.is_file():
        return BaselineScorer(settings, note="no model file")
    try:
        model, card = load_model(path)
    except (OSError, RuntimeError, TypeError, ValueError) as exc:
        # A model saved by another scikit-learn version, or a damaged file: keep scoring.
        return BaselineScorer(settings, note=f"model not loaded: {exc}")
    if not card.get("promotion", {}).get("promoted"):
        return BaselineScorer(settings, note=f"{path.name} not promoted (see its model card)")
    return ModelScorer(model, card, settings)


def run_scoring(
    sessions: sessionmaker[Session],
    *,
    settings: Settings,
    clock: Clock,
    as_of: datetime | None = None,
    scorer: Scorer | None = None,
    on_publish: Callable[[Session, RiskRun], object] | None = None,
) -> RiskRun:
    """Score every active machine and publish the run only when all scores are written.

    ``on_publish`` runs inside the publishing transaction (the risk_change alerts and their
    outbox rows commit with the run, or not at all).

    The run row is committed as ``running`` first, so that a crash leaves a trace; scores
    and the ``succeeded`` status are committed together, so that readers (who only see
    succeeded runs) never see a partial ranking. Any error marks the run ``failed``.
    """
    started = clock.now()
    as_of = as_of or started
    scorer = scorer or default_scorer(settings)
    with transaction(sessions) as session:
        run = RiskRun(
            scorer=scorer.name,
            scorer_version=scorer.version,
            as_of=as_of,
            horizon_days=scorer.horizon_days,
            status=RunStatus.RUNNING,
            started_at=started,
            params=scorer.params(),
        )
        session.add(run)
    try:
        with transaction(sessions) as session:
            scores = scorer.score(session, as_of)
            # Highest score first; ties by machine id so that ranks are reproducible.
            scores.sort(key=lambda s: (-s.score, s.atm_pk))
            decisions, probability_method = _decisions(session, settings, scores, as_of, scorer)
            operator_ranks = _operator_ranks(session, [s.atm_pk for s in scores])
            session.add_all(
                RiskScore(
                    run_id=run.id,
                    atm_pk=s.atm_pk,
                    rank=rank,
                    operator_rank=operator_ranks[s.atm_pk],
                    score=s.score,
                    probability=finite(decisions.at[s.atm_pk, "probability"]),
                    reasons=s.reasons,
                    features=s.features,
                    risk_band=str(decisions.at[s.atm_pk, "risk_band"]),
                    expected_loss_eur=finite(decisions.at[s.atm_pk, "expected_loss_eur"]),
                    action=str(decisions.at[s.atm_pk, "action"]),
                    action_reasons=decisions.at[s.atm_pk, "action_reasons"],
                )
                for rank, s in enumerate(scores, start=1)
            )
            db_run = session.get_one(RiskRun, run.id)
            db_run.status = RunStatus.SUCCEEDED
            db_run.n_scored = len(scores)
            db_run.finished_at = clock.now()
            db_run.params = {**db_run.params, "probability_method": probability_method}
            if on_publish is not None:
                session.flush()
                on_publish(session, db_run)
        run.status, run.n_scored = RunStatus.SUCCEEDED, len(scores)
        return run
    except BaseException as exc:
        with transaction(sessions) as session:
            db_run = session.get_one(RiskRun, run.id)
            db_run.status = RunStatus.FAILED
            db_run.error = f"{type(exc).__name__}: {exc}"[:4000]
            db_run.finished_at = clock.now()
        raise


def _operator_ranks(session: Session, ranked: list[int]) -> dict[int, int]:
    """Rank within the machine's operator, for machine ids in ranking order."""
    operator: dict[int, int] = dict(session.execute(select(Atm.id, Atm.operator_id)).all())
    seen: Counter[int] = Counter()
    out = {}
    for pk in ranked:
        seen[operator[pk]] += 1
        out[pk] = seen[operator[pk]]
    return out


def _decisions(
    session: Session, settings: Settings, scores: list[Scored], as_of: datetime, scorer: Scorer
) -> tuple[pd.DataFrame, str]:
    frame = pd.DataFrame(
        {
            "score": [s.score for s in scores],
            "probability": [np.nan if s.probability is None else s.probability for s in scores],
        },
        index=pd.Index([s.atm_pk for s in scores], name="atm_pk"),
    )
    return decide(session, settings, scores=frame, as_of=as_of, horizon_days=scorer.horizon_days)


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
    operator: str  # display name
    atm_id: str
    lat: float
    lon: float
    address: str | None
    city: str | None
    site_type: str
    night_closure: bool | None
    reasons: list[dict[str, Any]]
    probability: float | None = None
    operator_code: str = ""  # the tenant code (routing, scoping)
    risk_band: str | None = None
    expected_loss_eur: float | None = None
    action: str | None = None
    action_reasons: list[dict[str, Any]] | None = None

    def reasons_text(self) -> str:
        return "; ".join(str(r["text"]) for r in self.reasons)

    def action_text(self) -> str:
        """Why the action: the reason of the action itself (later ones are alternatives)."""
        return str(self.action_reasons[0]["text"]) if self.action_reasons else ""


def ranking(session: Session, run: RiskRun, *, top: int | None = None) -> list[RankedAtm]:
    query = (
        select(RiskScore, Atm, Operator.name, Operator.code)
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
            operator_code=op_code,
            atm_id=atm.atm_id,
            lat=atm.lat,
            lon=atm.lon,
            address=atm.address,
            city=atm.city,
            site_type=str(atm.site_type),
            night_closure=atm.night_closure,
            reasons=s.reasons,
            probability=s.probability,
            risk_band=s.risk_band,
            expected_loss_eur=s.expected_loss_eur,
            action=s.action,
            action_reasons=s.action_reasons,
        )
        for s, atm, op_name, op_code in session.execute(query)
    ]
