"""The scheduler process: APScheduler 3.x in UTC, one job per definition, stable ids.

APScheduler calls a job function without its fire time; the executor below runs each due
fire time with it set in a context variable, so the run is claimed under the trigger's
scheduled time (the same on every scheduler: the exactly-once key). Everything else is
stock APScheduler: misfire grace, coalescing, max_instances and the events the listener
records (errors, misses, skipped overlaps).

Jobs live in a MemoryJobStore, rebuilt from ``jobs/*.toml`` at every start with
``replace_existing=True`` -- a restart never duplicates a definition; what survives a
restart is the run history in the database (claims, outcomes, recovery).
"""

from __future__ import annotations

import contextvars
import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED
from apscheduler.executors.base import run_job
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from atm_risk.scheduler.definitions import JobDefinition
from atm_risk.scheduler.runner import Runner

log = logging.getLogger("atm_risk.scheduler")

SCHEDULED_FOR: contextvars.ContextVar[datetime | None] = contextvars.ContextVar(
    "scheduled_for", default=None
)
LISTENED = EVENT_JOB_ERROR | EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES


def _run_each(job: Any, jobstore_alias: str, run_times: list[datetime], logger: str) -> Any:
    """APScheduler's own ``run_job`` (misfire check, events), one fire time at a time,
    with that fire time visible to the job function."""
    events: list[Any] = []
    for run_time in run_times:
        token = SCHEDULED_FOR.set(run_time)
        try:
            events.extend(run_job(job, jobstore_alias, [run_time], logger))
        finally:
            SCHEDULED_FOR.reset(token)
    return events


class ClaimingExecutor(ThreadPoolExecutor):  # type: ignore[misc]
    """A thread pool executor that tells the job which fire time it runs."""

    def _do_submit_job(self, job: Any, run_times: list[datetime]) -> None:
        def callback(future: Any) -> None:
            exc = future.exception()
            if exc is not None:
                self._run_job_error(job.id, exc, exc.__traceback__)
            else:
                self._run_job_success(job.id, future.result())

        future = self._pool.submit(
            _run_each, job, job._jobstore_alias, run_times, self._logger.name
        )
        future.add_done_callback(callback)


def _entry(runner: Runner, name: str) -> None:
    """The function every scheduled job runs: claim the fire time, run, record."""
    scheduled_for = SCHEDULED_FOR.get()
    if scheduled_for is None:
        raise RuntimeError("scheduled jobs must run through ClaimingExecutor (no fire time)")
    runner.execute(name, scheduled_for)


class SchedulerService:
    """One APScheduler BackgroundScheduler (UTC) running a :class:`Runner`'s jobs."""

    def __init__(
        self, runner: Runner, definitions: list[JobDefinition], *, max_workers: int = 8
    ) -> None:
        self.runner = runner
        self.definitions = [d for d in definitions if d.enabled]
        self.scheduler = BackgroundScheduler(
            timezone=UTC, executors={"default": ClaimingExecutor(max_workers=max_workers)}
        )
        self.scheduler.add_listener(runner.on_event, LISTENED)

    def install(self, now: datetime | None = None) -> None:
        """Add (or replace) one job per definition, id = the job's name. A fire time that
        passed less than its grace time ago is due at once: a restart picks it up (the
        claim skips it if another scheduler ran it)."""
        now = now or datetime.now(UTC)
        for d in self.definitions:
            trigger = d.make_trigger()
            recent = d.fire_times(now - timedelta(seconds=d.misfire_grace_time), now)
            first = recent[-1] if recent else d.next_fire_time(now, trigger)
            self.scheduler.add_job(
                _entry,
                trigger=trigger,
                args=(self.runner, d.name),
                id=d.name,
                name=d.name,
                misfire_grace_time=d.misfire_grace_time,
                coalesce=d.coalesce,
                max_instances=d.max_instances,
                replace_existing=True,
                next_run_time=first,
            )

    def start(self, *, paused: bool = False) -> None:
        self.scheduler.start(paused=paused)
        self.install()
        for job in self.scheduler.get_jobs():
            log.info("job %s: %s, next run %s", job.id, job.trigger, job.next_run_time)

    def shutdown(self, wait: bool = True) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=wait)
        self.runner.join_recoveries()

    def jobs(self) -> list[Any]:
        return list(self.scheduler.get_jobs())


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}

    def handler(signum: int, _frame: Any) -> None:
        log.info("signal %s: stopping after the running jobs", signal.Signals(signum).name)
        stop.set()

    for s in previous:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def run_scheduler(
    runner: Runner, definitions: list[JobDefinition], *, stop: threading.Event | None = None
) -> None:
    """Run the jobs until SIGTERM/SIGINT (or ``stop``); running jobs finish first."""
    stop = stop or threading.Event()
    service = SchedulerService(runner, definitions)
    with _stop_on_signals(stop):
        service.start()
        log.info(
            "scheduler %s pid %s: %d jobs", runner.owner.host, runner.owner.pid, len(service.jobs())
        )
        try:
            while not stop.wait(1.0):
                pass
        finally:
            service.shutdown(wait=True)
    log.info("scheduler stopped")
