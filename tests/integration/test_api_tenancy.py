"""Tenant isolation: every route of the OpenAPI document, walked with the keys of two banks,
a police region, an operator, a revoked key and none, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from atm_risk.api.app import create_app
from atm_risk.clock import FrozenClock
from atm_risk.config import Settings
from atm_risk.tenancy.keys import create_key, revoke
from atm_risk.tenancy.models import AuditEntry
from tests import two_banks
from tests.api_probe import tenant_findings, unauthenticated_findings
from tests.api_server import serve

NOW = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


@pytest.fixture
def api(
    sessions: sessionmaker[Session], database_url: str, write
) -> Iterator[tuple[httpx.Client, dict[str, str], dict[str, Any]]]:
    clock = FrozenClock(NOW)
    settings = Settings(database_url=database_url, model_path=None)
    two_banks.load(sessions, clock, write, motorway=False)
    two_banks.attack_on_bank_b(sessions, settings, clock)
    keys = two_banks.keys(sessions, NOW, "bank_a", "bank_b", "police", "operator")
    with sessions.begin() as s:
        keys["revoked"], row = create_key(s, role="operator", now=NOW)
        revoke(s, row.prefix, NOW)
    with serve(create_app(settings, clock=clock)) as client:
        response = client.get(
            "/api/v1/alerts", headers={"Authorization": f"Bearer {keys['operator']}"}
        )
        assert response.status_code == 200, response.text
        alerts = response.json()["items"]
        ids = {"alert_id": alerts[0]["id"], "silence_id": 1}
        yield client, keys, ids


def test_no_key_and_revoked_key_answer_401(api) -> None:  # type: ignore[no-untyped-def]
    client, keys, ids = api
    assert client.get("/api/v1/atms").status_code == 401
    revoked = client.get("/api/v1/atms", headers={"Authorization": f"Bearer {keys['revoked']}"})
    assert revoked.status_code == 401
    bad = [None, keys["revoked"], "atmr_00000000_nonsense", "garbage"]
    calls, problems = unauthenticated_findings(client, bad, ids, NOW)
    assert calls >= 4 * 14
    assert problems == []


def test_bank_a_never_receives_bank_b_data(api) -> None:  # type: ignore[no-untyped-def]
    client, keys, ids = api
    calls, problems, statuses = tenant_findings(client, "bank_a", keys["bank_a"], ids, NOW)
    assert calls >= 14
    assert problems == []
    # bank B's machine is answered as if it did not exist; reporting on it too
    assert statuses["GET /api/v1/atms/{operator}/{atm_id}"] == 404
    assert statuses["POST /api/v1/incidents"] == 404
    assert statuses["GET /api/v1/silences"] == 404  # operators only
    # and bank A does see its own
    mine = client.get("/api/v1/atms", headers={"Authorization": f"Bearer {keys['bank_a']}"}).json()
    assert {m["atm_id"] for m in mine["items"]} == {"A-UTR-1", "A-GRO-1"}


def test_bank_b_sees_its_machines_its_alert_and_its_plan(api) -> None:  # type: ignore[no-untyped-def]
    client, keys, ids = api
    _, problems, _ = tenant_findings(client, "bank_b", keys["bank_b"], ids, NOW)
    assert problems == []  # nothing of bank A
    h = {"Authorization": f"Bearer {keys['bank_b']}"}
    ranking = client.get("/api/v1/ranking", headers=h).json()
    assert {i["atm_id"] for i in ranking["items"]} == {"B-UTR-1", "B-UTR-2"}
    assert all("expected_loss_eur" in i for i in ranking["items"])
    detail = client.get("/api/v1/atms/bankb/B-UTR-1", headers=h).json()
    assert detail["action"] == "temporary_shutdown"
    assert len(detail["history"]) == 2
    alerts = client.get("/api/v1/alerts", headers=h).json()["items"]
    assert any(a["kind"] == "gang_active" for a in alerts)
    plan = client.get("/api/v1/plans/hardening", params={"budget_eur": 20000}, headers=h).json()
    assert {i["atm_id"] for i in plan["items"]} <= {"B-UTR-1", "B-UTR-2"}
    geo = client.get("/api/v1/ranking", params={"format": "gpkg"}, headers=h)
    assert geo.status_code == 200
    assert geo.content[:16] == b"SQLite format 3\x00"


def test_a_bank_is_not_told_which_other_bank_acknowledged(api) -> None:  # type: ignore[no-untyped-def]
    # found by reliability/security.py: bank B's alert list named bank A's key and tenant
    client, keys, ids = api
    a = {"Authorization": f"Bearer {keys['bank_a']}"}
    b = {"Authorization": f"Bearer {keys['bank_b']}"}
    mine = client.post(f"/api/v1/alerts/{ids['alert_id']}/ack", headers=a)
    assert mine.status_code == 200
    assert mine.json()["acknowledged_by"].endswith("(bank/banka)")
    [seen] = [
        x
        for x in client.get("/api/v1/alerts", headers=b).json()["items"]
        if x["id"] == ids["alert_id"]
    ]
    assert seen["acknowledged_by"] == "another recipient"
    assert seen["acknowledged_at"] is not None  # that it was acknowledged is not hidden
    ops = {"Authorization": f"Bearer {keys['operator']}"}
    [full] = [
        x
        for x in client.get("/api/v1/alerts", headers=ops).json()["items"]
        if x["id"] == ids["alert_id"]
    ]
    assert full["acknowledged_by"] == mine.json()["acknowledged_by"]


def test_police_see_their_region_without_money_and_no_hardening_plans(api) -> None:  # type: ignore[no-untyped-def]
    client, keys, ids = api
    h = {"Authorization": f"Bearer {keys['police']}"}
    calls, problems, _ = tenant_findings(client, "police", keys["police"], ids, NOW)
    assert calls >= 14
    assert problems == []  # no 5xx, no money, nothing of Groningen (not their region)
    ranking = client.get("/api/v1/ranking", headers=h).json()
    assert {i["atm_id"] for i in ranking["items"]} == {"A-UTR-1", "B-UTR-1", "B-UTR-2"}
    assert (
        client.get("/api/v1/plans/hardening", params={"budget_eur": 1}, headers=h).status_code
        == 404
    )
    patrol = client.get("/api/v1/plans/patrol", params={"units": 1, "minutes": 10}, headers=h)
    assert patrol.status_code == 200
    assert patrol.json()["region"] == "Utrecht"
    other = client.get(
        "/api/v1/plans/patrol",
        params={"units": 1, "minutes": 10, "region": "Groningen"},
        headers=h,
    )
    assert other.status_code == 404


def test_operator_sees_everything_and_every_read_is_audited(
    api,
    sessions: sessionmaker[Session],  # type: ignore[no-untyped-def]
) -> None:
    client, keys, _ = api
    h = {"Authorization": f"Bearer {keys['operator']}"}
    ranking = client.get("/api/v1/ranking", headers=h).json()
    assert ranking["total"] == 4
    client.get("/api/v1/ranking", headers={"Authorization": f"Bearer {keys['bank_a']}"})
    wanted = {("operator", None, 200), ("bank", "banka", 200)}
    deadline = time.monotonic() + 15  # the audit is written in batches every 0.2 s
    while True:
        with sessions() as s:
            entries = s.scalars(
                select(AuditEntry).where(AuditEntry.path == "/api/v1/ranking")
            ).all()
        seen = {(e.role, e.operator_code, e.status) for e in entries}
        if seen >= wanted or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert seen >= {
        ("operator", None, 200),
        ("bank", "banka", 200),
    }


def test_bad_input_is_422_with_the_field_never_500(api) -> None:  # type: ignore[no-untyped-def]
    client, keys, _ = api
    h = {"Authorization": f"Bearer {keys['operator']}"}
    for params in ({"limit": 0}, {"limit": "x"}, {"band": "extreme"}, {"offset": -1}):
        r = client.get("/api/v1/atms", params=params, headers=h)
        assert r.status_code == 422, (params, r.text)
        assert r.json()["detail"][0]["loc"][0] == "query"
    r = client.post("/api/v1/incidents", json={"lat": 95, "lon": 5}, headers=h)
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "lat"]
    r = client.post("/api/v1/incidents", content=b"{not json", headers=h)
    assert r.status_code == 422
    r = client.post(
        "/api/v1/silences",
        json={"creator": "x", "comment": "y", "ends_at": (NOW + timedelta(days=40)).isoformat()},
        headers=h,
    )
    assert r.status_code == 422


def test_repeated_bad_keys_are_rate_limited(api) -> None:  # type: ignore[no-untyped-def]
    client, keys, _ = api
    codes = [
        client.get("/api/v1/atms", headers={"Authorization": f"Bearer atmr_x_{k}"}).status_code
        for k in range(25)
    ]
    assert codes[:20] == [401] * 20
    assert set(codes[20:]) == {429}
    ok = client.get("/api/v1/atms", headers={"Authorization": f"Bearer {keys['operator']}"})
    assert ok.status_code == 429  # the same client is refused for the minute, good key or not


def test_healthz_tells_the_last_successful_run(api) -> None:  # type: ignore[no-untyped-def]
    client, _, _ = api
    doc = client.get("/healthz").json()
    assert doc["status"] == "ok"
    assert doc["last_successful_run"]["id"] >= 2
    assert json.dumps(doc)


def test_a_drill_reported_through_the_api_is_labelled_simulated(api) -> None:  # type: ignore[no-untyped-def]
    client, keys, _ = api
    h = {"Authorization": f"Bearer {keys['operator']}"}
    r = client.post(
        "/api/v1/incidents",
        json={"lat": 52.09, "lon": 5.12, "method": "ram_raid", "simulated": True},
        headers=h,
    )
    assert r.status_code == 201, r.text
    assert r.json()["incident"]["simulated"] is True
    real = client.post("/api/v1/incidents", json={"lat": 52.09, "lon": 5.12}, headers=h)
    assert real.status_code == 201
    assert real.json()["incident"]["simulated"] is False


def test_healthz_says_when_the_immediate_path_is_warm(api) -> None:  # type: ignore[no-untyped-def]
    client, _, _ = api
    deadline = time.monotonic() + 60
    while not (body := client.get("/healthz").json())["warm"]:
        assert time.monotonic() < deadline, body
        time.sleep(0.1)
    assert body["status"] == "ok"
