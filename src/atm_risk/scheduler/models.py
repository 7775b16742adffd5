"""The run history of the scheduled jobs: one row per (job, scheduled fire time).

The UNIQUE (job, scheduled_for) constraint is the exactly-once guarantee: an execution
inserts its claim row (status ``running``) before it does anything, and a second scheduler
that tries to claim the same fire time gets an IntegrityError and skips it.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from atm_risk.db import Base, UTCDateTime, str_enum


class JobRunStatus(enum.StrEnum):
    RUNNING = "running"  # claimed; the body is executing (or its process died)
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # the body raised (error holds the exception)
    MISSED = "missed"  # the fire time passed beyond its misfire grace time, never started
    SKIPPED_OVERLAP = "skipped_overlap"  # the previous run of the job was still running
    ABANDONED = "abandoned"  # running past its timeout with its process gone


class RunOrigin(enum.StrEnum):
    SCHEDULED = "scheduled"  # a fire time of the job's trigger
    MANUAL = "manual"  # `atm-risk jobs run NAME` (scheduled_for = the time it was asked)


FINAL_BAD = (JobRunStatus.MISSED, JobRunStatus.FAILED, JobRunStatus.ABANDONED)


class JobRun(Base):
    __tablename__ = "job_runs"
    __table_args__ = (UniqueConstraint("job", "scheduled_for"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job: Mapped[str] = mapped_column(String(64))
    # The trigger's fire time (UTC) -- the same on every scheduler, hence the unique key.
    scheduled_for: Mapped[datetime] = mapped_column(UTCDateTime())
    origin: Mapped[RunOrigin] = mapped_column(str_enum(RunOrigin, "job_run_origin"))
    status: Mapped[JobRunStatus] = mapped_column(
        str_enum(JobRunStatus, "job_run_status"), index=True
    )
    # The trigger it was scheduled by (JobDefinition.describe()): gaps are only looked for
    # under the schedule in force, so changing a job's time never reports false misses.
    schedule: Mapped[str | None] = mapped_column(String(200))
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # executions started
    host: Mapped[str | None] = mapped_column(String(200))
    pid: Mapped[int | None] = mapped_column(Integer)
    owner: Mapped[str | None] = mapped_column(String(200))  # the claiming process' token
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    recovered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # re-run once
    error: Mapped[str | None] = mapped_column(Text)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
