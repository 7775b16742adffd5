"""``atm-risk scheduler`` and ``atm-risk jobs list|run|history``.

Wire into the main app with ``app.add_typer(jobs_app, name="jobs")`` and
``app.command("scheduler")(scheduler)``.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from atm_risk.app import Context
from atm_risk.cli_common import context_of, fail, out, sessions_of
from atm_risk.scheduler import runs
from atm_risk.scheduler.definitions import (
    DEFAULT_JOBS_DIR,
    JobDefinition,
    JobFileError,
    load_definitions,
)
from atm_risk.scheduler.models import JobRun, RunOrigin
from atm_risk.scheduler.runner import Runner, UnknownJobError
from atm_risk.scheduler.service import run_scheduler

jobs_app = typer.Typer(no_args_is_help=True, help="Scheduled jobs: definitions, runs, history.")

JobsDir = Annotated[
    Path,
    typer.Option(
        "--jobs-dir", envvar="ATM_RISK_JOBS_DIR", help="Folder of the job definitions (*.toml)."
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="JSON instead of a table.")]


def _definitions(jobs_dir: Path) -> list[JobDefinition]:
    try:
        return load_definitions(jobs_dir)
    except JobFileError as exc:
        fail(str(exc))


def _runner(c: Context, definitions: list[JobDefinition], **kwargs: Any) -> Runner:
    return Runner(
        sessions=sessions_of(c),
        settings=c.settings,
        clock=c.clock,
        definitions=definitions,
        **kwargs,
    )


def _iso(when: datetime | None) -> str | None:
    return when.astimezone(UTC).isoformat() if when is not None else None


def _short(when: datetime | None) -> str:
    return f"{when.astimezone(UTC):%Y-%m-%d %H:%M:%S}Z" if when is not None else ""


def scheduler(
    ctx: typer.Context,
    jobs_dir: JobsDir = DEFAULT_JOBS_DIR,
    log_level: Annotated[str, typer.Option(help="Log level of atm-risk's scheduler.")] = "INFO",
) -> None:
    """Run the scheduled jobs (APScheduler, UTC) until SIGTERM/SIGINT.

    Every fire time runs once across all schedulers on this database (claimed in
    job_runs); a second scheduler started by mistake doubles nothing."""
    c = context_of(ctx)
    definitions = _definitions(jobs_dir)
    level = getattr(logging, log_level.upper(), None)
    if not isinstance(level, int):
        fail(f"--log-level: unknown level {log_level!r}")
    logging.basicConfig(stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("atm_risk").setLevel(level)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    run_scheduler(_runner(c, definitions, background_recovery=True), definitions)


@jobs_app.command("list")
def jobs_list(
    ctx: typer.Context, jobs_dir: JobsDir = DEFAULT_JOBS_DIR, as_json: AsJson = False
) -> None:
    """The job definitions, their next run time and the last recorded run."""
    c = context_of(ctx)
    definitions = _definitions(jobs_dir)
    now = c.clock.now()
    with sessions_of(c)() as session:
        last = runs.last_runs(session, [d.name for d in definitions])
    rows: list[dict[str, Any]] = []
    for d in definitions:
        nxt = d.next_fire_time(now) if d.enabled else None
        run = last.get(d.name)
        rows.append(
            {
                "name": d.name,
                "run": d.run,
                "schedule": d.describe(),
                "enabled": d.enabled,
                "next_run": _iso(nxt),
                "next_run_local": nxt.astimezone(d.zone).isoformat() if nxt else None,
                "last_scheduled_for": _iso(run.scheduled_for) if run else None,
                "last_status": str(run.status) if run else None,
                "last_error": run.error if run else None,
            }
        )
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table(title="Jobs")
    for col in ("name", "run", "schedule", "next run", "last run", "last status"):
        table.add_column(col, overflow="fold")
    for r, d in zip(rows, definitions, strict=True):
        nxt = d.next_fire_time(now) if d.enabled else None
        local = f" ({nxt.astimezone(d.zone):%H:%M %Z})" if nxt and d.trigger == "cron" else ""
        table.add_row(
            r["name"],
            r["run"],
            r["schedule"],
            (_short(nxt) + local) if nxt else "disabled",
            _short(last[d.name].scheduled_for) if d.name in last else "",
            r["last_status"] or "",
        )
    out.print(table)


@jobs_app.command("run")
def jobs_run(ctx: typer.Context, name: str, jobs_dir: JobsDir = DEFAULT_JOBS_DIR) -> None:
    """Run job NAME now (claimed and recorded like a scheduled run, scheduled for now)."""
    c = context_of(ctx)
    runner = _runner(c, _definitions(jobs_dir))
    try:
        outcome = runner.execute(name, c.clock.now(), origin=RunOrigin.MANUAL, raise_errors=False)
    except UnknownJobError as exc:
        fail(str(exc))
    detail = json.dumps(outcome.result, default=str) if outcome.result else ""
    message = f"{name}: {outcome.status}" + (f" (run {outcome.run_id})" if outcome.run_id else "")
    if outcome.status in ("succeeded", "lost"):
        out.print(f"{message} {detail}".rstrip(), markup=False)
        return
    fail(f"{message}: {outcome.error}", 1)


def _history_row(r: JobRun) -> dict[str, Any]:
    duration = (
        round((r.finished_at - r.started_at).total_seconds(), 3)
        if r.started_at is not None and r.finished_at is not None
        else None
    )
    return {
        "id": r.id,
        "job": r.job,
        "scheduled_for": _iso(r.scheduled_for),
        "origin": str(r.origin),
        "status": str(r.status),
        "attempts": r.attempts,
        "started_at": _iso(r.started_at),
        "finished_at": _iso(r.finished_at),
        "duration_s": duration,
        "recovered_at": _iso(r.recovered_at),
        "host": r.host,
        "pid": r.pid,
        "error": r.error,
        "result": r.result,
    }


@jobs_app.command("history")
def jobs_history(
    ctx: typer.Context,
    job: Annotated[str | None, typer.Option("--job", help="Only this job.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000)] = 20,
    as_json: AsJson = False,
) -> None:
    """The latest recorded runs (newest fire time first): claims, outcomes, misses,
    skipped overlaps, abandoned and recovered runs."""
    c = context_of(ctx)
    with sessions_of(c)() as session:
        rows = [_history_row(r) for r in runs.history(session, job=job, limit=limit)]
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table(title="Job runs")
    for col in ("id", "job", "scheduled for", "origin", "status", "tries", "took", "host/pid"):
        table.add_column(col, overflow="fold")
    table.add_column("error", overflow="fold", max_width=60)
    for r in rows:
        table.add_row(
            str(r["id"]),
            r["job"],
            r["scheduled_for"],
            r["origin"],
            r["status"] + (" (recovered)" if r["recovered_at"] else ""),
            str(r["attempts"]),
            f"{r['duration_s']:.1f}s" if r["duration_s"] is not None else "",
            f"{r['host'] or ''}/{r['pid'] or ''}",
            (r["error"] or "")[:200],
        )
    out.print(table)
