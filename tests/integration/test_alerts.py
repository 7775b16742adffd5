"""The immediate path: a reported attack -> gang_active alert -> e-mail to the routed
recipients, through a real SMTP server on 127.0.0.1, on both database backends."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from atm_risk.alerts.models import Alert, AlertKind, Delivery, DeliveryStatus, Silence
from atm_risk.alerts.service import ReportError, drain, report_incident, schedule_repeats
from atm_risk.areas.service import ingest_area
from atm_risk.clock import FrozenClock
from atm_risk.config import Settings
from atm_risk.ingest.run import ingest_atms
from tests.conftest import DATA
from tests.smtp_server import SmtpTestServer

ATMS = (
    "atm_id,operator,lat,lon,site_type,night_closure,country\n"
    "U1,BankA,52.0907,5.1214,free_standing,true,NL\n"
    "U2,BankB,52.0930,5.1100,shop,true,NL\n"
    "A1,BankA,52.1561,5.3878,wall,true,NL\n"
    "G1,BankA,53.2194,6.5665,shop,true,NL\n"
)
MOTORWAY = (
    "name,road_number,exit_number,category,motorway_access,lat,lon\n"
    "Utrecht-Centrum,A28,1,exit,1,52.0950,5.1400\n"
    "Groningen-Zuid,A28,38,exit,1,53.2000,6.5700\n"
)
ROUTING = """
version = 1

[[receivers]]
name = "bank-a"
role = "bank"
operator = "banka"
email = ["security@banka.example"]

[[receivers]]
name = "bank-b"
role = "bank"
operator = "bankb"
email = ["security@bankb.example"]

[[receivers]]
name = "police-utrecht"
role = "police"
regions = ["Utrecht"]
email = ["rtic@police-utrecht.example"]

[[receivers]]
name = "police-groningen"
role = "police"
regions = ["Groningen"]
email = ["rtic@police-groningen.example"]

[[receivers]]
name = "ops"
role = "operator"
email = ["ops@atm-risk.example"]

[[routes]]
kinds = ["gang_active"]
receivers = ["police-utrecht", "police-groningen", "bank-a", "bank-b", "ops"]

[[routes]]
kinds = ["pipeline_health"]
receivers = ["ops"]
"""
NOW = datetime(2026, 11, 28, 3, 30, tzinfo=UTC)


@pytest.fixture
def smtp() -> Iterator[SmtpTestServer]:
    with SmtpTestServer() as server:
        yield server


@pytest.fixture
def setup(
    sessions: sessionmaker[Session], write, tmp_path: Path, smtp: SmtpTestServer
) -> tuple[Settings, FrozenClock]:
    clock = FrozenClock(NOW)
    ingest_atms(sessions, path=write("a.csv", ATMS), clock=clock)
    ingest_area(
        sessions,
        name="nl_provinces",
        path=DATA / "nl_admin_cbs/provincies_2022.geojson",
        clock=clock,
    )
    ingest_area(sessions, name="nl_vild_points", path=write("m.csv", MOTORWAY), clock=clock)
    settings = Settings(
        model_path=None,
        alerts={
            "routing_file": write("routing.toml", ROUTING),
            "smtp": smtp.smtp_config(),
            "retry_base_s": 1,
            "max_attempts": 3,
        },
    )
    return settings, clock


ATTACK = {
    "occurred_at": "2026-11-28T03:10:00Z",
    "lat": 52.0915,
    "lon": 5.1180,
    "method": "explosive_solid",
    "locality": "Utrecht",
    "geocode_precision": "exact",
}


def test_a_reported_attack_reaches_police_of_the_region_and_the_banks_concerned(
    sessions: sessionmaker[Session], setup: tuple[Settings, FrozenClock], smtp: SmtpTestServer
) -> None:
    settings, clock = setup
    t1 = datetime.now(UTC)
    result = report_incident(sessions, settings, clock, dict(ATTACK))
    t2 = datetime.now(UTC)
    assert result.dispatch is not None
    assert result.dispatch.sent == 4  # police Utrecht, bank A, bank B, operators
    got = {m.rcpt_tos[0]: m for m in smtp.messages}
    assert set(got) == {
        "rtic@police-utrecht.example",
        "security@banka.example",
        "security@bankb.example",
        "ops@atm-risk.example",
    }  # not the Groningen police: the attack is in Utrecht
    for message in got.values():
        assert t1 <= message.received_at <= t2
    police = got["rtic@police-utrecht.example"].message.get_body(("plain",)).get_content()
    assert "explosive solid attack 2026-11-28 04:10 in Utrecht" in police  # local time
    assert "A28 exit 1 Utrecht-Centrum" in police  # the escape route
    assert "BankA/U1" in police or "banka/U1" in police
    assert "EUR" not in police  # police never see money figures
    bank_b = got["security@bankb.example"].message.get_body(("plain",)).get_content()
    assert "U2" in bank_b
    assert "U1" not in bank_b
    assert "A1" not in bank_b
    assert "TEMPORARY SHUTDOWN recommended" in bank_b
    html = got["security@banka.example"].message.get_body(("html",)).get_content()
    assert "<table" in html
    # one Message-ID per delivery, stored
    with sessions() as s:
        rows = s.scalars(select(Delivery).order_by(Delivery.id)).all()
        assert {r.message_id for r in rows} == {m.message_id for m in smtp.messages}
        assert all(r.status == DeliveryStatus.SENT and r.attempts == 1 for r in rows)


def test_one_spree_is_one_alert_updated_and_repeats_stop_when_acknowledged(
    sessions: sessionmaker[Session], setup: tuple[Settings, FrozenClock], smtp: SmtpTestServer
) -> None:
    settings, clock = setup
    first = report_incident(sessions, settings, clock, dict(ATTACK))
    clock.advance(timedelta(hours=1))
    second = report_incident(
        sessions,
        settings,
        clock,
        {
            **ATTACK,
            "occurred_at": "2026-11-28T04:05:00Z",
            "lat": 52.1561,
            "lon": 5.3878,
            "locality": "Amersfoort",
        },
    )
    assert first.alert_id == second.alert_id  # same region, within the window: updated
    smtp.wait_for(8)
    updates = [m for m in smtp.messages if "UPDATE" in (m.subject or "")]
    assert len(updates) == 4
    assert "2 attacks in Utrecht" in (updates[0].subject or "")
    with sessions() as s:
        alert = s.get_one(Alert, first.alert_id)
        assert alert.version == 2
        assert [i["place"] for i in alert.payload["incidents"]] == ["Utrecht", "Amersfoort"]
    # unacknowledged: repeated after the interval
    clock.advance(timedelta(minutes=61))
    assert schedule_repeats(sessions, settings, clock.now()) == 4
    drain(sessions, settings, clock)
    assert len([m for m in smtp.messages if "REPEAT" in (m.subject or "")]) == 4
    # acknowledged: no more repeats
    from atm_risk.alerts.ack import acknowledge

    with sessions.begin() as s:
        acknowledge(s, first.alert_id, "duty officer Jansen", clock.now())
    clock.advance(timedelta(minutes=61))
    assert schedule_repeats(sessions, settings, clock.now()) == 0


def test_a_silence_suppresses_bank_mail_but_never_gang_active_to_police(
    sessions: sessionmaker[Session], setup: tuple[Settings, FrozenClock], smtp: SmtpTestServer
) -> None:
    settings, clock = setup
    with sessions.begin() as s:
        s.add(
            Silence(
                kind="gang_active",
                region=None,
                operator_code=None,
                receiver=None,
                severity=None,
                creator="ops",
                comment="maintenance",
                starts_at=NOW - timedelta(hours=1),
                ends_at=NOW + timedelta(hours=1),
                created_at=NOW,
            )
        )
    result = report_incident(sessions, settings, clock, dict(ATTACK))
    assert result.dispatch is not None
    assert result.dispatch.sent == 1
    assert [m.rcpt_tos[0] for m in smtp.messages] == ["rtic@police-utrecht.example"]
    with sessions() as s:
        statuses = sorted(str(d.status) for d in s.scalars(select(Delivery)))
    assert statuses == ["sent", "suppressed", "suppressed", "suppressed"]  # recorded, not lost


def test_smtp_down_then_up_delivers_everything_once_with_retries_logged(
    sessions: sessionmaker[Session], setup: tuple[Settings, FrozenClock], smtp: SmtpTestServer
) -> None:
    settings, clock = setup
    smtp.stop()
    report_incident(sessions, settings, clock, dict(ATTACK))
    with sessions() as s:
        rows = s.scalars(select(Delivery)).all()
        assert {str(r.status) for r in rows} == {"pending"}
        assert all(r.attempts == 1 and r.history[0]["outcome"] == "transient" for r in rows)
    smtp.start()
    clock.advance(timedelta(seconds=1))
    report = drain(sessions, settings, clock)
    assert report.sent == 4
    assert len(smtp.messages) == 4
    assert len({m.message_id for m in smtp.messages}) == 4  # none twice
    with sessions() as s:
        assert all(r.attempts == 2 for r in s.scalars(select(Delivery)))


def test_a_refused_recipient_fails_for_good_and_tells_the_operators(
    sessions: sessionmaker[Session], setup: tuple[Settings, FrozenClock], smtp: SmtpTestServer
) -> None:
    settings, clock = setup
    smtp.rcpt_replies["security@bankb.example"] = "550 5.1.1 no such user"
    report_incident(sessions, settings, clock, dict(ATTACK))
    with sessions() as s:
        failed = s.scalars(select(Delivery).where(Delivery.status == DeliveryStatus.FAILED)).all()
        assert [f.address for f in failed] == ["security@bankb.example"]
        assert failed[0].last_code == 550
        health = s.scalars(select(Alert).where(Alert.kind == "pipeline_health")).all()
        assert len(health) == 1
    drain(sessions, settings, clock)
    ops = [
        m
        for m in smtp.messages_for("ops@atm-risk.example")
        if "pipeline health" in (m.subject or "")
    ]
    assert len(ops) == 1
    assert "security@bankb.example" in ops[0].message.get_body(("plain",)).get_content()


def test_an_invalid_report_writes_nothing(
    sessions: sessionmaker[Session], setup: tuple[Settings, FrozenClock], smtp: SmtpTestServer
) -> None:
    settings, clock = setup
    with pytest.raises(ReportError, match="lat"):
        report_incident(sessions, settings, clock, {**ATTACK, "lat": 95})
    with pytest.raises(ReportError, match="future"):
        report_incident(sessions, settings, clock, {**ATTACK, "occurred_at": "2026-11-29T03:00Z"})
    with sessions() as s:
        assert s.scalars(select(Alert)).all() == []
    assert smtp.messages == []


DIGEST_ROUTE = """
[[routes]]
kinds = ["digest"]
receivers = ["bank-b", "police-utrecht", "ops"]
"""


def test_the_daily_digest_is_scoped_per_recipient_with_map_and_csv_once_a_day(
    sessions: sessionmaker[Session],
    setup: tuple[Settings, FrozenClock],
    smtp: SmtpTestServer,
    write,
) -> None:
    import csv
    import io

    from atm_risk.alerts.service import build_digests
    from atm_risk.risk.service import run_scoring

    settings, clock = setup
    routing = write("routing2.toml", ROUTING + DIGEST_ROUTE)
    settings = settings.model_copy(
        update={"alerts": settings.alerts.model_copy(update={"routing_file": routing})}
    )
    report_incident(sessions, settings, clock, dict(ATTACK), send=False)
    run_scoring(sessions, settings=settings, clock=clock)
    clock.advance(timedelta(hours=3))
    ids = build_digests(sessions, settings, clock, period="daily")
    assert len(ids) == 3
    assert build_digests(sessions, settings, clock, period="daily") == []  # once a day
    drain(sessions, settings, clock, ids=ids)
    got = {m.rcpt_tos[0]: m.message for m in smtp.messages}
    assert set(got) == {
        "security@bankb.example",
        "rtic@police-utrecht.example",
        "ops@atm-risk.example",
    }

    def ranked(message) -> list[dict[str, str]]:  # type: ignore[no-untyped-def]
        part = next(p for p in message.iter_attachments() if p.get_filename().endswith(".csv"))
        return list(csv.DictReader(io.StringIO(part.get_content())))

    assert {r["atm_id"] for r in ranked(got["security@bankb.example"])} == {"U2"}
    police_rows = ranked(got["rtic@police-utrecht.example"])
    assert {r["atm_id"] for r in police_rows} == {"U1", "U2", "A1"}  # not G1 (Groningen)
    assert not any("loss" in k for k in police_rows[0])
    assert {r["atm_id"] for r in ranked(got["ops@atm-risk.example"])} == {"U1", "U2", "A1", "G1"}
    html = got["ops@atm-risk.example"].get_body(("html",))
    assert 'src="cid:riskmap"' in html.get_content()
    pngs = [p for p in got["ops@atm-risk.example"].walk() if p.get_content_type() == "image/png"]
    assert len(pngs) == 1
    assert pngs[0]["Content-ID"] == "<riskmap>"
    assert pngs[0].get_content()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_scoring_run_after_an_attack_sends_risk_change_in_its_transaction(
    sessions: sessionmaker[Session],
    setup: tuple[Settings, FrozenClock],
    smtp: SmtpTestServer,
    write,
) -> None:
    from atm_risk.alerts.service import score_and_alert

    settings, clock = setup
    route = (
        '[[routes]]\nkinds = ["risk_change"]\n'
        'receivers = ["bank-a", "bank-b", "police-utrecht", "police-groningen", "ops"]\n'
    )
    routing = write("routing3.toml", ROUTING + route)
    settings = settings.model_copy(
        update={"alerts": settings.alerts.model_copy(update={"routing_file": routing})}
    )
    _first, sent = score_and_alert(sessions, settings, clock)
    assert sent is not None
    assert sent.claimed == 0
    report_incident(sessions, settings, clock, dict(ATTACK), send=False)
    clock.advance(timedelta(minutes=30))
    second, sent = score_and_alert(sessions, settings, clock)
    with sessions() as s:
        alerts = s.scalars(select(Alert).where(Alert.kind == "risk_change")).all()
        assert [a.run_id for a in alerts] == [second.id]
        changes = {c["atm_id"]: c for c in alerts[0].payload["changes"]}
    assert changes["U1"]["new_action"] == "temporary_shutdown"
    assert changes["U2"]["new_action"] == "temporary_shutdown"
    assert "G1" not in changes  # far away: unchanged
    got = {
        m.rcpt_tos[0]: m.message.get_body(("plain",)).get_content()
        for m in smtp.messages
        if "Risk changed" in (m.subject or "")
    }
    assert set(got) == {
        "security@banka.example",
        "security@bankb.example",
        "rtic@police-utrecht.example",
        "ops@atm-risk.example",
    }
    assert "U2" in got["security@bankb.example"]
    assert "U1" not in got["security@bankb.example"]  # bank B never sees bank A's machine
    assert "temporary_shutdown" in got["rtic@police-utrecht.example"]


def test_smtp_down_during_a_burst_then_up_delivers_everything_once(
    sessions: sessionmaker[Session], setup: tuple[Settings, FrozenClock], smtp: SmtpTestServer
) -> None:
    settings, clock = setup
    smtp.stop()
    spots = [(52.0915, 5.1180), (53.2194, 6.5665), (52.1561, 5.3878), (53.21, 6.55)]
    for k, (lat, lon) in enumerate(spots * 3):
        report_incident(
            sessions,
            settings,
            clock,
            {
                **ATTACK,
                "incident_id": f"B{k}",
                "lat": lat,
                "lon": lon,
                "occurred_at": (clock.now() - timedelta(minutes=5)).isoformat(),
            },
        )
        clock.advance(timedelta(seconds=20))
    with sessions() as s:
        queued = s.scalars(select(Delivery)).all()
        assert queued
        assert {str(d.status) for d in queued} == {"pending"}
        n = len(queued)
    smtp.start()
    for _ in range(3):  # the scheduler's drain ticks
        clock.advance(timedelta(seconds=30))
        drain(sessions, settings, clock)
    with sessions() as s:
        rows = s.scalars(select(Delivery)).all()
        assert len(rows) == n
        assert {str(d.status) for d in rows} == {"sent"}
        assert all(d.attempts >= 2 and d.history[0]["outcome"] == "transient" for d in rows)
    ids = [m.message_id for m in smtp.messages]
    assert len(ids) == n
    assert len(set(ids)) == n  # none twice


def test_webhook_deliveries_are_signed_and_retried_through_the_outbox(
    sessions: sessionmaker[Session],
    setup: tuple[Settings, FrozenClock],
    write,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import json as jsonlib

    from atm_risk.alerts.channels import verify
    from tests.http_receiver import HttpReceiver

    settings, clock = setup
    monkeypatch.setenv("OPS_HOOK_SECRET", "s3cret")
    with HttpReceiver(replies=(503,)) as hook:
        routing = write(
            "hooks.toml",
            f"""
version = 1
[[receivers]]
name = "ops-hook"
role = "operator"
webhooks = [{{ url = "{hook.url("/atm")}", secret_env = "OPS_HOOK_SECRET" }}]
[[routes]]
kinds = ["gang_active"]
receivers = ["ops-hook"]
""",
        )
        settings = settings.model_copy(
            update={"alerts": settings.alerts.model_copy(update={"routing_file": routing})}
        )
        result = report_incident(sessions, settings, clock, dict(ATTACK))
        assert result.dispatch is not None
        assert result.dispatch.retried == 1
        clock.advance(timedelta(seconds=5))
        assert drain(sessions, settings, clock).sent == 1
        assert len(hook.requests) == 2
        first, second = hook.requests
        assert first.body == second.body  # the same payload and key on the retry
        assert first.header("Idempotency-Key") == second.header("Idempotency-Key")
        assert verify(
            b"s3cret",
            second.header("X-ATM-Risk-Signature") or "",
            second.body,
            now=int(clock.now().timestamp()),
        )
        doc = jsonlib.loads(second.body)
        assert doc["version"] == "1"
        assert doc["kind"] == "gang_active"
        assert doc["data"]["incident"]["place"] == "Utrecht"


def _counts(sessions: sessionmaker[Session]) -> tuple[int, int, int]:
    from sqlalchemy import func

    from atm_risk.incidents.models import Incident

    with sessions() as s:
        return (
            s.scalar(select(func.count(Incident.id))) or 0,
            s.scalar(select(func.count(Alert.id))) or 0,
            s.scalar(select(func.count(Delivery.id))) or 0,
        )


def test_warming_a_process_runs_the_path_but_writes_and_sends_nothing(
    sessions: sessionmaker[Session], setup: tuple[Settings, FrozenClock], smtp: SmtpTestServer
) -> None:
    from atm_risk.alerts.service import warm

    settings, clock = setup
    warm(sessions, settings, clock)
    assert _counts(sessions) == (0, 0, 0)
    assert smtp.messages == []
    # and the first real report afterwards goes through as usual
    result = report_incident(sessions, settings, clock, dict(ATTACK))
    assert result.dispatch is not None
    assert result.dispatch.sent == 4
    assert _counts(sessions) == (1, 1, 4)


def test_a_burst_beyond_the_admission_limit_is_queued_not_refused(
    sessions: sessionmaker[Session], setup: tuple[Settings, FrozenClock], smtp: SmtpTestServer
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    settings, clock = setup
    settings = settings.model_copy(
        update={"alerts": settings.alerts.model_copy(update={"report_concurrency": 1})}
    )
    attacks = [
        {**ATTACK, "lat": 52.0915 + k * 0.001, "incident_id": f"BURST-{k}"} for k in range(8)
    ]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda a: report_incident(sessions, settings, clock, a), attacks))
    # one spree: one alert, one version per attack, each version to the 4 recipients once
    assert len({r.alert_id for r in results}) == 1
    assert sum(r.dispatch.sent for r in results if r.dispatch) == 32
    smtp.wait_for(32)
    assert len({m.message_id for m in smtp.messages}) == 32
    with sessions() as s:
        alert = s.get_one(Alert, results[0].alert_id)
        assert alert.version == 8


def test_a_long_spree_lists_its_latest_attacks_and_counts_them_all(
    sessions: sessionmaker[Session], setup: tuple[Settings, FrozenClock], smtp: SmtpTestServer
) -> None:
    from atm_risk.alerts.rules import MAX_SPREE

    settings, clock = setup
    n = MAX_SPREE + 3
    for k in range(n):
        when = NOW - timedelta(minutes=n - k)
        report_incident(
            sessions,
            settings,
            clock,
            {**ATTACK, "occurred_at": when.isoformat(), "incident_id": f"SPREE-{k}"},
        )
    smtp.wait_for(4 * n)
    last = smtp.messages_for("rtic@police-utrecht.example")[-1]
    text = last.message.get_body(("plain",)).get_content()
    assert f"This spree, {n} attacks in Utrecht so far (the latest {MAX_SPREE}):" in text
    assert "reports/SPREE-22)" in text
    assert "reports/SPREE-3)" in text
    assert "reports/SPREE-2)" not in text  # the oldest are counted, not listed
    with sessions() as s:
        alert = s.scalars(select(Alert).where(Alert.kind == AlertKind.GANG_ACTIVE)).one()
        assert len(alert.payload["incidents"]) == n  # the alert keeps every attack
