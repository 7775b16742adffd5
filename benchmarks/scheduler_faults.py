"""Fault injection for the scheduler: two scheduler processes, SIGKILL in the middle of scoring.

For each backend -- a SQLite file, and PostgreSQL (a database this script creates on the
server of --postgres and drops afterwards; loopback only) -- it migrates a fresh database,
ingests --atms machines of the shipped Geldmaat list (profile ``geldmaat``) and the
compiled news incidents, writes an accelerated job folder (``score`` every --score-every
seconds with a short timeout and a recovery window, the heartbeat every second, the outbox
every 2 s) and starts two real scheduler processes (this file with ``--worker``, which runs
``atm_risk.scheduler.service.run_scheduler`` exactly as ``atm-risk scheduler`` does).

While they run for --seconds, it watches the database: whenever one scheduler is in the
middle of a scoring run (its claim row is ``running`` and its ``risk_runs`` row has been
committed as ``running``, scores not yet), it kills that process with SIGKILL, and restarts
it a moment later; --kills times. It also reads the visible ranking all along. Then it
lets the heartbeat recover the last killed run, stops both schedulers with SIGTERM and
counts. Lines per phase, and last a JSON object:

- ``runs``: score fire times that ran to success (plus the heartbeat and outbox rows);
- ``duplicate_runs``: two rows, two successes, or more executions (``risk_runs`` as of the
  fire time) than the one run plus its one recovery, for one (job, scheduled_for). Goal 0;
- ``partial_rankings``: a succeeded run whose score count is not ``n_scored``, a run not
  succeeded with scores, or a visible ranking (seen while running) mixing runs or
  incomplete. Goal 0;
- ``left_running`` / ``left_abandoned``: history rows in those states at the end;
- ``missed_runs_recovered``: killed (abandoned) runs re-run to success by the heartbeat.

It takes about 3 minutes with the defaults (about 80 s per backend plus setup)::

    python benchmarks/scheduler_faults.py [--seconds 60] [--kills 5] [--atms 500]
        [--backends sqlite,postgresql] [--postgres postgresql+psycopg://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from atm_risk.app import Context
from atm_risk.clock import SystemClock
from atm_risk.config import Settings
from atm_risk.ingest.run import ingest_atms, ingest_incidents
from atm_risk.migrate import upgrade
from atm_risk.risk.models import RiskRun, RiskScore, RunStatus
from atm_risk.risk.service import latest_run
from atm_risk.scheduler.models import JobRun, JobRunStatus

ROOT = Path(__file__).resolve().parents[1]
GELDMAAT = ROOT / "data/geldmaat_atm_locations_nl/geldmaat_locations.csv.gz"
NEWS = ROOT / "data/atm_attacks_news_compiled/incidents.csv"
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def jobs_toml(score_every: int | None, outbox_every: int = 2) -> str:
    """Accelerated jobs: score every ``score_every`` s (none when None), the heartbeat every
    second, the outbox every ``outbox_every`` s (also used by reliability/faults.py)."""
    score = f"""
[[jobs]]
name = "score"
run = "score"
trigger = "interval"
seconds = {score_every}
misfire_grace_time = 2
coalesce = true
max_instances = 1
timeout = 2               # a killed run is abandoned 2 s after it started
recover_within = 120      # and re-run once within 2 minutes of its fire time
alert_after_failures = 2
"""
    return (
        (score if score_every is not None else "")
        + f"""
[[jobs]]
name = "heartbeat"
run = "heartbeat"
trigger = "interval"
seconds = 1
misfire_grace_time = 1
coalesce = true
max_instances = 1
timeout = 3

[[jobs]]
name = "outbox"
run = "outbox"
trigger = "interval"
seconds = {outbox_every}
misfire_grace_time = 1
coalesce = true
max_instances = 1
timeout = 3
"""
    )


# --------------------------------------------------------------------------- worker


def worker(database_url: str, jobs_dir: Path) -> None:
    """A scheduler process, as `atm-risk scheduler` runs it."""
    import logging

    from atm_risk.scheduler.definitions import load_definitions
    from atm_risk.scheduler.runner import Runner
    from atm_risk.scheduler.service import run_scheduler

    logging.basicConfig(
        stream=sys.stderr, format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("atm_risk").setLevel(logging.INFO)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    ctx = Context(settings=Settings(database_url=database_url, model_path=None))
    definitions = load_definitions(jobs_dir)
    runner = Runner(
        sessions=ctx.sessions,
        settings=ctx.settings,
        clock=ctx.clock,
        definitions=definitions,
        background_recovery=True,
    )
    try:
        run_scheduler(runner, definitions)
    finally:
        ctx.close()


# --------------------------------------------------------------------------- driver


class Scheduler:
    """One scheduler process (restartable)."""

    def __init__(self, label: str, url: str, jobs_dir: Path, log_dir: Path) -> None:
        self.label, self.url, self.jobs_dir, self.log_dir = label, url, jobs_dir, log_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        self.log = self.log_dir / f"{self.label}-{self.starts}.log"
        log = self.log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--worker", self.url, str(self.jobs_dir)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        log.close()

    def ready(self) -> bool:
        """Started (imports done, jobs installed: it logged its job count)."""
        return self.pid is not None and f"pid {self.pid}: " in self.log.read_text("utf-8")

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.time() + timeout
        while not self.ready():
            if time.time() > deadline or self.pid is None:
                raise RuntimeError(f"scheduler {self.label} did not start; see {self.log}")
            time.sleep(0.1)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc and self.proc.poll() is None else None

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def write_atms(path: Path, n: int) -> None:
    with gzip.open(GELDMAAT, "rt", encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    header, body = rows[0], rows[1:]
    picks = random.Random(7).sample(body, min(n, len(body)))
    with path.open("w", encoding="utf-8", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(header)
        out.writerows(picks)


def scoring_victim(ctx: Context, pids: dict[int, Scheduler]) -> Scheduler | None:
    """The scheduler in the middle of a first-attempt scoring run, if any."""
    with ctx.sessions() as session:
        rows = session.execute(
            select(JobRun.pid, JobRun.scheduled_for).where(
                JobRun.job == "score",
                JobRun.status == JobRunStatus.RUNNING,
                JobRun.recovered_at.is_(None),
            )
        ).all()
        for pid, scheduled_for in rows:
            if pid not in pids:
                continue
            started = session.scalar(
                select(func.count())
                .select_from(RiskRun)
                .where(RiskRun.as_of == scheduled_for, RiskRun.status == RunStatus.RUNNING)
            )
            if started:
                return pids[pid]
    return None


def visible_ranking_ok(ctx: Context) -> bool:
    """The ranking a reader sees now: one run, complete, ranks 1..n."""
    with ctx.sessions() as session:
        run = latest_run(session)
        if run is None:
            return True
        ranks = session.scalars(select(RiskScore.rank).where(RiskScore.run_id == run.id)).all()
        return sorted(ranks) == list(range(1, run.n_scored + 1))


def count(ctx: Context, kills: int, partial_seen: int, restarts: int) -> dict[str, Any]:
    with ctx.sessions() as session:
        history = session.scalars(select(JobRun)).all()
        risk_runs = session.scalars(select(RiskRun)).all()
        score_counts = dict(
            session.execute(select(RiskScore.run_id, func.count()).group_by(RiskScore.run_id)).all()
        )
    keys = Counter((r.job, r.scheduled_for) for r in history)
    duplicates = sum(n - 1 for n in keys.values() if n > 1)
    score_rows = {r.scheduled_for: r for r in history if r.job == "score"}
    executions: Counter[Any] = Counter(r.as_of for r in risk_runs)
    successes: Counter[Any] = Counter(r.as_of for r in risk_runs if r.status == RunStatus.SUCCEEDED)
    duplicates += sum(n - 1 for n in successes.values() if n > 1)
    for as_of, n in executions.items():
        row = score_rows.get(as_of)
        allowed = 1 + (1 if row is not None and row.recovered_at is not None else 0)
        duplicates += max(0, n - allowed)
    duplicates += sum(1 for as_of in executions if as_of not in score_rows)  # unclaimed run
    partial = partial_seen
    for r in risk_runs:
        n = score_counts.get(r.id, 0)
        if (r.status == RunStatus.SUCCEEDED and n != r.n_scored) or (
            r.status != RunStatus.SUCCEEDED and n
        ):
            partial += 1
    if not visible_ranking_ok(ctx):
        partial += 1
    statuses = Counter(str(r.status) for r in history if r.job == "score")
    return {
        "runs": sum(1 for r in history if r.status == JobRunStatus.SUCCEEDED),
        "score_runs": statuses.get("succeeded", 0),
        "score_fire_times": len(score_rows),
        "score_by_status": dict(sorted(statuses.items())),
        "heartbeat_runs": sum(1 for r in history if r.job == "heartbeat"),
        "outbox_runs": sum(1 for r in history if r.job == "outbox"),
        "duplicate_runs": duplicates,
        "partial_rankings": partial,
        "left_running": sum(1 for r in history if r.status == JobRunStatus.RUNNING),
        "left_abandoned": sum(
            1 for r in history if r.status == JobRunStatus.ABANDONED and r.job == "score"
        ),
        "abandoned_other_jobs": dict(
            Counter(
                r.job for r in history if r.status == JobRunStatus.ABANDONED and r.job != "score"
            )
        ),
        "risk_runs_left_running": sum(1 for r in risk_runs if r.status == RunStatus.RUNNING),
        "missed_runs_recovered": sum(
            1 for r in history if r.recovered_at is not None and r.status == JobRunStatus.SUCCEEDED
        ),
        "kills": kills,
        "restarts": restarts,
    }


def settle(ctx: Context, live: set[int], timeout: float) -> None:
    """Wait until the heartbeat has marked every run of a killed process abandoned and
    recovered every killed scoring run."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        with ctx.sessions() as session:
            pending = session.scalar(
                select(func.count())
                .select_from(JobRun)
                .where(
                    ((JobRun.job == "score") & (JobRun.status == JobRunStatus.ABANDONED))
                    | ((JobRun.status == JobRunStatus.RUNNING) & JobRun.pid.not_in(live)),
                )
            )
        if not pending:
            return
        time.sleep(0.25)


def one_backend(name: str, url: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    ctx = Context(settings=Settings(database_url=url, model_path=None), clock=SystemClock())
    upgrade(ctx.engine)
    atms = work / "atms.csv"
    write_atms(atms, args.atms)
    accepted = ingest_atms(ctx.sessions, path=atms, profile="geldmaat", clock=ctx.clock).accepted
    incidents = ingest_incidents(ctx.sessions, path=NEWS, profile="news", clock=ctx.clock).accepted
    jobs_dir = work / "jobs"
    jobs_dir.mkdir()
    (jobs_dir / "bench.toml").write_text(jobs_toml(args.score_every), encoding="utf-8")
    logs = work / "logs"
    logs.mkdir()
    print(
        f"{name}: {accepted} ATMs, {incidents} incidents; two schedulers, score every "
        f"{args.score_every} s, {args.seconds} s, {args.kills} SIGKILLs during scoring "
        f"(logs: {logs})",
        flush=True,
    )
    schedulers = [Scheduler(label, url, jobs_dir, logs) for label in ("a", "b")]
    for s in schedulers:
        s.start()
    for s in schedulers:
        s.wait_ready()
    kills = restarts = partial_seen = 0
    started = time.time()
    # spread the kills over the run, leaving the first runs and the last 20 % alone
    kill_at = [
        started + args.seconds * (0.1 + 0.7 * k / max(args.kills, 1)) for k in range(args.kills)
    ]
    restart_at: dict[str, float] = {}
    try:
        while time.time() - started < args.seconds:
            now = time.time()
            for s in schedulers:
                if s.label in restart_at and now >= restart_at[s.label]:
                    del restart_at[s.label]
                    s.start()
                    restarts += 1
            ready = {pid: s for s in schedulers if s.ready() and (pid := s.pid) is not None}
            # kill only while both run, so that one scheduler is always up
            if kill_at and now >= kill_at[0] and len(ready) == len(schedulers):
                victim = scoring_victim(ctx, ready)
                if victim is not None:
                    victim.kill()
                    kills += 1
                    kill_at.pop(0)
                    print(
                        f"  t={time.time() - started:5.1f}s SIGKILL {victim.label} mid-scoring",
                        flush=True,
                    )
                    restart_at[victim.label] = time.time() + random.uniform(0.3, 1.5)
                    continue
            if not visible_ranking_ok(ctx):
                partial_seen += 1
            time.sleep(0.01)
        for s in schedulers:
            if s.label in restart_at:
                s.start()
                restarts += 1
        for s in schedulers:
            s.wait_ready()
        live = {pid for s in schedulers if (pid := s.pid) is not None}
        settle(ctx, live, timeout=30)
    finally:
        codes = [s.stop() for s in schedulers]
    print(f"{name}: schedulers stopped (exit codes {codes})", flush=True)
    result = count(ctx, kills, partial_seen, restarts)
    result["database"] = name
    result["seconds"] = args.seconds
    ctx.close()
    print(f"{name}: {json.dumps(result)}", flush=True)
    return result


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        worker(sys.argv[2], Path(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="run time per backend")
    parser.add_argument("--kills", type=int, default=5, help="SIGKILLs per backend")
    parser.add_argument("--atms", type=int, default=500)
    parser.add_argument("--score-every", type=int, default=3, help="seconds")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--postgres", default=DEFAULT_PG, help="server (admin) URL, loopback")
    args = parser.parse_args()
    results = []
    for backend in args.backends.split(","):
        work = Path(tempfile.mkdtemp(prefix=f"atm-risk-sched-{backend}-"))
        if backend == "sqlite":
            results.append(one_backend("sqlite", f"sqlite:///{work / 'bench.sqlite3'}", args, work))
            continue
        admin_url = make_url(args.postgres)
        if admin_url.host not in ("127.0.0.1", "localhost", "::1"):
            raise SystemExit("--postgres: loopback servers only")
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        db = f"atm_risk_sched_{uuid.uuid4().hex[:10]}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{db}"'))
        try:
            url = admin_url.set(database=db).render_as_string(hide_password=False)
            results.append(one_backend("postgresql", url, args, work))
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
            admin.dispose()
    totals = {
        key: sum(r[key] for r in results)
        for key in (
            "runs",
            "score_runs",
            "duplicate_runs",
            "partial_rankings",
            "left_running",
            "left_abandoned",
            "missed_runs_recovered",
            "kills",
        )
    }
    print(json.dumps({**totals, "by_database": results}))


if __name__ == "__main__":
    main()
