"""Job definitions: ``jobs/*.toml``, validated with pydantic.

Every file holds one or more ``[[jobs]]`` tables (the shipped folder has one file per job)::

    [[jobs]]
    name = "score"                      # stable id: the scheduler's job id and the history key
    run = "score"                       # a function of the registry (atm_risk.scheduler.jobs)
    trigger = "cron"                    # "cron" (wall clock, needs `timezone`) or "interval"
    cron = { hour = 21, minute = 30 }   # APScheduler CronTrigger fields
    timezone = "Europe/Amsterdam"       # explicit IANA zone of the wall-clock schedule
    misfire_grace_time = 1800           # seconds late a run may still start
    coalesce = true                     # several due fire times run once (the latest)
    max_instances = 1                   # the only value allowed
    timeout = 1200                      # seconds a claimed run may take before a dead owner's
                                        # row is marked abandoned
    recover_until = "23:00"             # re-run an abandoned/missed run once before this local
                                        # time of its own day ("24:00": the same day), and/or
    # recover_within = 600              # ... within this many seconds of its fire time
    alert_after_failures = 2            # missed/failed runs in a row -> pipeline_health alert
    keep_days = 30                      # history kept (pruned by the heartbeat)
    args = {}                           # keyword arguments of the job function

An interval job (``trigger = "interval"``, ``seconds = 15``) runs in UTC on fire times
aligned to multiples of its interval since 2000-01-01T00:00:00Z, so that every scheduler
computes the same fire times (the claim key).
"""

from __future__ import annotations

import tomllib
from collections.abc import Collection, Iterable
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

DEFAULT_JOBS_DIR = Path("jobs")
INTERVAL_ANCHOR = datetime(2000, 1, 1, tzinfo=UTC)
CRON_FIELDS = ("year", "month", "day", "week", "day_of_week", "hour", "minute", "second")


class JobFileError(ValueError):
    """A job definition file is missing, unreadable or invalid (the message names it)."""


class CronFields(BaseModel):
    """The fields of an APScheduler ``CronTrigger`` (unset fields: APScheduler defaults)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    year: int | str | None = None
    month: int | str | None = None
    day: int | str | None = None
    week: int | str | None = None
    day_of_week: int | str | None = None
    hour: int | str | None = None
    minute: int | str | None = None
    second: int | str | None = None

    def given(self) -> dict[str, int | str]:
        return {k: v for k in CRON_FIELDS if (v := getattr(self, k)) is not None}


def _local_time(value: str) -> tuple[int, int]:
    hh, sep, mm = value.partition(":")
    if not sep or not hh.isdigit() or not mm.isdigit() or len(mm) != 2:
        raise ValueError(f"expected a local time HH:MM (00:00 to 24:00), not {value!r}")
    h, m = int(hh), int(mm)
    if not (0 <= h <= 23 and 0 <= m <= 59) and (h, m) != (24, 0):
        raise ValueError(f"expected a local time HH:MM (00:00 to 24:00), not {value!r}")
    return h, m


class JobDefinition(BaseModel):
    """One scheduled job."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    run: str
    trigger: Literal["cron", "interval"]
    cron: CronFields | None = None
    timezone: str | None = None
    seconds: int | None = Field(None, ge=1)
    misfire_grace_time: int = Field(ge=1)
    coalesce: bool = True
    max_instances: Literal[1] = 1
    timeout: int = Field(3600, ge=1)
    recover_until: str | None = None
    recover_within: int | None = Field(None, ge=1)
    alert_after_failures: int | None = Field(None, ge=1)
    keep_days: int = Field(30, ge=1)
    args: dict[str, Any] = Field(default_factory=dict)
    enabled: bool = True

    @field_validator("run")
    @classmethod
    def _known_function(cls, value: str, info: ValidationInfo) -> str:
        known = (info.context or {}).get("registry")
        if known is not None and value not in known:
            raise ValueError(
                f"unknown job function {value!r}; choose one of: {', '.join(sorted(known))}"
            )
        return value

    @field_validator("timezone")
    @classmethod
    def _iana_zone(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA time zone {value!r}") from None
        return value

    @field_validator("recover_until")
    @classmethod
    def _hh_mm(cls, value: str | None) -> str | None:
        if value is not None:
            _local_time(value)
        return value

    @model_validator(mode="after")
    def _trigger_complete(self) -> JobDefinition:
        if self.trigger == "cron":
            if self.cron is None or not self.cron.given():
                raise ValueError("a cron job needs `cron = { hour = ..., minute = ... }`")
            if self.timezone is None:
                raise ValueError(
                    "a cron job needs an explicit IANA `timezone` (e.g. Europe/Amsterdam)"
                )
            if self.seconds is not None:
                raise ValueError("`seconds` belongs to interval jobs, not cron jobs")
        else:
            if self.seconds is None:
                raise ValueError("an interval job needs `seconds`")
            if self.cron is not None or self.timezone is not None:
                raise ValueError("interval jobs run in UTC: no `cron` and no `timezone`")
            if self.recover_until is not None:
                raise ValueError("`recover_until` (a local time) needs a cron job's timezone")
        self.make_trigger()  # an invalid cron expression fails here, with APScheduler's words
        return self

    # ------------------------------------------------------------------ schedule

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone or "UTC")

    def make_trigger(self) -> Any:
        """A new APScheduler trigger (CronTrigger in the job's zone, or IntervalTrigger)."""
        if self.trigger == "cron":
            assert self.cron is not None
            return CronTrigger(timezone=self.zone, **self.cron.given())
        assert self.seconds is not None
        return IntervalTrigger(seconds=self.seconds, start_date=INTERVAL_ANCHOR, timezone=UTC)

    def next_fire_time(self, now: datetime, trigger: Any = None) -> datetime | None:
        nxt = (trigger or self.make_trigger()).get_next_fire_time(None, now)
        return None if nxt is None else nxt.astimezone(UTC)

    def fire_times(self, start: datetime, end: datetime, *, limit: int = 10_000) -> list[datetime]:
        """The trigger's fire times in [start, end] (UTC), in order, as APScheduler computes
        them (each from the previous one)."""
        trigger = self.make_trigger()
        out: list[datetime] = []
        nxt = trigger.get_next_fire_time(None, start)
        while nxt is not None and nxt <= end and len(out) < limit:
            out.append(nxt.astimezone(UTC))
            nxt = trigger.get_next_fire_time(nxt, nxt + timedelta(microseconds=1))
        return out

    def describe(self) -> str:
        if self.trigger == "interval":
            return f"every {self.seconds} s (UTC)"
        assert self.cron is not None
        fields = " ".join(f"{k}={v}" for k, v in self.cron.given().items())
        return f"cron {fields} {self.timezone}"

    # ------------------------------------------------------------------ recovery

    @property
    def recovers(self) -> bool:
        return self.recover_until is not None or self.recover_within is not None

    def recovery_deadline(self, scheduled_for: datetime) -> datetime | None:
        """Until when a run of ``scheduled_for`` that never completed may be re-run once,
        or None when the job does not recover missed runs."""
        deadlines: list[datetime] = []
        if self.recover_within is not None:
            deadlines.append(scheduled_for + timedelta(seconds=self.recover_within))
        if self.recover_until is not None:
            h, m = _local_time(self.recover_until)
            day: date = scheduled_for.astimezone(self.zone).date()
            if (h, m) == (24, 0):
                day, h = day + timedelta(days=1), 0
            local = datetime.combine(day, time(h, m), tzinfo=self.zone)
            deadlines.append(local.astimezone(UTC))
        return min(deadlines) if deadlines else None


def _format_errors(exc: ValidationError) -> list[str]:
    lines = []
    for e in exc.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(job)"
        msg = str(e["msg"]).removeprefix("Value error, ")
        lines.append(f"{loc}: {msg}")
    return lines


def parse_file(path: Path, *, registry: Collection[str] | None = None) -> list[JobDefinition]:
    """The ``[[jobs]]`` of one TOML file; JobFileError names the file, the entry and field."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise JobFileError(f"{path}: cannot read: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise JobFileError(f"{path}: not valid TOML: {exc}") from exc
    extra = sorted(set(data) - {"jobs"})
    if extra:
        raise JobFileError(
            f"{path}: unknown top-level key(s) {', '.join(extra)}; put jobs in [[jobs]] tables"
        )
    entries = data.get("jobs")
    if not isinstance(entries, list) or not entries:
        raise JobFileError(f"{path}: no [[jobs]] tables")
    out = []
    context = {"registry": registry} if registry is not None else None
    for k, entry in enumerate(entries):
        name = entry.get("name") if isinstance(entry, dict) else None
        where = f"{path}: jobs[{k}]" + (f" ({name})" if isinstance(name, str) else "")
        try:
            out.append(JobDefinition.model_validate(entry, context=context))
        except ValidationError as exc:
            raise JobFileError(f"{where}: " + "; ".join(_format_errors(exc))) from None
    return out


def load_definitions(
    directory: Path = DEFAULT_JOBS_DIR, *, registry: Collection[str] | None = None
) -> list[JobDefinition]:
    """Every job of ``directory/*.toml`` (files in name order), names unique across files.

    ``registry``: the job function names allowed for ``run`` (default: the registry of
    :mod:`atm_risk.scheduler.jobs`)."""
    if registry is None:
        from atm_risk.scheduler.jobs import REGISTRY

        registry = set(REGISTRY)
    if not directory.is_dir():
        raise JobFileError(f"job definitions folder not found: {directory}")
    files = sorted(directory.glob("*.toml"))
    if not files:
        raise JobFileError(f"{directory}: no job definition files (*.toml)")
    return _unique((f, d) for f in files for d in parse_file(f, registry=registry))


def _unique(items: Iterable[tuple[Path, JobDefinition]]) -> list[JobDefinition]:
    seen: dict[str, Path] = {}
    out = []
    for path, definition in items:
        if definition.name in seen:
            raise JobFileError(
                f"{path}: job {definition.name!r} is defined twice "
                f"(also in {seen[definition.name]})"
            )
        seen[definition.name] = path
        out.append(definition)
    return out
