"""Property-based fuzz of the API from its OpenAPI document: every operation, with valid and
hostile path, query and body values, with an operator key and a bank key. Nothing answers
500; hostile strings never reach SQL as code (the tables are intact afterwards)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from atm_risk.alerts.service import score_and_alert
from atm_risk.api.app import create_app
from atm_risk.atms.models import Atm
from atm_risk.clock import FrozenClock
from atm_risk.config import Settings
from atm_risk.ingest.run import ingest_atms
from atm_risk.tenancy.keys import create_key
from tests.api_probe import fuzz_api
from tests.api_server import serve

ATMS = (
    "atm_id,operator,lat,lon,site_type,country\n"
    "F1,BankA,52.09,5.12,shop,NL\nF2,BankB,52.10,5.13,wall,NL\n"
)
NOW = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


@pytest.fixture
def running(sessions: sessionmaker[Session], database_url: str, write):  # type: ignore[no-untyped-def]
    clock = FrozenClock(NOW)
    settings_ = Settings(
        database_url=database_url, model_path=None, alerts={"ack_secret": "fuzz-" + "k" * 27}
    )
    ingest_atms(sessions, path=write("a.csv", ATMS), clock=clock)
    score_and_alert(sessions, settings_, clock, send=False)
    with sessions.begin() as s:
        ops, _ = create_key(s, role="operator", now=NOW)
        bank, _ = create_key(s, role="bank", tenant="banka", now=NOW)
    with serve(create_app(settings_, clock=clock)) as client:
        yield client, [ops, bank]


def test_no_operation_answers_500_to_any_input(
    running,
    sessions: sessionmaker[Session],  # type: ignore[no-untyped-def]
) -> None:
    client, keys = running
    outcome = fuzz_api(client, keys)
    assert outcome.sent >= 300
    assert outcome.server_errors == []
    with sessions() as s:  # hostile strings were data, never SQL
        assert s.scalar(select(func.count(Atm.id))) == 2
