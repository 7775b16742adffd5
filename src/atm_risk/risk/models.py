"""Risk runs and their scores. A run is visible only once it has succeeded."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from atm_risk.db import Base, UTCDateTime, str_enum


class RunStatus(enum.StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class RiskRun(Base):
    __tablename__ = "risk_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    scorer: Mapped[str] = mapped_column(String(64))
    scorer_version: Mapped[str] = mapped_column(String(64))
    as_of: Mapped[datetime] = mapped_column(UTCDateTime())
    horizon_days: Mapped[int] = mapped_column(Integer)
    status: Mapped[RunStatus] = mapped_column(str_enum(RunStatus, "run_status"), index=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    n_scored: Mapped[int] = mapped_column(Integer, default=0)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text)


class RiskScore(Base):
    __tablename__ = "risk_scores"
    __table_args__ = (
        UniqueConstraint("run_id", "atm_pk"),
        Index("ix_risk_scores_run_rank", "run_id", "rank"),
        Index("ix_risk_scores_run_operator_rank", "run_id", "operator_rank"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("risk_runs.id", ondelete="CASCADE"))
    atm_pk: Mapped[int] = mapped_column(ForeignKey("atms.id"), index=True)
    rank: Mapped[int] = mapped_column(Integer)  # 1..n over the run
    # 1..n over the run's machines of one operator (a bank's page is an index range scan)
    operator_rank: Mapped[int] = mapped_column(Integer)
    score: Mapped[float] = mapped_column(Float)
    probability: Mapped[float | None] = mapped_column(Float)
    reasons: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    features: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Decisions (atm_risk.decisions), published in the same transaction as the score.
    risk_band: Mapped[str | None] = mapped_column(String(16))
    expected_loss_eur: Mapped[float | None] = mapped_column(Float)
    action: Mapped[str | None] = mapped_column(String(32), index=True)
    action_reasons: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
