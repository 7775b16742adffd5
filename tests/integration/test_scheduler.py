"""The scheduler on SQLite and PostgreSQL: every fire time runs exactly once (claims in
job_runs), across daylight-saving changes, concurrent claimers, two real APScheduler
schedulers, restarts, failures, misses, dead processes and the pipeline_health alert.

Job bodies are tiny fakes registered next to the real ones (the real digest and outbox
bodies run where they are cheap); APScheduler and the database are real."""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import typer
from apscheduler.events import EVENT_JOB_MISSED, JobExecutionEvent
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from atm_risk.alerts.models import Alert, AlertKind
from atm_risk.app import Context
from atm_risk.cli_jobs import jobs_app, scheduler
from atm_risk.clock import FrozenClock, SystemClock
from atm_risk.config import Settings, load_settings
from atm_risk.db import make_engine, session_factory, transaction
from atm_risk.risk.models import RiskRun, RunStatus
from atm_risk.scheduler import runs
from atm_risk.scheduler.definitions import JobDefinition, load_definitions
from atm_risk.scheduler.jobs import REGISTRY, JobContext, JobFunction
from atm_risk.scheduler.models import JobRun, JobRunStatus, RunOrigin
from atm_risk.scheduler.runner import Runner
from atm_risk.scheduler.runs import Owner
from atm_risk.scheduler.service import SchedulerService, run_scheduler

JOBS = Path(__file__).resolve().parents[2] / "jobs"
AMS = ZoneInfo("Europe/Amsterdam")
DST_DAYS = [date(2026, 3, 29), date(2026, 10, 25), date(2027, 3, 28), date(2027, 10, 31)]


class Calls:
    """A fake job body that counts its executions per (job, fire time)."""

    def __init__(self, *, sleep: float = 0.0, fail: bool = False) -> None:
        self.lock = threading.Lock()
        self.count: Counter[tuple[str, datetime]] = Counter()
        self.spans: list[tuple[float, float]] = []
        self.sleep, self.fail = sleep, fail

    def __call__(self, ctx: JobContext) -> dict[str, Any]:
        t0 = time.monotonic()
        with self.lock:
            self.count[(ctx.job, ctx.scheduled_for)] += 1
        if self.sleep:
            time.sleep(self.sleep)
        if self.fail:
            raise RuntimeError("boom")
        with self.lock:
            self.spans.append((t0, time.monotonic()))
        return {"fake": True}


def _settings() -> Settings:
    return Settings(model_path=None)


def _runner(
    sessions: sessionmaker[Session],
    clock: Any,
    definitions: list[JobDefinition],
    extra: dict[str, JobFunction] | None = None,
    **kwargs: Any,
) -> Runner:
    return Runner(
        sessions=sessions,
        settings=_settings(),
        clock=clock,
        definitions=definitions,
        registry={**REGISTRY, **(extra or {})},
        owner=Owner.current(),  # a new token: another scheduler, as far as claims go
        **kwargs,
    )


def _interval(name: str, run: str, seconds: int = 1, **kwargs: Any) -> JobDefinition:
    fields: dict[str, Any] = {
        "name": name,
        "run": run,
        "trigger": "interval",
        "seconds": seconds,
        "misfire_grace_time": 30,
        **kwargs,
    }
    return JobDefinition.model_validate(fields)


def _rows(sessions: sessionmaker[Session], job: str) -> list[JobRun]:
    with sessions() as session:
        return list(
            session.scalars(select(JobRun).where(JobRun.job == job).order_by(JobRun.scheduled_for))
        )


def _health_alerts(sessions: sessionmaker[Session]) -> list[Alert]:
    with sessions() as session:
        return list(session.scalars(select(Alert).where(Alert.kind == AlertKind.PIPELINE_HEALTH)))


def _local(day: date, hh: int, mm: int) -> datetime:
    return datetime(day.year, day.month, day.day, hh, mm, tzinfo=AMS).astimezone(UTC)


# --------------------------------------------------------------------------- DST


def test_daily_digest_runs_once_per_local_day_across_dst(
    sessions: sessionmaker[Session], clock: FrozenClock
) -> None:
    """Fire times from APScheduler's CronTrigger over the four 2026/2027 changes; each is
    claimed by one scheduler and by a second one (again after a "restart"): one run and one
    digest per local day, at 07:00 local."""
    definitions = load_definitions(JOBS)
    first = _runner(sessions, clock, definitions)
    second = _runner(sessions, clock, definitions)
    digest = first.definition("digest_daily")
    times: list[datetime] = []
    days: list[date] = []
    for dst_day in DST_DAYS:
        start = _local(dst_day - timedelta(days=3), 0, 0)
        times += digest.fire_times(start, start + timedelta(days=7))
        days += [dst_day + timedelta(days=k) for k in range(-3, 4)]
    assert len(times) == len(days) == 28
    for t in times:
        clock.set(t + timedelta(milliseconds=5))  # the first scheduler wakes
        assert first.execute("digest_daily", t).status == "succeeded"
        clock.set(t + timedelta(milliseconds=40))  # the second one, a moment later
        assert second.execute("digest_daily", t).status == "taken"
    for t in reversed(times):  # the second scheduler restarted and replays every fire time
        assert second.execute("digest_daily", t).status == "taken"

    rows = _rows(sessions, "digest_daily")
    assert [r.scheduled_for for r in rows] == times
    assert all(r.status == JobRunStatus.SUCCEEDED and r.attempts == 1 for r in rows)
    local = [r.scheduled_for.astimezone(AMS) for r in rows]
    assert [t.date() for t in local] == days  # exactly once per local day
    assert {t.strftime("%H:%M") for t in local} == {"07:00"}
    assert {t.utcoffset() for t in local} == {timedelta(hours=1), timedelta(hours=2)}
    with sessions() as session:
        keys = session.scalars(select(Alert.dedup_key).where(Alert.kind == AlertKind.DIGEST))
        assert sorted(keys) == sorted(f"digest:daily:{d.isoformat()}" for d in days)


# --------------------------------------------------------------------------- exactly once


def test_exactly_once_under_concurrent_claimers(
    database_url: str, sessions: sessionmaker[Session], clock: FrozenClock
) -> None:
    """Six claimers, each with its own engine (real concurrent connections), race for the
    same ten fire times: each runs exactly once; the others skip without a trace."""
    calls = Calls(sleep=0.01)
    definitions = [_interval("tick", "tick")]
    engines = [make_engine(database_url) for _ in range(6)]
    try:
        runners = [
            _runner(session_factory(e), clock, definitions, {"tick": calls}) for e in engines
        ]
        times = [datetime(2026, 11, 28, 12, 0, k, tzinfo=UTC) for k in range(10)]
        barrier = threading.Barrier(len(runners))

        def claimer(runner: Runner) -> list[str]:
            out = []
            for t in times:
                barrier.wait(timeout=30)
                out.append(runner.execute("tick", t).status)
            return out

        with ThreadPoolExecutor(len(runners)) as pool:
            outcomes = list(pool.map(claimer, runners))
    finally:
        for e in engines:
            e.dispose()
    assert all(n == 1 for n in calls.count.values())
    assert len(calls.count) == len(times)
    for k in range(len(times)):
        assert sorted(o[k] for o in outcomes) == ["succeeded"] + ["taken"] * 5
    rows = _rows(sessions, "tick")
    assert [r.scheduled_for for r in rows] == times
    assert {r.status for r in rows} == {JobRunStatus.SUCCEEDED}


def test_a_live_run_of_the_job_makes_the_next_claim_a_skipped_overlap(
    sessions: sessionmaker[Session], clock: FrozenClock
) -> None:
    definitions = [_interval("tick", "tick")]
    t0 = clock.now()
    other = Owner.current()  # a live scheduler (this very process) is still running t0
    assert runs.claim(sessions, job="tick", scheduled_for=t0, now=t0, owner=other).run_id
    calls = Calls()
    runner = _runner(sessions, clock, definitions, {"tick": calls})
    outcome = runner.execute("tick", t0 + timedelta(seconds=1))
    assert outcome.status == "overlap"
    assert not calls.count
    rows = _rows(sessions, "tick")
    assert [r.status for r in rows] == [JobRunStatus.RUNNING, JobRunStatus.SKIPPED_OVERLAP]
    assert "still running" in (rows[1].error or "")


# --------------------------------------------------------------------------- real scheduler


def test_two_real_schedulers_run_each_fire_time_once(
    database_url: str, sessions: sessionmaker[Session]
) -> None:
    """Two APScheduler schedulers (own engines) on one database for ~3 s: every fire time
    of `tick` ran once under its trigger time; `boom` is recorded failed with its error
    (through EVENT_JOB_ERROR too); the slow job's overlaps are recorded, never run."""
    tick, boom, slow = Calls(), Calls(fail=True), Calls(sleep=1.6)
    definitions = [
        _interval("tick", "tick"),
        _interval("boom", "boom"),
        _interval("slow", "slow", misfire_grace_time=5),
    ]
    fakes: dict[str, JobFunction] = {"tick": tick, "boom": boom, "slow": slow}
    engines = [make_engine(database_url) for _ in range(2)]
    services = [
        SchedulerService(
            _runner(session_factory(e), SystemClock(), definitions, fakes), definitions
        )
        for e in engines
    ]
    try:
        for s in services:
            s.start()
        time.sleep(3.3)
    finally:
        for s in services:
            s.shutdown(wait=True)
        for e in engines:
            e.dispose()

    ticks = _rows(sessions, "tick")
    done = [r for r in ticks if r.status == JobRunStatus.SUCCEEDED]
    assert len(done) >= 2
    # under load a run may still be in flight at the next second: a recorded overlap
    assert {r.status for r in ticks} <= {JobRunStatus.SUCCEEDED, JobRunStatus.SKIPPED_OVERLAP}
    assert all(r.scheduled_for.microsecond == 0 for r in ticks)  # the trigger's fire times
    assert {("tick", r.scheduled_for) for r in done} == set(tick.count)
    assert all(n == 1 for n in tick.count.values())

    failed = [r for r in _rows(sessions, "boom") if r.status != JobRunStatus.SKIPPED_OVERLAP]
    assert failed
    assert {r.status for r in failed} == {JobRunStatus.FAILED}
    assert {r.error for r in failed} == {"RuntimeError: boom"}
    assert {("boom", r.scheduled_for) for r in failed} == set(boom.count)
    assert all(n == 1 for n in boom.count.values())

    slows = _rows(sessions, "slow")
    statuses = Counter(r.status for r in slows)
    assert statuses[JobRunStatus.SUCCEEDED] >= 1
    assert statuses[JobRunStatus.SKIPPED_OVERLAP] >= 1
    assert set(statuses) <= {JobRunStatus.SUCCEEDED, JobRunStatus.SKIPPED_OVERLAP}
    spans = sorted(slow.spans)
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))  # never overlap


def test_a_missed_fire_time_is_recorded_by_the_listener(sessions: sessionmaker[Session]) -> None:
    calls = Calls()
    definitions = [_interval("tick", "tick", misfire_grace_time=1, coalesce=False)]
    service = SchedulerService(
        _runner(sessions, SystemClock(), definitions, {"tick": calls}), definitions
    )
    late = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=10)
    service.start(paused=True)
    try:
        service.scheduler.modify_job("tick", next_run_time=late)
        service.scheduler.resume()
        time.sleep(0.6)
    finally:
        service.shutdown()
    rows = {r.scheduled_for: r for r in _rows(sessions, "tick")}
    assert rows[late].status == JobRunStatus.MISSED
    assert ("tick", late) not in calls.count


def test_restart_keeps_one_definition_per_job(sessions: sessionmaker[Session]) -> None:
    definitions = load_definitions(JOBS)
    names = sorted(d.name for d in definitions)
    noop: JobFunction = Calls()
    fakes = dict.fromkeys(REGISTRY, noop)
    for _ in range(2):  # start, reinstall twice, stop; then a "restarted" process
        service = SchedulerService(
            _runner(sessions, SystemClock(), definitions, fakes), definitions
        )
        service.start(paused=True)
        try:
            service.install()
            service.install()
            jobs = service.jobs()
            assert sorted(j.id for j in jobs) == names
            score = service.scheduler.get_job("score")
            assert str(score.trigger) == "cron[hour='21', minute='30']"
            assert str(score.trigger.timezone) == "Europe/Amsterdam"
            assert score.max_instances == 1
            assert score.coalesce is True
            assert score.misfire_grace_time == 1800
            assert str(service.scheduler.timezone) == "UTC"
        finally:
            service.shutdown()


def test_run_scheduler_stops_on_request(sessions: sessionmaker[Session]) -> None:
    calls = Calls()
    definitions = [_interval("tick", "tick")]
    stop = threading.Event()
    runner = _runner(sessions, SystemClock(), definitions, {"tick": calls})
    thread = threading.Thread(
        target=run_scheduler, args=(runner, definitions), kwargs={"stop": stop}
    )
    thread.start()
    time.sleep(1.5)
    stop.set()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert _rows(sessions, "tick")
    assert {r.status for r in _rows(sessions, "tick")} == {JobRunStatus.SUCCEEDED}


# --------------------------------------------------------------------------- failures


def test_a_failing_job_is_recorded_failed_with_its_error(
    sessions: sessionmaker[Session], clock: FrozenClock
) -> None:
    definitions = [_interval("boom", "boom")]
    runner = _runner(sessions, clock, definitions, {"boom": Calls(fail=True)})
    with pytest.raises(RuntimeError, match="boom"):
        runner.execute("boom", clock.now())
    clock.advance(timedelta(seconds=1))
    outcome = runner.execute("boom", clock.now(), origin=RunOrigin.MANUAL, raise_errors=False)
    assert outcome.status == "failed"
    assert outcome.error == "RuntimeError: boom"
    rows = _rows(sessions, "boom")
    assert [(r.status, r.error, r.origin) for r in rows] == [
        (JobRunStatus.FAILED, "RuntimeError: boom", RunOrigin.SCHEDULED),
        (JobRunStatus.FAILED, "RuntimeError: boom", RunOrigin.MANUAL),
    ]
    assert all(r.finished_at is not None for r in rows)


def _score_times(first_day: date, n: int) -> list[datetime]:
    return [_local(first_day + timedelta(days=k), 21, 30) for k in range(n)]


def test_two_missed_score_runs_raise_exactly_one_pipeline_health_alert(
    sessions: sessionmaker[Session], clock: FrozenClock
) -> None:
    definitions = load_definitions(JOBS)
    fake_score = Calls()
    a = _runner(sessions, clock, definitions, {"score": fake_score})
    b = _runner(sessions, clock, definitions, {"score": fake_score})
    t = _score_times(date(2026, 10, 24), 7)  # across the fall-back night
    clock.set(t[0] + timedelta(minutes=1))
    assert a.execute("score", t[0]).status == "succeeded"
    for k in (1, 2):  # both schedulers see both misses (APScheduler's EVENT_JOB_MISSED)
        clock.set(t[k] + timedelta(hours=2))  # after 23:00: no recovery any more
        for runner in (a, b):
            runner.on_event(JobExecutionEvent(EVENT_JOB_MISSED, "score", "default", t[k]))
        a.check(clock.now())
        b.check(clock.now())
    alerts = _health_alerts(sessions)
    assert len(alerts) == 1
    assert alerts[0].title == "Scheduled job score: 2 runs in a row missed or failed"
    assert [r.status for r in _rows(sessions, "score")] == [
        JobRunStatus.SUCCEEDED,
        JobRunStatus.MISSED,
        JobRunStatus.MISSED,
    ]
    # a third miss is the same streak: still one alert
    clock.set(t[3] + timedelta(hours=2))
    a.on_event(JobExecutionEvent(EVENT_JOB_MISSED, "score", "default", t[3]))
    a.check(clock.now())
    assert len(_health_alerts(sessions)) == 1
    # a success ends the streak; two failures later raise a new alert
    clock.set(t[4])
    assert a.execute("score", t[4]).status == "succeeded"
    failing = _runner(sessions, clock, definitions, {"score": Calls(fail=True)})
    for k in (5, 6):
        clock.set(t[k] + timedelta(hours=2))
        assert failing.execute("score", t[k], raise_errors=False).status == "failed"
    assert len(_health_alerts(sessions)) == 2


def test_fire_times_nobody_ran_are_missed_and_alerted(
    sessions: sessionmaker[Session], clock: FrozenClock
) -> None:
    """Every scheduler was down for two evenings: the heartbeat records both score runs
    missed (too late to recover) and raises one alert."""
    definitions = load_definitions(JOBS)
    runner = _runner(sessions, clock, definitions, {"score": Calls()})
    t = _score_times(date(2026, 3, 27), 4)  # across the spring-forward night
    clock.set(t[0] - timedelta(minutes=30))
    assert runner.execute("heartbeat", clock.now()).status == "succeeded"  # watching since
    clock.set(t[0])
    assert runner.execute("score", t[0]).status == "succeeded"
    clock.set(t[2] + timedelta(hours=2))  # 23:30 local: after the night-window deadline
    result = runner.check(clock.now())
    assert result["missed_recorded"] == 2
    assert result["recovered"] == []
    assert result["alerts"] == 1
    assert [r.scheduled_for for r in _rows(sessions, "score")] == t[:3]
    assert runner.check(clock.now())["missed_recorded"] == 0
    assert len(_health_alerts(sessions)) == 1


def test_a_missed_score_is_recovered_before_the_night_window(
    sessions: sessionmaker[Session], clock: FrozenClock
) -> None:
    definitions = load_definitions(JOBS)
    calls = Calls()
    runner = _runner(sessions, clock, definitions, {"score": calls})
    t = _score_times(date(2026, 3, 28), 2)
    clock.set(t[0] - timedelta(minutes=30))
    runner.execute("heartbeat", clock.now())
    runner.execute("score", t[0])
    clock.set(t[1] + timedelta(minutes=40))  # down at 21:30 on the DST day; back at 22:10
    result = runner.check(clock.now())
    assert result["missed_recorded"] == 1
    assert result["recovered"] == [f"score@{t[1].isoformat()}"]
    (row,) = [r for r in _rows(sessions, "score") if r.scheduled_for == t[1]]
    assert row.status == JobRunStatus.SUCCEEDED
    assert row.recovered_at == clock.now()
    assert calls.count[("score", t[1])] == 1
    assert runner.check(clock.now())["recovered"] == []  # once
    assert _health_alerts(sessions) == []


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_run_of_a_dead_process_is_abandoned_and_recovered_once(
    sessions: sessionmaker[Session], clock: FrozenClock
) -> None:
    definitions = load_definitions(JOBS)
    calls = Calls()
    a = _runner(sessions, clock, definitions, {"score": calls})
    b = _runner(sessions, clock, definitions, {"score": calls})
    t = _local(date(2026, 10, 25), 21, 30)  # the fall-back day, CET
    pid = _dead_pid()
    dead = Owner(socket.gethostname(), pid, f"{pid}.1.killed")
    clock.set(t)
    claimed = runs.claim(sessions, job="score", scheduled_for=t, now=t, owner=dead)
    assert claimed.run_id is not None
    with transaction(sessions) as session:  # the scoring run the killed process left behind
        session.add(
            RiskRun(
                scorer="exposure_baseline",
                scorer_version="1",
                as_of=t,
                horizon_days=28,
                status=RunStatus.RUNNING,
                started_at=t,
                params={},
            )
        )
    clock.set(t + timedelta(minutes=10))  # within the job's timeout: left alone
    assert a.check(clock.now())["abandoned"] == 0
    clock.set(t + timedelta(minutes=21))
    result = a.check(clock.now())
    assert result["abandoned"] == 1
    assert result["recovered"] == [f"score@{t.isoformat()}"]
    assert b.check(clock.now())["recovered"] == []
    (row,) = _rows(sessions, "score")
    assert row.status == JobRunStatus.SUCCEEDED
    assert row.attempts == 2
    assert row.pid == os.getpid()
    assert calls.count[("score", t)] == 1
    with sessions() as session:
        (risk_run,) = session.scalars(select(RiskRun)).all()
        assert risk_run.status == RunStatus.FAILED
        assert "died" in (risk_run.error or "")


def test_a_run_whose_outcome_could_not_be_written_is_abandoned_by_its_own_process(
    sessions: sessionmaker[Session], clock: FrozenClock
) -> None:
    """The database went away as a run ended (found by reliability/faults.py: a PostgreSQL
    restart mid-scoring): finish() could not write, the row stayed ``running`` under this
    live process, and every later fire time was skipped as an overlap. The process' own
    heartbeat knows it no longer executes the run: abandoned, then recovered."""
    definitions = load_definitions(JOBS)
    calls = Calls()
    runner = _runner(sessions, clock, definitions, {"score": calls})
    t = _local(date(2026, 11, 27), 21, 30)
    clock.set(t)
    # the state a failed finish() leaves: claimed by this process, not executing any more
    lost = runs.claim(sessions, job="score", scheduled_for=t, now=t, owner=runner.owner)
    assert lost.run_id is not None
    other = Owner.current()  # another scheduler of this process' host, alive
    assert runs.claim(sessions, job="digest_daily", scheduled_for=t, now=t, owner=other).run_id
    clock.set(t + timedelta(minutes=10))  # within the job's timeout: left alone
    assert runner.check(clock.now())["abandoned"] == 0
    clock.set(t + timedelta(minutes=21))
    result = runner.check(clock.now())
    assert result["abandoned"] == 1
    assert result["recovered"] == [f"score@{t.isoformat()}"]
    rows = {r.scheduled_for: r for r in _rows(sessions, "score")}
    assert rows[t].status == JobRunStatus.SUCCEEDED
    assert rows[t].recovered_at == clock.now()
    assert _rows(sessions, "digest_daily")[0].status == JobRunStatus.RUNNING  # left alone
    assert calls.count[("score", t)] == 1


def test_abandoned_too_late_is_not_recovered_and_live_runs_stay(
    sessions: sessionmaker[Session], clock: FrozenClock
) -> None:
    definitions = load_definitions(JOBS)
    runner = _runner(sessions, clock, definitions, {"score": Calls()})
    t = _local(date(2027, 3, 28), 21, 30)
    elsewhere = Owner("another-host", 4242, "4242.99.x")  # cannot be checked: timeout alone
    runs.claim(sessions, job="score", scheduled_for=t, now=t, owner=elsewhere)
    alive = Owner.current()
    runs.claim(sessions, job="digest_daily", scheduled_for=t, now=t, owner=alive)
    clock.set(t + timedelta(minutes=95))  # 23:05 local: past the score's recovery deadline
    result = runner.check(clock.now())
    assert result["abandoned"] == 1
    assert result["recovered"] == []
    assert _rows(sessions, "score")[0].status == JobRunStatus.ABANDONED
    assert _rows(sessions, "digest_daily")[0].status == JobRunStatus.RUNNING  # its owner lives


# --------------------------------------------------------------------------- CLI


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main(ctx: typer.Context) -> None:
        ctx.obj = Context(settings=load_settings())
        ctx.call_on_close(ctx.obj.close)

    app.add_typer(jobs_app, name="jobs")
    app.command("scheduler")(scheduler)
    return app


def test_jobs_cli_list_run_history(
    database_url: str, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    runner = CliRunner()
    app = _app()
    env = {
        "ATM_RISK_DATABASE_URL": database_url,
        "ATM_RISK_MODEL_PATH": "",
        "ATM_RISK_JOBS_DIR": str(JOBS),
    }

    def run(*args: str, code: int = 0) -> str:
        result = runner.invoke(app, list(args), env=env)
        assert result.exit_code == code, result.output
        return result.output

    listed = json.loads(run("jobs", "list", "--json"))
    assert [r["name"] for r in listed] == [
        "digest_daily",
        "digest_weekly",
        "heartbeat",
        "outbox",
        "score",
    ]
    assert all(r["next_run"] and r["last_status"] is None for r in listed)
    assert "outbox: succeeded" in run("jobs", "run", "outbox")  # the real body, empty outbox
    assert "heartbeat: succeeded" in run("jobs", "run", "heartbeat")
    assert "no job named 'nope'" in run("jobs", "run", "nope", code=2)
    history = json.loads(run("jobs", "history", "--json"))
    assert {(h["job"], h["origin"], h["status"]) for h in history} == {
        ("outbox", "manual", "succeeded"),
        ("heartbeat", "manual", "succeeded"),
    }
    only = json.loads(run("jobs", "history", "--job", "outbox", "--limit", "5", "--json"))
    assert [h["job"] for h in only] == ["outbox"]
    assert only[0]["result"]["claimed"] == 0
    listed = {r["name"]: r for r in json.loads(run("jobs", "list", "--json"))}
    assert listed["outbox"]["last_status"] == "succeeded"
    assert "outbox" in run("jobs", "list")
    assert "heartbeat" in run("jobs", "history")
    (tmp_path / "bad.toml").write_text(
        '[[jobs]]\nname = "x"\nrun = "score"\ntrigger = "cron"\n', encoding="utf-8"
    )
    output = run("jobs", "list", "--jobs-dir", str(tmp_path), code=2)
    assert "bad.toml: jobs[0] (x)" in output
    assert "misfire_grace_time: Field required" in output
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(JobRun)) == 2


def test_a_changed_schedule_reports_no_false_misses(
    sessions: sessionmaker[Session], clock: FrozenClock
) -> None:
    definitions = load_definitions(JOBS)
    runner = _runner(sessions, clock, definitions, {"score": Calls()})
    t = _score_times(date(2026, 6, 1), 3)
    clock.set(t[0] - timedelta(minutes=30))
    runner.execute("heartbeat", clock.now())
    for when in t:
        clock.set(when)
        runner.execute("score", when)
    # the operators move the score to 22:15 local; the scheduler restarts the next day
    moved = [
        d.model_copy(update={"cron": d.cron.model_copy(update={"hour": 22, "minute": 15})})
        if d.name == "score" and d.cron is not None
        else d
        for d in definitions
    ]
    later = _runner(sessions, clock, moved, {"score": Calls()})
    clock.set(t[-1] + timedelta(hours=20))
    assert later.check(clock.now())["missed_recorded"] == 0
    assert {r.status for r in _rows(sessions, "score")} == {JobRunStatus.SUCCEEDED}
