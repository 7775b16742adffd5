"""Job definitions (jobs/*.toml): validation, and fire times across daylight-saving changes
computed by APScheduler's own triggers."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from atm_risk.scheduler.definitions import JobFileError, load_definitions, parse_file
from atm_risk.scheduler.jobs import REGISTRY

JOBS = Path(__file__).resolve().parents[2] / "jobs"
AMS = ZoneInfo("Europe/Amsterdam")
# 2026/2027 changes in Europe/Amsterdam: spring forward, fall back
DST_DAYS = [date(2026, 3, 29), date(2026, 10, 25), date(2027, 3, 28), date(2027, 10, 31)]


def test_shipped_definitions() -> None:
    defs = load_definitions(JOBS)
    assert {d.name for d in defs} == {
        "score",
        "outbox",
        "digest_daily",
        "digest_weekly",
        "heartbeat",
    }
    for d in defs:
        assert d.max_instances == 1
        assert d.run in REGISTRY
        if d.trigger == "cron":
            assert d.timezone == "Europe/Amsterdam"
    by = {d.name: d for d in defs}
    assert by["outbox"].seconds == 15
    assert by["outbox"].trigger == "interval"
    assert by["heartbeat"].seconds == 60
    assert by["score"].alert_after_failures == 2
    assert by["digest_weekly"].args == {"period": "weekly", "zone": "Europe/Amsterdam"}


@pytest.mark.parametrize("dst_day", DST_DAYS)
def test_daily_digest_fires_once_per_local_day_at_0700_across_dst(dst_day: date) -> None:
    digest = {d.name: d for d in load_definitions(JOBS)}["digest_daily"]
    start = datetime.combine(dst_day - timedelta(days=5), datetime.min.time(), tzinfo=AMS)
    end = start + timedelta(days=11)
    times = digest.fire_times(start.astimezone(UTC), end.astimezone(UTC))
    local = [t.astimezone(AMS) for t in times]
    days = [t.date() for t in local]
    assert days == [dst_day + timedelta(days=k) for k in range(-5, 6)]  # once per day
    assert all((t.hour, t.minute, t.second) == (7, 0, 0) for t in local)
    offsets = Counter(t.utcoffset() for t in local)
    assert set(offsets) == {timedelta(hours=1), timedelta(hours=2)}  # both CET and CEST
    for t in times:  # 06:00Z in winter, 05:00Z in summer
        expected = 6 if t.astimezone(AMS).utcoffset() == timedelta(hours=1) else 5
        assert (t.hour, t.minute) == (expected, 0)


@pytest.mark.parametrize("dst_day", DST_DAYS)
def test_score_at_2130_local_in_cet_and_cest(dst_day: date) -> None:
    score = {d.name: d for d in load_definitions(JOBS)}["score"]
    before = datetime.combine(dst_day - timedelta(days=1), datetime.min.time(), tzinfo=AMS)
    times = score.fire_times(before.astimezone(UTC), (before + timedelta(days=3)).astimezone(UTC))
    assert [t.astimezone(AMS).date() for t in times] == [
        dst_day - timedelta(days=1),
        dst_day,
        dst_day + timedelta(days=1),
    ]
    for t in times:
        cet = t.astimezone(AMS).utcoffset() == timedelta(hours=1)
        assert (t.hour, t.minute) == ((20, 30) if cet else (19, 30))
        assert t.astimezone(AMS).strftime("%H:%M") == "21:30"
    # recovery is allowed until the night window, 23:00 local, on both sides of the change
    for t in times:
        deadline = score.recovery_deadline(t)
        assert deadline is not None
        assert deadline.astimezone(AMS).strftime("%H:%M") == "23:00"
        assert deadline - t == timedelta(minutes=90)


def test_weekly_digest_monday_0800_local() -> None:
    weekly = {d.name: d for d in load_definitions(JOBS)}["digest_weekly"]
    times = weekly.fire_times(datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 30, tzinfo=UTC))
    assert len(times) == 9
    for t in times:
        lt = t.astimezone(AMS)
        assert lt.weekday() == 0
        assert lt.strftime("%H:%M") == "08:00"


def test_digest_recovery_until_end_of_local_day() -> None:
    digest = {d.name: d for d in load_definitions(JOBS)}["digest_daily"]
    t = datetime(2026, 10, 25, 6, 0, tzinfo=UTC)  # 07:00 CET on the fall-back day
    deadline = digest.recovery_deadline(t)
    assert deadline == datetime(2026, 10, 25, 23, 0, tzinfo=UTC)  # local midnight
    assert {d.name: d for d in load_definitions(JOBS)}["outbox"].recovery_deadline(t) is None


def test_interval_fire_times_are_the_same_on_every_scheduler() -> None:
    outbox = {d.name: d for d in load_definitions(JOBS)}["outbox"]
    a = outbox.next_fire_time(datetime(2026, 5, 1, 12, 0, 3, 120_000, tzinfo=UTC))
    b = outbox.next_fire_time(datetime(2026, 5, 1, 12, 0, 14, 900_000, tzinfo=UTC))
    assert a == b == datetime(2026, 5, 1, 12, 0, 15, tzinfo=UTC)


GOOD = """
[[jobs]]
name = "score"
run = "score"
trigger = "cron"
cron = { hour = 21, minute = 30 }
timezone = "Europe/Amsterdam"
misfire_grace_time = 60
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (GOOD.replace('timezone = "Europe/Amsterdam"\n', ""), "needs an explicit IANA `timezone`"),
        (GOOD.replace("Europe/Amsterdam", "Europe/Atlantis"), "timezone: unknown IANA time zone"),
        (GOOD.replace('run = "score"', 'run = "nope"'), "run: unknown job function 'nope'"),
        (GOOD.replace("hour = 21", "hour = 25"), "higher than the maximum value (23)"),
        (GOOD.replace("misfire_grace_time = 60", "misfire_grace_time = 0"), "misfire_grace_time"),
        (GOOD + "max_instances = 2\n", "max_instances: Input should be 1"),
        (GOOD + "colaesce = true\n", "colaesce: Extra inputs are not permitted"),
        (GOOD + 'recover_until = "25:00"\n', "recover_until: expected a local time HH:MM"),
        (GOOD.replace('name = "score"', 'name = "Score!"'), "name: String should match"),
        ("[[jobs]\nname =", "not valid TOML"),
        ('name = "x"\n', "unknown top-level key(s) name; put jobs in [[jobs]] tables"),
        (
            '[[jobs]]\nname = "o"\nrun = "outbox"\ntrigger = "interval"\nmisfire_grace_time = 5\n',
            "an interval job needs `seconds`",
        ),
    ],
)
def test_a_bad_file_names_the_file_and_the_field(write, text: str, expected: str) -> None:  # type: ignore[no-untyped-def]
    path = write("bad.toml", text)
    with pytest.raises(JobFileError) as info:
        parse_file(path, registry=set(REGISTRY))
    message = str(info.value)
    assert str(path) in message
    assert expected in message


def test_duplicate_names_across_files_and_missing_folder(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text(GOOD, encoding="utf-8")
    (tmp_path / "b.toml").write_text(GOOD, encoding="utf-8")
    with pytest.raises(JobFileError, match=r"b\.toml: job 'score' is defined twice .*a\.toml"):
        load_definitions(tmp_path)
    with pytest.raises(JobFileError, match="folder not found"):
        load_definitions(tmp_path / "nope")
    (tmp_path / "b.toml").unlink()
    (d,) = load_definitions(tmp_path)
    assert d.name == "score"
    assert d.coalesce
    assert d.max_instances == 1


def test_importing_the_scheduler_starts_nothing() -> None:
    """The web app (or any import) never starts a scheduler: only run_scheduler does."""
    import subprocess
    import sys

    code = (
        "import threading\n"
        "import atm_risk.cli_jobs, atm_risk.scheduler.service, atm_risk.scheduler.runner\n"
        "import atm_risk.store\n"
        "assert threading.active_count() == 1, threading.enumerate()\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
