"""Ingesting incidents: intervals, precision, ATM links, idempotence and strictness."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from atm_risk.clock import FrozenClock
from atm_risk.incidents.models import DatePrecision, GeocodePrecision, Incident
from atm_risk.ingest.run import ingest_atms, ingest_incidents

ATMS = "atm_id,operator,lat,lon\nM1,Bank A,51.50,6.00\nM1,Bank B,51.60,6.10\nM2,Bank A,51.7,6.2\n"


def _count(sessions: sessionmaker[Session]) -> int:
    with sessions() as s:
        return int(s.scalar(select(func.count()).select_from(Incident)) or 0)


def test_interval_and_precision_are_stored(
    sessions: sessionmaker[Session], clock: FrozenClock, write
) -> None:
    body = (
        "incident_id,date_earliest,date_latest,time_local,country,lat,lon,"
        "geocode_precision,method\n"
        "I1,2021-07-10,,03:15,NL,52.0,5.0,municipality,explosive_solid\n"
        "I2,2021-04-01,2021-04-30,,DE,51.0,7.0,,ram_raid\n"
    )
    report = ingest_incidents(sessions, path=write("i.csv", body), clock=clock)
    assert report.summary_line() == "accepted 2, rejected 0"
    with sessions() as s:
        i1 = s.scalar(select(Incident).where(Incident.incident_id == "I1"))
        i2 = s.scalar(select(Incident).where(Incident.incident_id == "I2"))
        assert i1 is not None
        assert i2 is not None
        assert i1.date_precision is DatePrecision.EXACT
        assert i1.occurred_from == datetime(2021, 7, 10, 1, 15, tzinfo=UTC)  # CEST = UTC+2
        assert i1.geocode_precision is GeocodePrecision.MUNICIPALITY
        assert i1.timezone == "Europe/Amsterdam"
        assert i2.date_precision is DatePrecision.MONTH
        assert i2.occurred_from == datetime(2021, 3, 31, 22, 0, tzinfo=UTC)
        assert i2.occurred_to == datetime(2021, 4, 30, 22, 0, tzinfo=UTC)
        assert i2.when_text() == "April 2021"


def test_link_to_stored_machine_takes_its_place(
    sessions: sessionmaker[Session], clock: FrozenClock, write
) -> None:
    ingest_atms(sessions, path=write("atms.csv", ATMS), clock=clock)
    body = (
        "incident_id,occurred_at,country,atm_id,operator,method\n"
        "L1,2022-01-02T03:04,DE,M1,Bank B,explosive_gas\n"
        "L2,2022-01-02T03:04,DE,M1,,explosive_gas\n"
        "L3,2022-01-02T03:04,DE,M9,,explosive_gas\n"
        "L4,2022-01-03T03:04,DE,M2,,ram_raid\n"
    )
    report = ingest_incidents(sessions, path=write("i.csv", body), clock=clock)
    assert report.summary_line() == "accepted 2, rejected 2"
    assert [str(r) for r in report.rejections] == [
        "line 3: atm_id 'M1' is ambiguous: give the operator",
        "line 4: atm_id 'M9' is not a stored machine",
    ]
    with sessions() as s:
        l1 = s.scalar(select(Incident).where(Incident.incident_id == "L1"))
        assert l1 is not None
        assert l1.atm_pk is not None
        assert (l1.lat, l1.lon) == (51.6, 6.1)
        assert l1.geocode_precision is GeocodePrecision.EXACT
    assert _count(sessions) == 2


def test_strict_rolls_back_when_a_link_fails(
    sessions: sessionmaker[Session], clock: FrozenClock, write
) -> None:
    ingest_atms(sessions, path=write("atms.csv", ATMS), clock=clock)
    body = (
        "incident_id,occurred_at,country,atm_id,method\n"
        "L1,2022-01-02T03:04,DE,M2,explosive_gas\n"
        "L2,2022-01-02T03:04,DE,M9,explosive_gas\n"
    )
    report = ingest_incidents(sessions, path=write("i.csv", body), strict=True, clock=clock)
    assert report.rejected == 1
    assert not report.written
    assert _count(sessions) == 0


def test_reingest_updates_instead_of_duplicating(
    sessions: sessionmaker[Session], clock: FrozenClock, write
) -> None:
    body = "incident_id,occurred_at,lat,lon,method\nX1,2022-01-02T03:04+01:00,52,5,other\n"
    path = write("feed.csv", body)
    ingest_incidents(sessions, path=path, clock=clock)
    report = ingest_incidents(sessions, path=path, clock=clock)
    assert (report.inserted, report.unchanged) == (0, 1)
    path2 = write("feed2.csv", body.replace("other", "burglary"))
    report = ingest_incidents(sessions, path=path2, feed="feed", clock=clock)
    assert report.updated == 1
    assert _count(sessions) == 1


def test_future_incident_is_rejected(
    sessions: sessionmaker[Session], clock: FrozenClock, write
) -> None:
    body = "incident_id,occurred_at,lat,lon,method\nF1,2030-01-01T00:00Z,52,5,other\n"
    report = ingest_incidents(sessions, path=write("f.csv", body), clock=clock)
    assert report.rejected == 1
    assert "future" in report.rejections[0].reason


def test_simulated_rows_stay_labelled(
    sessions: sessionmaker[Session], clock: FrozenClock, write
) -> None:
    body = (
        "incident_id,occurred_at,lat,lon,method,simulated\n"
        "SIM-1,2022-01-02T03:04Z,52,5,explosive_solid,true\n"
        "REAL-1,2022-01-02T03:04Z,52,5,explosive_solid,\n"
    )
    ingest_incidents(sessions, path=write("sim.csv", body), clock=clock)
    with sessions() as s:
        flags = dict(s.execute(select(Incident.incident_id, Incident.simulated)).all())
    assert flags == {"SIM-1": True, "REAL-1": False}
