"""Decisions are published with the scores: probability, band, expected loss and action."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from atm_risk.clock import FrozenClock
from atm_risk.config import Settings
from atm_risk.geo import CRSMismatchError
from atm_risk.ingest.run import ingest_atms, ingest_incidents
from atm_risk.risk.models import RiskRun
from atm_risk.risk.service import latest_run, ranking, run_scoring

# Machines near Venlo (NL) at 0, ~5 and ~45 km from an attack the night before the run.
ATMS = (
    "atm_id,operator,lat,lon,site_type,night_closure,country\n"
    "NEAR,Bank,51.37,6.17,shop,false,NL\n"
    "MID,Bank,51.37,6.24,shop,true,NL\n"
    "FAR,Bank,51.37,6.81,shop,false,NL\n"
)
INCIDENTS = (
    "incident_id,occurred_at,lat,lon,geocode_precision,method,locality\n"
    "OLD,2025-03-01T03:00Z,51.37,6.81,exact,explosive_solid,Viersen\n"
    "LAST_NIGHT,2026-10-31T02:40Z,51.37,6.17,exact,explosive_solid,Venlo\n"
)
AS_OF = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)


def test_an_attack_last_night_shuts_nearby_machines_down_and_names_it(
    sessions: sessionmaker[Session], write, clock: FrozenClock
) -> None:
    ingest_atms(sessions, path=write("a.csv", ATMS), clock=clock)
    clock.set(AS_OF)
    ingest_incidents(sessions, path=write("i.csv", INCIDENTS), clock=clock)
    run_scoring(sessions, settings=Settings(model_path=None), clock=clock, as_of=AS_OF)
    with sessions() as s:
        run = latest_run(s)
        assert run is not None
        assert run.params["probability_method"] == "base_rate_scaled"
        items = {r.atm_id: r for r in ranking(s, run)}
    for atm in ("NEAR", "MID"):
        assert items[atm].action == "temporary_shutdown"
        reason = items[atm].action_reasons[0]  # type: ignore[index]
        assert reason["incident"].endswith("/LAST_NIGHT")
        assert "Venlo" in reason["text"]
    assert "0.0 km away" in items["NEAR"].action_text()
    assert items["FAR"].action != "temporary_shutdown"
    # probabilities and expected losses are there and ordered like the scores
    assert all(r.probability is not None and 0 < r.probability < 1 for r in items.values())
    assert items["NEAR"].expected_loss_eur > items["FAR"].expected_loss_eur  # type: ignore[operator]
    # NL rate 0.14 % a machine-year shared over the three: 3 x 0.0014 x 28/365 attacks
    expected = sum(r.expected_loss_eur for r in items.values())  # type: ignore[misc]
    assert expected / 100_000 == pytest.approx(3 * 0.0014 * 28 / 365, rel=1e-3)


def test_a_failed_run_publishes_nothing(
    sessions: sessionmaker[Session], write, clock: FrozenClock
) -> None:
    ingest_atms(sessions, path=write("a.csv", ATMS), clock=clock)
    bad = Settings(model_path=None, metric_crs="EPSG:4326")  # not projected: decisions fail
    with pytest.raises(CRSMismatchError, match="projected"):
        run_scoring(sessions, settings=bad, clock=clock, as_of=AS_OF)
    with sessions() as s:
        assert latest_run(s) is None
        runs = list(s.scalars(select(RiskRun)))
        assert [r.status for r in runs] == ["failed"]
