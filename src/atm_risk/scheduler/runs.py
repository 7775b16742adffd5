"""The run history: claims (exactly once), outcomes, abandonment and recovery, streaks.

Every function is one short unit of work of its own (``transaction(short=True)``), so that a
claim is committed -- and visible to every other scheduler -- before the job body starts.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from sqlalchemy import CursorResult, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from atm_risk.db import transaction
from atm_risk.scheduler.models import FINAL_BAD, JobRun, JobRunStatus, RunOrigin

MAX_ERROR = 4000


def _proc_start(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot, Linux), "" when the
    platform has no /proc, None when there is no such process."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return ""
        return ""
    try:
        stat = (proc / str(pid) / "stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else ""


@dataclass(frozen=True)
class Owner:
    """The process that claims runs: its host, pid and a token unique to the process
    (pid, the process' start time -- against pid reuse -- and a random part)."""

    host: str
    pid: int
    token: str = field(default="")

    @classmethod
    def current(cls) -> Owner:
        pid = os.getpid()
        start = _proc_start(pid) or ""
        return cls(socket.gethostname(), pid, f"{pid}.{start}.{uuid.uuid4().hex[:12]}")


def owner_alive(host: str | None, pid: int | None, token: str | None) -> bool | None:
    """Is the process that owns a run still alive? None: cannot tell (another host)."""
    if host != socket.gethostname() or pid is None:
        return None
    start = _proc_start(pid)
    if start is None:
        return False
    recorded = (token or "").split(".")
    if start and len(recorded) >= 2 and recorded[1]:
        return recorded[1] == start  # the same pid but another process: the owner is gone
    return True


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:MAX_ERROR]


def _rowcount(result: Any) -> int:
    return int(cast(CursorResult[Any], result).rowcount)


@dataclass(frozen=True)
class Claim:
    """The outcome of a claim: ``run_id`` set when this process owns the run."""

    run_id: int | None
    outcome: str  # claimed | taken (another scheduler owns it) | overlap (recorded skipped)
    detail: str = ""


def _is_running_elsewhere(row: JobRun, now: datetime, timeout_s: float) -> bool:
    alive = owner_alive(row.host, row.pid, row.owner)
    if alive is None:  # another host: alive until its timeout
        return row.started_at is None or now - row.started_at <= timedelta(seconds=timeout_s)
    return alive


def claim(
    sessions: sessionmaker[Session],
    *,
    job: str,
    scheduled_for: datetime,
    now: datetime,
    owner: Owner,
    origin: RunOrigin = RunOrigin.SCHEDULED,
    timeout_s: float = 3600,
    schedule: str | None = None,
) -> Claim:
    """Insert the claim row (status running) of (job, scheduled_for) and commit it.

    An IntegrityError means another scheduler claimed that fire time: nothing is recorded
    and the run is skipped. A live run of the same job (any scheduler, max_instances = 1
    across all of them) turns the claim into a ``skipped_overlap`` record instead."""
    scheduled_for = scheduled_for.astimezone(UTC)
    try:
        with transaction(sessions, short=True) as session:
            row = JobRun(
                job=job,
                scheduled_for=scheduled_for,
                origin=origin,
                status=JobRunStatus.RUNNING,
                schedule=schedule,
                attempts=1,
                host=owner.host,
                pid=owner.pid,
                owner=owner.token,
                recorded_at=now,
                started_at=now,
            )
            session.add(row)
            session.flush()  # the INSERT first: it takes the write lock (SQLite) / the key
            others = session.scalars(
                select(JobRun).where(
                    JobRun.job == job, JobRun.status == JobRunStatus.RUNNING, JobRun.id != row.id
                )
            ).all()
            busy = [o for o in others if _is_running_elsewhere(o, now, timeout_s)]
            if busy:
                b = busy[0]
                detail = (
                    f"run {b.id} of {b.scheduled_for.isoformat()} still running "
                    f"on {b.host} pid {b.pid}"
                )
                row.status = JobRunStatus.SKIPPED_OVERLAP
                row.attempts = 0
                row.started_at = None
                row.finished_at = now
                row.error = detail
                return Claim(None, "overlap", detail)
            return Claim(row.id, "claimed")
    except IntegrityError:
        return Claim(None, "taken", "claimed by another scheduler")


def finish(
    sessions: sessionmaker[Session],
    run_id: int,
    owner: Owner,
    *,
    now: datetime,
    error: BaseException | str | None = None,
    result: dict[str, Any] | None = None,
) -> bool:
    """Record the outcome of a claimed run; False if this process no longer owns it (it
    was marked abandoned and taken over meanwhile)."""
    text = _error_text(error) if isinstance(error, BaseException) else error
    with transaction(sessions, short=True) as session:
        done = session.execute(
            update(JobRun)
            .where(
                JobRun.id == run_id,
                JobRun.owner == owner.token,
                JobRun.status == JobRunStatus.RUNNING,
            )
            .values(
                status=JobRunStatus.FAILED if error is not None else JobRunStatus.SUCCEEDED,
                finished_at=now,
                error=text,
                result=result,
            )
        )
        return _rowcount(done) == 1


def record(
    sessions: sessionmaker[Session],
    *,
    job: str,
    scheduled_for: datetime,
    status: JobRunStatus,
    now: datetime,
    owner: Owner | None = None,
    error: str | None = None,
    schedule: str | None = None,
) -> bool:
    """Record a run that did not execute here (missed, skipped overlap, failed before its
    claim) unless (job, scheduled_for) is recorded already. True if this row was written."""
    try:
        with transaction(sessions, short=True) as session:
            session.add(
                JobRun(
                    job=job,
                    scheduled_for=scheduled_for.astimezone(UTC),
                    origin=RunOrigin.SCHEDULED,
                    status=status,
                    schedule=schedule,
                    attempts=0,
                    host=owner.host if owner else None,
                    pid=owner.pid if owner else None,
                    owner=owner.token if owner else None,
                    recorded_at=now,
                    finished_at=now,
                    error=error[:MAX_ERROR] if error else None,
                )
            )
        return True
    except IntegrityError:
        return False


def fail_unfinished(
    sessions: sessionmaker[Session],
    *,
    job: str,
    scheduled_for: datetime,
    owner: Owner,
    now: datetime,
    error: str,
    schedule: str | None = None,
) -> bool:
    """An error event for a run: mark it failed if this process claimed it and did not
    record its outcome, or record a failed run if it was never claimed."""
    with transaction(sessions, short=True) as session:
        done = session.execute(
            update(JobRun)
            .where(
                JobRun.job == job,
                JobRun.scheduled_for == scheduled_for.astimezone(UTC),
                JobRun.owner == owner.token,
                JobRun.status == JobRunStatus.RUNNING,
            )
            .values(status=JobRunStatus.FAILED, finished_at=now, error=error[:MAX_ERROR])
        )
        if _rowcount(done):
            return True
    return record(
        sessions,
        job=job,
        scheduled_for=scheduled_for,
        status=JobRunStatus.FAILED,
        now=now,
        owner=owner,
        error=error,
        schedule=schedule,
    )


def owns_running(sessions: sessionmaker[Session], job: str, owner: Owner) -> bool:
    """Is ``owner`` executing a run of ``job`` right now?"""
    with sessions() as session:
        found = session.scalar(
            select(JobRun.id)
            .where(
                JobRun.job == job,
                JobRun.status == JobRunStatus.RUNNING,
                JobRun.owner == owner.token,
            )
            .limit(1)
        )
    return found is not None


def abandon_dead(
    session: Session,
    *,
    now: datetime,
    timeouts: dict[str, float],
    default_timeout: float,
    me: Owner | None = None,
    in_flight: Collection[int] = (),
) -> list[JobRun]:
    """Mark ``abandoned`` every running row older than its job's timeout whose owner is gone
    (dead pid on this host; on another host, the timeout alone). Rows of ``me`` (the calling
    process) that it is not executing (not ``in_flight``) count as gone too: their outcome
    could not be recorded (the database was away when the run ended), and nobody else would
    ever finish them. Returns those rows."""
    out = []
    rows = session.scalars(select(JobRun).where(JobRun.status == JobRunStatus.RUNNING)).all()
    for row in rows:
        timeout = timedelta(seconds=timeouts.get(row.job, default_timeout))
        if row.started_at is None or now - row.started_at <= timeout:
            continue
        orphan = me is not None and row.owner == me.token and row.id not in in_flight
        if not orphan and owner_alive(row.host, row.pid, row.owner):
            continue
        why = (
            "its outcome could not be recorded (the database was unreachable when it ended)"
            if orphan
            else "which is gone"
        )
        done = session.execute(
            update(JobRun)
            .where(
                JobRun.id == row.id,
                JobRun.status == JobRunStatus.RUNNING,
                JobRun.owner == row.owner,
            )
            .values(
                status=JobRunStatus.ABANDONED,
                finished_at=now,
                error=f"abandoned: running since {row.started_at.isoformat()} on {row.host} "
                f"pid {row.pid}, {why}",
            )
        )
        if _rowcount(done):
            out.append(row)
    return out


def take_over(sessions: sessionmaker[Session], run_id: int, owner: Owner, *, now: datetime) -> bool:
    """Claim a missed or abandoned run for its one re-run (compare-and-set: at most one
    process wins, and a run is recovered at most once)."""
    with transaction(sessions, short=True) as session:
        done = session.execute(
            update(JobRun)
            .where(
                JobRun.id == run_id,
                JobRun.status.in_([JobRunStatus.ABANDONED, JobRunStatus.MISSED]),
                JobRun.recovered_at.is_(None),
            )
            .values(
                status=JobRunStatus.RUNNING,
                attempts=JobRun.attempts + 1,
                host=owner.host,
                pid=owner.pid,
                owner=owner.token,
                started_at=now,
                finished_at=None,
                recovered_at=now,
            )
        )
        return _rowcount(done) == 1


def recoverable(session: Session, jobs: list[str], *, since: datetime) -> list[JobRun]:
    """Missed or abandoned scheduled runs of ``jobs`` since ``since`` never re-run yet."""
    if not jobs:
        return []
    return list(
        session.scalars(
            select(JobRun)
            .where(
                JobRun.job.in_(jobs),
                JobRun.origin == RunOrigin.SCHEDULED,
                JobRun.status.in_([JobRunStatus.ABANDONED, JobRunStatus.MISSED]),
                JobRun.recovered_at.is_(None),
                JobRun.scheduled_for >= since,
            )
            .order_by(JobRun.scheduled_for)
        )
    )


def bad_streak(session: Session, job: str) -> list[JobRun]:
    """The scheduled runs of ``job`` that were missed, failed or abandoned since its last
    success (oldest first). Rows still running and skipped overlaps are not outcomes."""
    last_ok = session.scalar(
        select(JobRun.scheduled_for)
        .where(
            JobRun.job == job,
            JobRun.origin == RunOrigin.SCHEDULED,
            JobRun.status == JobRunStatus.SUCCEEDED,
        )
        .order_by(JobRun.scheduled_for.desc())
        .limit(1)
    )
    query = select(JobRun).where(
        JobRun.job == job,
        JobRun.origin == RunOrigin.SCHEDULED,
        JobRun.status.in_(FINAL_BAD),
    )
    if last_ok is not None:
        query = query.where(JobRun.scheduled_for > last_ok)
    return list(session.scalars(query.order_by(JobRun.scheduled_for)))


def recorded_times(session: Session, job: str, start: datetime, end: datetime) -> set[datetime]:
    return set(
        session.scalars(
            select(JobRun.scheduled_for).where(
                JobRun.job == job, JobRun.scheduled_for >= start, JobRun.scheduled_for <= end
            )
        )
    )


def first_recorded(
    session: Session, jobs: list[str], *, schedule: str | None = None
) -> datetime | None:
    """The earliest run recorded for any of ``jobs`` (for the heartbeat: since when a
    scheduler has been watching), only under ``schedule`` if given."""
    if not jobs:
        return None
    query = select(JobRun.scheduled_for).where(JobRun.job.in_(jobs))
    if schedule is not None:
        query = query.where(JobRun.schedule == schedule)
    return session.scalar(query.order_by(JobRun.scheduled_for).limit(1))


def prune(session: Session, job: str, before: datetime) -> int:
    """Delete finished history of ``job`` scheduled before ``before``."""
    done = session.execute(
        delete(JobRun).where(
            JobRun.job == job,
            JobRun.scheduled_for < before,
            JobRun.status != JobRunStatus.RUNNING,
        )
    )
    return _rowcount(done)


def history(session: Session, *, job: str | None = None, limit: int = 20) -> list[JobRun]:
    query = select(JobRun).order_by(JobRun.scheduled_for.desc(), JobRun.id.desc()).limit(limit)
    if job is not None:
        query = query.where(JobRun.job == job)
    return list(session.scalars(query))


def last_runs(session: Session, jobs: list[str]) -> dict[str, JobRun]:
    """The latest recorded run (by fire time) of each of ``jobs``."""
    out: dict[str, JobRun] = {}
    for job in jobs:
        row = session.scalar(
            select(JobRun)
            .where(JobRun.job == job)
            .order_by(JobRun.scheduled_for.desc(), JobRun.id.desc())
            .limit(1)
        )
        if row is not None:
            out[job] = row
    return out
