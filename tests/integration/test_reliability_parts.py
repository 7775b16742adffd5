"""The reliability suite's bad-input, security and reconciliation parts (reliability/), in
their quick form, on SQLite and PostgreSQL; and that their detectors do detect."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from reliability import badinput, reconcile, security
from reliability.common import DEFAULT_PG_URL, Options, api_world
from sqlalchemy import select, update

from atm_risk.alerts.models import Alert, Delivery
from atm_risk.alerts.service import report_incident
from atm_risk.atms import profiles as atm_profiles
from atm_risk.config import Settings


@pytest.fixture
def options(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if backend == "postgresql":
        request.getfixturevalue("postgres_server")  # skips, or fails under CI=true
    opts = Options(
        backends=[backend],
        postgres_url=os.environ.get("ATM_RISK_TEST_POSTGRES_URL", DEFAULT_PG_URL),
        quick=True,
        out_dir=tmp_path,
    )
    yield opts
    opts.databases.drop_all()


def _target(name: str) -> badinput.Target:
    return next(t for t in badinput.TARGETS if t.name == name)


@pytest.mark.parametrize("name", ["atms.csv", "incidents.geojson", "area.csv"])
def test_ingest_fuzz_quick_finds_nothing(options: Options, name: str) -> None:
    s = badinput.fuzz_target(_target(name), options.backends[0], options)
    assert s.cases == len(_target(name).variants)  # one file per file-level variant
    assert s.details["valid_rows"] >= s.cases
    assert (s.crashes, s.valid_rows_lost, s.details["bad_rows_unreported"]) == (0, 0, 0)
    assert s.survived


def test_ingest_fuzz_detects_lost_valid_rows(
    options: Options, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the bug the fuzz found: an empty optional cell rejected the whole row
    monkeypatch.setattr(
        atm_profiles, "pick", lambda values, names: {n: values[n] for n in names if n in values}
    )
    monkeypatch.setattr(badinput, "N_EXAMPLES", {True: 30, False: 30})
    s = badinput.fuzz_target(_target("atms.csv"), options.backends[0], options)
    assert s.valid_rows_lost > 0
    assert not s.survived


def test_api_fuzz_quick(options: Options) -> None:
    s = badinput.fuzz_api(options.backends[0], options)
    assert s.cases > 50
    assert s.server_errors == 0


@pytest.mark.slow
def test_security_quick(options: Options) -> None:
    scenarios = {s.name: s for s in security.one_backend(options.backends[0], options)}
    assert all(s.survived for s in scenarios.values()), [
        (s.name, s.details) for s in scenarios.values() if not s.survived
    ]
    assert scenarios["tenant isolation (every route, bank A, bank B, police)"].cases >= 40
    revoked = scenarios["revoked key in use"].details
    assert 0 < revoked["seconds_to_rejection"] <= 6
    assert scenarios["repeated bad keys"].details["first_429_at"] == 21
    found = scenarios["secrets absent from logs, answers, messages and rows"].details
    assert "SMTP password" in found["searched"]
    assert found["mails"] > 0  # the walk's reports were really sent, through AUTH
    # every delivery of the API's reports reached a final state
    [r] = reconcile.run(options)["scenarios"]
    assert r["details"]["routing_checked"]
    assert r["details"]["deliveries"] > 0
    assert r["unreconciled"] == 0


def test_reconcile_finds_stuck_deliveries_and_attacks_without_alert(
    options: Options, tmp_path: Path
) -> None:
    url = options.databases.new(options.backends[0], "reconcile-test")
    routing = tmp_path / "routing.toml"
    routing.write_text(security.ROUTING.format(hook="http://127.0.0.1:9/hook"))
    world = api_world(url, tmp_path / "world")
    # no SMTP relay: e-mail deliveries wait in the outbox (pending)
    settings = Settings(database_url=url, model_path=None, alerts={"routing_file": routing})
    report_incident(
        world.sessions,
        settings,
        world.clock,
        {
            "operator": "bankb",
            "atm_id": "B-UTR-2",
            "method": "ram_raid",
            "occurred_at": world.clock.now().isoformat(),
        },
    )
    options.databases.describe(url, routing=routing)
    with world.sessions.begin() as s:
        pending = len(s.scalars(select(Delivery)).all())
        # an alert that lost its incidents
        s.execute(update(Alert).values(payload={"incidents": []}))
    world.close()
    [r] = reconcile.run(options)["scenarios"]
    assert pending > 0
    assert len(r["details"]["deliveries_not_final"]) == min(pending, 8)
    assert r["details"]["incidents_without_alert"]
    assert r["unreconciled"] >= pending + 2
    assert not r["survived"]
