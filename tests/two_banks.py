"""The test world of the API, web and browser tests: two banks in Utrecht (bank A also in
Groningen), the province boundaries, optionally the motorway access points, and keys."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from atm_risk.alerts.service import report_incident, score_and_alert
from atm_risk.areas.service import ingest_area
from atm_risk.clock import Clock, FrozenClock
from atm_risk.config import Settings
from atm_risk.ingest.run import ingest_atms
from atm_risk.tenancy.keys import create_key
from tests.conftest import DATA

# Ids that cannot appear by chance in another bank's answers.
ATMS = (
    "atm_id,operator,lat,lon,site_type,night_closure,country,address,city\n"
    "A-UTR-1,BankA,52.0907,5.1214,free_standing,false,NL,Oudegracht 1,Utrecht\n"
    "A-GRO-1,BankA,53.2194,6.5665,shop,false,NL,Grote Markt 2,Groningen\n"
    "B-UTR-1,BankB,52.0930,5.1100,shop,false,NL,Vredenburg 3,Utrecht\n"
    "B-UTR-2,BankB,52.1000,5.1300,wall,false,NL,Biltstraat 4,Utrecht\n"
)
VILD = DATA / "motorway_access_nl_vild/vild_point_locations.csv.gz"


def load(
    sessions: sessionmaker[Session], clock: Clock, write: Any, *, motorway: bool, atms: str = ATMS
) -> None:
    ingest_atms(sessions, path=write("a.csv", atms), clock=clock)
    ingest_area(
        sessions,
        name="nl_provinces",
        path=DATA / "nl_admin_cbs/provincies_2022.geojson",
        clock=clock,
    )
    if motorway:
        ingest_area(sessions, name="nl_vild_points", path=VILD, clock=clock)


def keys(sessions: sessionmaker[Session], now: datetime, *names: str) -> dict[str, str]:
    """Keys by name: bank_a, bank_b, police (Utrecht), operator."""
    specs: dict[str, dict[str, Any]] = {
        "bank_a": {"role": "bank", "tenant": "banka"},
        "bank_b": {"role": "bank", "tenant": "bankb"},
        "police": {"role": "police", "regions": ["Utrecht"]},
        "operator": {"role": "operator"},
    }
    out: dict[str, str] = {}
    with sessions.begin() as s:
        for name in names:
            out[name], _ = create_key(s, now=now, **specs[name])
    return out


def attack_on_bank_b(
    sessions: sessionmaker[Session], settings: Settings, clock: FrozenClock
) -> None:
    """A published run; then an attack on bank B's machine B-UTR-1 half an hour ago, reported
    by bank B (a gang_active alert in Utrecht); ten minutes later the next run."""
    score_and_alert(sessions, settings, clock, send=False)
    report_incident(
        sessions,
        settings,
        clock,
        {
            "operator": "BankB",
            "atm_id": "B-UTR-1",
            "method": "explosive_solid",
            "occurred_at": (clock.now() - timedelta(minutes=30)).isoformat(),
        },
    )
    clock.advance(timedelta(minutes=10))
    score_and_alert(sessions, settings, clock, send=False)
