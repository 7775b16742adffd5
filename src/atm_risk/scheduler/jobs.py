"""The registry of job functions a definition's ``run`` names.

A job function takes a :class:`JobContext` and returns a small JSON-able summary (stored
in the run's ``result``) or None; raising marks the run failed with the error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session, sessionmaker

from atm_risk.clock import Clock
from atm_risk.config import Settings

if TYPE_CHECKING:
    from atm_risk.scheduler.runner import Runner


@dataclass(frozen=True)
class JobContext:
    """What a job body gets: the process' wiring and the run it executes."""

    sessions: sessionmaker[Session]
    settings: Settings
    clock: Clock
    job: str  # the definition's name
    scheduled_for: datetime  # the trigger's fire time (UTC), or "now" for a manual run
    run_id: int
    runner: Runner
    args: dict[str, Any] = field(default_factory=dict)


JobFunction = Callable[[JobContext], dict[str, Any] | None]

REGISTRY: dict[str, JobFunction] = {}


def register(name: str) -> Callable[[JobFunction], JobFunction]:
    """Decorator: make ``func`` runnable as ``run = "<name>"`` in a job definition."""

    def deco(func: JobFunction) -> JobFunction:
        if name in REGISTRY and REGISTRY[name] is not func:
            raise ValueError(f"job function {name!r} is registered already")
        REGISTRY[name] = func
        return func

    return deco


@register("score")
def score(ctx: JobContext) -> dict[str, Any]:
    """A scoring run as of the fire time, published atomically with its risk_change alerts,
    then the due deliveries. A crash leaves the run failed and the previous ranking."""
    from atm_risk.alerts.service import score_and_alert

    run, report = score_and_alert(
        ctx.sessions, ctx.settings, ctx.clock, as_of=ctx.scheduled_for, send=True
    )
    return {
        "risk_run_id": run.id,
        "n_scored": run.n_scored,
        "dispatch": str(report) if report else None,
    }


@register("outbox")
def outbox(ctx: JobContext) -> dict[str, Any]:
    """Enqueue due repeats of unacknowledged alerts, then drain the outbox once."""
    from atm_risk.alerts.service import drain, schedule_repeats

    repeats = schedule_repeats(ctx.sessions, ctx.settings, ctx.clock.now())
    report = drain(ctx.sessions, ctx.settings, ctx.clock)
    return {
        "repeats": repeats,
        "claimed": report.claimed,
        "sent": report.sent,
        "retried": report.retried,
        "failed": report.failed,
    }


@register("digest")
def digest(ctx: JobContext) -> dict[str, Any]:
    """This period's digest (args: period = daily | weekly, zone), once per local day,
    then its deliveries."""
    from atm_risk.alerts.service import build_digests, drain

    period = str(ctx.args.get("period", "daily"))
    zone = str(ctx.args.get("zone", "Europe/Amsterdam"))
    ids = build_digests(ctx.sessions, ctx.settings, ctx.clock, period=period, zone=zone)
    report = drain(ctx.sessions, ctx.settings, ctx.clock, ids=ids) if ids else None
    return {"period": period, "deliveries": len(ids), "dispatch": str(report) if report else None}


@register("heartbeat")
def heartbeat(ctx: JobContext) -> dict[str, Any]:
    """Record that a scheduler is alive (this run's row), mark abandoned runs and recover
    them when their policy allows, record fire times nobody ran, raise pipeline_health
    after failures in a row, prune old history."""
    return ctx.runner.check(ctx.clock.now())
