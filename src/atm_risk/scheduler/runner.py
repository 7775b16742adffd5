"""Executing runs exactly once, and the watchdog the heartbeat job runs.

:class:`Runner` is the part of a scheduler process that touches the database: it claims a
fire time, runs the registered body, records the outcome; it turns APScheduler's events
(errors, misses, skipped overlaps) into history rows; and its :meth:`Runner.check` marks
abandoned runs, records fire times nobody ran, re-runs what the policy allows and raises
``pipeline_health`` after failures in a row. It is used the same way by the scheduler
service, by ``atm-risk jobs run`` and by the tests (with a frozen clock).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from atm_risk.alerts.models import Alert
from atm_risk.alerts.service import pipeline_health
from atm_risk.clock import Clock
from atm_risk.config import Settings
from atm_risk.db import transaction
from atm_risk.risk.models import RiskRun, RunStatus
from atm_risk.scheduler import runs
from atm_risk.scheduler.definitions import JobDefinition
from atm_risk.scheduler.jobs import REGISTRY, JobContext, JobFunction
from atm_risk.scheduler.models import JobRun, JobRunStatus, RunOrigin
from atm_risk.scheduler.runs import Owner

log = logging.getLogger("atm_risk.scheduler")

DEFAULT_TIMEOUT_S = 3600.0
GAP_LOOKBACK = timedelta(days=8)  # a weekly job's last fire time is within reach
GAP_SLACK = timedelta(seconds=30)  # after the grace time, before a fire time counts as missed
GAP_MAX = 10  # fire times per job checked for gaps per heartbeat
RECOVERY_LOOKBACK = timedelta(days=2)


class UnknownJobError(LookupError):
    """No job definition of that name."""


@dataclass(frozen=True)
class RunOutcome:
    job: str
    scheduled_for: datetime
    status: str  # succeeded | failed | taken | overlap | lost
    run_id: int | None = None
    result: dict[str, Any] | None = None
    error: str | None = None


class Runner:
    """Claims, runs and records the jobs of one process."""

    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        settings: Settings,
        clock: Clock,
        definitions: list[JobDefinition],
        registry: Mapping[str, JobFunction] | None = None,
        owner: Owner | None = None,
        background_recovery: bool = False,
    ) -> None:
        self.sessions, self.settings, self.clock = sessions, settings, clock
        self.definitions = {d.name: d for d in definitions}
        self.registry = dict(REGISTRY if registry is None else registry)
        missing = sorted({d.run for d in definitions} - set(self.registry))
        if missing:
            raise ValueError(f"no job function registered as {', '.join(missing)}")
        self.owner = owner or Owner.current()
        self.background_recovery = background_recovery
        self._threads: list[threading.Thread] = []
        self._in_flight: set[int] = set()  # run ids this process is executing now
        self._in_flight_lock = threading.Lock()

    def definition(self, name: str) -> JobDefinition:
        try:
            return self.definitions[name]
        except KeyError:
            known = ", ".join(sorted(self.definitions)) or "none"
            raise UnknownJobError(f"no job named {name!r} (defined: {known})") from None

    # ------------------------------------------------------------------ one run

    def execute(
        self,
        name: str,
        scheduled_for: datetime,
        *,
        origin: RunOrigin = RunOrigin.SCHEDULED,
        raise_errors: bool = True,
    ) -> RunOutcome:
        """Claim (name, scheduled_for); if this process won it, run the body and record the
        outcome. A fire time claimed elsewhere is skipped without a trace."""
        definition = self.definition(name)
        scheduled_for = scheduled_for.astimezone(UTC)
        claimed = runs.claim(
            self.sessions,
            job=name,
            scheduled_for=scheduled_for,
            now=self.clock.now(),
            owner=self.owner,
            origin=origin,
            timeout_s=definition.timeout,
            schedule=definition.describe(),
        )
        if claimed.run_id is None:
            log.info("%s at %s: %s (%s)", name, scheduled_for, claimed.outcome, claimed.detail)
            return RunOutcome(name, scheduled_for, claimed.outcome, error=claimed.detail or None)
        return self._run_claimed(definition, claimed.run_id, scheduled_for, raise_errors)

    def _run_claimed(
        self, definition: JobDefinition, run_id: int, scheduled_for: datetime, raise_errors: bool
    ) -> RunOutcome:
        func = self.registry[definition.run]
        ctx = JobContext(
            sessions=self.sessions,
            settings=self.settings,
            clock=self.clock,
            job=definition.name,
            scheduled_for=scheduled_for,
            run_id=run_id,
            runner=self,
            args=dict(definition.args),
        )
        log.info("%s at %s: running (run %s)", definition.name, scheduled_for, run_id)
        with self._in_flight_lock:
            self._in_flight.add(run_id)
        try:
            try:
                result = func(ctx)
            except BaseException as exc:
                runs.finish(self.sessions, run_id, self.owner, now=self.clock.now(), error=exc)
                log.warning("%s at %s: failed: %s", definition.name, scheduled_for, exc)
                self.alert_on_streak(definition)
                if raise_errors or not isinstance(exc, Exception):
                    raise
                error = f"{type(exc).__name__}: {exc}"
                return RunOutcome(definition.name, scheduled_for, "failed", run_id, error=error)
            owned = runs.finish(
                self.sessions, run_id, self.owner, now=self.clock.now(), result=result
            )
        finally:
            # if finish() could not write (the database away), the heartbeat abandons the row
            with self._in_flight_lock:
                self._in_flight.discard(run_id)
        status = "succeeded" if owned else "lost"
        if not owned:
            log.warning("%s at %s: finished, but the run was taken over", definition.name, run_id)
        return RunOutcome(definition.name, scheduled_for, status, run_id, result)

    # ------------------------------------------------------------------ events

    def on_event(self, event: Any) -> None:
        """APScheduler listener: errors, misses and skipped overlaps go to the history."""
        name = str(event.job_id)
        if name not in self.definitions:
            return
        now = self.clock.now()
        schedule = self.definitions[name].describe()
        if event.code == EVENT_JOB_MISSED:
            if runs.record(
                self.sessions,
                job=name,
                scheduled_for=event.scheduled_run_time,
                status=JobRunStatus.MISSED,
                now=now,
                owner=self.owner,
                error="missed: not started within its misfire grace time",
                schedule=schedule,
            ):
                self.alert_on_streak(self.definitions[name])
        elif event.code == EVENT_JOB_ERROR:
            error = f"{type(event.exception).__name__}: {event.exception}"
            runs.fail_unfinished(
                self.sessions,
                job=name,
                scheduled_for=event.scheduled_run_time,
                owner=self.owner,
                now=now,
                error=error,
                schedule=schedule,
            )
            self.alert_on_streak(self.definitions[name])
        elif event.code == EVENT_JOB_MAX_INSTANCES:
            # This process' previous instance is still in flight. If it is executing the
            # body, the overlap is real (another scheduler's claim finds it too); if it is
            # only a claim or a bookkeeping write running late, another scheduler may
            # well run this fire time, and a record here would block it.
            if not runs.owns_running(self.sessions, name, self.owner):
                log.info("%s: previous instance still in flight, not running", name)
                return
            for when in event.scheduled_run_times:
                runs.record(
                    self.sessions,
                    job=name,
                    scheduled_for=when,
                    status=JobRunStatus.SKIPPED_OVERLAP,
                    now=now,
                    owner=self.owner,
                    error="skipped: the previous run was still running (max_instances = 1)",
                    schedule=schedule,
                )

    # ------------------------------------------------------------------ watchdog

    def check(self, now: datetime) -> dict[str, Any]:
        """The heartbeat's checks, in order: abandon dead runs, record fire times nobody
        ran, recover what the policy allows, alert on failure streaks, prune history."""
        abandoned = self.abandon(now)
        gaps = self.record_gaps(now)
        recovered = self.recover(now)
        alerts = sum(self.alert_on_streak(d) for d in self.definitions.values())
        pruned = self.prune(now)
        return {
            "host": self.owner.host,
            "pid": self.owner.pid,
            "abandoned": abandoned,
            "missed_recorded": gaps,
            "recovered": recovered,
            "alerts": alerts,
            "pruned": pruned,
        }

    def abandon(self, now: datetime) -> int:
        """Running rows past their job's timeout whose process is gone -- or of this process
        but no longer executing, their outcome lost with the database connection -- become
        abandoned; a scoring run they left ``running`` is marked failed (its scores never
        committed, so the previous ranking stays the visible one)."""
        timeouts = {name: float(d.timeout) for name, d in self.definitions.items()}
        with transaction(self.sessions, short=True) as session:
            with self._in_flight_lock:
                in_flight = set(self._in_flight)
            rows = runs.abandon_dead(
                session,
                now=now,
                timeouts=timeouts,
                default_timeout=DEFAULT_TIMEOUT_S,
                me=self.owner,
                in_flight=in_flight,
            )
            for row in rows:
                log.warning("%s at %s: abandoned (%s)", row.job, row.scheduled_for, row.host)
                definition = self.definitions.get(row.job)
                if definition is not None and definition.run == "score":
                    session.execute(
                        update(RiskRun)
                        .where(
                            RiskRun.status == RunStatus.RUNNING,
                            RiskRun.as_of == row.scheduled_for,
                        )
                        .values(
                            status=RunStatus.FAILED,
                            finished_at=now,
                            error=f"the scheduler ({row.host} pid {row.pid}) died or lost "
                            f"its database during the run; job run {row.id} abandoned",
                        )
                    )
        return len(rows)

    def _heartbeat_jobs(self) -> list[str]:
        return [n for n, d in self.definitions.items() if d.run == "heartbeat"]

    def record_gaps(self, now: datetime) -> int:
        """Fire times of cron jobs that passed their grace time with no row at all (every
        scheduler was down, or a coalesced backlog) are recorded ``missed``. Only since a
        heartbeat has been watching, and only for jobs that have run before under the
        schedule in force (a changed schedule starts afresh)."""
        with self.sessions() as session:
            watching_since = runs.first_recorded(session, self._heartbeat_jobs())
        if watching_since is None:
            return 0
        count = 0
        for d in self.definitions.values():
            if d.trigger != "cron" or not d.enabled:
                continue
            with self.sessions() as session:
                first = runs.first_recorded(session, [d.name], schedule=d.describe())
            if first is None:
                continue
            start = max(watching_since, first, now - GAP_LOOKBACK)
            end = now - timedelta(seconds=d.misfire_grace_time) - GAP_SLACK
            if end <= start:
                continue
            due = d.fire_times(start, end)[-GAP_MAX:]
            if not due:
                continue
            with self.sessions() as session:
                seen = runs.recorded_times(session, d.name, due[0], due[-1])
            for when in due:
                if when in seen:
                    continue
                if runs.record(
                    self.sessions,
                    job=d.name,
                    scheduled_for=when,
                    status=JobRunStatus.MISSED,
                    now=now,
                    owner=self.owner,
                    error="missed: no scheduler ran it (all down, or a coalesced backlog)",
                    schedule=d.describe(),
                ):
                    count += 1
                    log.warning("%s at %s: missed (no scheduler ran it)", d.name, when)
        return count

    def recover(self, now: datetime) -> list[str]:
        """Re-run, once, each missed or abandoned run whose job's policy still allows it."""
        jobs = [n for n, d in self.definitions.items() if d.recovers and d.enabled]
        with self.sessions() as session:
            candidates = runs.recoverable(session, jobs, since=now - RECOVERY_LOOKBACK)
        done = []
        for row in candidates:
            definition = self.definitions[row.job]
            deadline = definition.recovery_deadline(row.scheduled_for)
            if deadline is None or now >= deadline:
                continue
            if not runs.take_over(self.sessions, row.id, self.owner, now=now):
                continue  # another scheduler recovers it
            log.warning("%s at %s: recovering (was %s)", row.job, row.scheduled_for, row.status)
            done.append(f"{row.job}@{row.scheduled_for.isoformat()}")
            args = (definition, row.id, row.scheduled_for, False)
            if self.background_recovery:
                thread = threading.Thread(
                    target=self._run_claimed, args=args, name=f"recover-{row.job}"
                )
                self._threads.append(thread)
                thread.start()
            else:
                self._run_claimed(*args)
        return done

    def join_recoveries(self, timeout: float | None = None) -> None:
        for thread in self._threads:
            thread.join(timeout)
        self._threads = [t for t in self._threads if t.is_alive()]

    def alert_on_streak(self, definition: JobDefinition) -> int:
        """``alert_after_failures`` scheduled runs in a row missed, failed or abandoned ->
        one pipeline_health alert per streak (deduplicated by the streak's first run)."""
        needed = definition.alert_after_failures
        if needed is None:
            return 0
        try:
            with transaction(self.sessions, short=True) as session:
                streak = runs.bad_streak(session, definition.name)
                if len(streak) < needed:
                    return 0
                first = streak[0]
                key = f"job:{definition.name}:{first.scheduled_for:%Y-%m-%dT%H:%M:%SZ}"
                exists = session.scalar(
                    select(Alert.id).where(Alert.dedup_key == f"pipeline_health:{key}")
                )
                if exists is not None:
                    return 0
                pipeline_health(
                    session,
                    self.settings,
                    key=key,
                    title=f"Scheduled job {definition.name}: {len(streak)} runs in a row "
                    "missed or failed",
                    line="; ".join(_describe(r) for r in streak[-needed:]),
                    now=self.clock.now(),
                )
                log.error("%s: %d runs in a row missed or failed", definition.name, len(streak))
                return 1
        except IntegrityError:
            return 0  # another scheduler raised it at the same moment

    def prune(self, now: datetime) -> int:
        count = 0
        with transaction(self.sessions, short=True) as session:
            for d in self.definitions.values():
                count += runs.prune(session, d.name, now - timedelta(days=d.keep_days))
        return count


def _describe(row: JobRun) -> str:
    what = f"{row.job} of {row.scheduled_for:%Y-%m-%d %H:%M:%S}Z {row.status}"
    return f"{what} ({row.error})" if row.error else what
