"""The transparent baseline score and the atomic publication of a scoring run."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from atm_risk.cli import app
from atm_risk.clock import FrozenClock
from atm_risk.config import Settings
from atm_risk.ingest.run import ingest_atms, ingest_incidents
from atm_risk.risk import baseline
from atm_risk.risk.models import RiskRun, RunStatus
from atm_risk.risk.service import latest_run, ranking, run_scoring

# Three machines on a west-east line near Venlo, 0, ~5 km and ~50 km from an attack.
ATMS = (
    "atm_id,operator,lat,lon,site_type,night_closure\n"
    "NEAR,Bank,51.37,6.17,shop,false\n"
    "MID,Bank,51.37,6.24,shop,false\n"
    "FAR,Bank,51.37,6.89,shop,false\n"
    "NEAR_CLOSED,Bank,51.3701,6.1701,shop,true\n"
)
INCIDENTS = (
    "incident_id,occurred_at,lat,lon,geocode_precision,method\n"
    "E1,2026-10-01T03:00Z,51.37,6.17,exact,explosive_solid\n"
    "LATER,2026-12-01T03:00Z,51.37,6.89,exact,explosive_solid\n"
    "FRAUD,2026-10-01T03:00Z,51.37,6.89,exact,other\n"
)
AS_OF = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.fixture
def scored(
    sessions: sessionmaker[Session], write, clock: FrozenClock
) -> dict[str, baseline.BaselineScore]:
    ingest_atms(sessions, path=write("a.csv", ATMS), clock=clock)
    clock.set(datetime(2027, 1, 1, tzinfo=UTC))
    ingest_incidents(sessions, path=write("i.csv", INCIDENTS), clock=clock)
    run_scoring(sessions, settings=Settings(model_path=None), clock=clock, as_of=AS_OF)
    with sessions() as s:
        run = latest_run(s)
        assert run is not None
        return {r.atm_id: r for r in ranking(s, run)}  # type: ignore[misc]


def test_nearer_machines_rank_higher_and_later_or_fraud_incidents_do_not_count(
    scored: dict[str, object],
) -> None:
    ranks = {k: v.rank for k, v in scored.items()}  # type: ignore[attr-defined]
    assert ranks["NEAR"] == 1
    assert ranks["MID"] == 2
    assert ranks["NEAR_CLOSED"] == 3  # same place, halved by night closure
    assert ranks["FAR"] == 4  # the attack near FAR is after the as-of time / not physical


def test_reasons_name_the_attack_and_the_factors(scored: dict[str, object]) -> None:
    near = scored["NEAR"]
    texts = near.reasons_text()  # type: ignore[attr-defined]
    assert "1 recorded attack(s) within 25 km" in texts
    assert "0.0 km away" in texts
    closed = scored["NEAR_CLOSED"].reasons_text()  # type: ignore[attr-defined]
    assert "closed at night (x0.5)" in closed
    far = scored["FAR"].reasons_text()  # type: ignore[attr-defined]
    assert "0 recorded attack(s) within 25 km" in far


def test_municipality_level_incident_is_spread_not_exact() -> None:
    params = baseline.BaselineParams(
        spatial_bandwidth_m=10_000,
        half_life_days=365,
        location_uncertainty_m={"exact": 0, "municipality": 5_000},
        metric_crs="EPSG:3035",
    )
    from atm_risk.atms.models import Atm
    from atm_risk.incidents.models import Incident

    atm = Atm(id=1, lat=51.37, lon=6.17, site_type="shop", night_closure=None, hardening=[])
    when = datetime(2026, 10, 1, tzinfo=UTC)

    def incident(precision: str) -> Incident:
        return Incident(
            lat=51.37,
            lon=6.17,
            geocode_precision=precision,
            method="explosive_gas",
            occurred_from=when,
            occurred_to=when,
            date_precision="exact",
            timezone="Europe/Berlin",
            municipality="Venlo",
        )

    exact = baseline.score_atms([atm], [incident("exact")], as_of=AS_OF, params=params)[0]
    spread = baseline.score_atms([atm], [incident("municipality")], as_of=AS_OF, params=params)[0]
    assert spread.exposure < exact.exposure
    assert spread.exposure == pytest.approx(exact.exposure * 10_000**2 / (10_000**2 + 5_000**2))


def test_failed_run_keeps_previous_ranking_and_is_marked(
    sessions: sessionmaker[Session], write, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingest_atms(sessions, path=write("a.csv", ATMS), clock=clock)
    good = run_scoring(sessions, settings=Settings(model_path=None), clock=clock)

    def explode(*args: object, **kwargs: object) -> list[object]:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(baseline, "score_atms", explode)
    with pytest.raises(RuntimeError, match="disk on fire"):
        run_scoring(sessions, settings=Settings(model_path=None), clock=clock)
    with sessions() as s:
        published = latest_run(s)
        assert published is not None
        assert published.id == good.id
        runs = list(s.scalars(select(RiskRun).order_by(RiskRun.id)))
        assert [r.status for r in runs] == [RunStatus.SUCCEEDED, RunStatus.FAILED]
        assert runs[1].error == "RuntimeError: disk on fire"


def test_cli_score_and_rank_formats(database_url: str, write) -> None:
    runner = CliRunner()
    env = {"ATM_RISK_DATABASE_URL": database_url, "ATM_RISK_MODEL_PATH": ""}
    assert runner.invoke(app, ["ingest", "atms", str(write("a.csv", ATMS))], env=env).exit_code == 0
    # The CLI runs on the wall clock: leave out the incident dated after it.
    past = "\n".join(line for line in INCIDENTS.splitlines() if not line.startswith("LATER"))
    result = runner.invoke(app, ["ingest", "incidents", str(write("i.csv", past))], env=env)
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["score", "--as-of", "2026-11-01"], env=env)
    assert result.exit_code == 0, result.output
    assert "scored 4 machines" in result.output

    as_csv = runner.invoke(app, ["rank", "--top", "2", "--format", "csv"], env=env)
    assert as_csv.exit_code == 0, as_csv.output
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert [r["atm_id"] for r in rows] == ["NEAR", "MID"]
    assert rows[0]["reasons"].startswith("1 recorded attack(s)")

    as_json = runner.invoke(app, ["rank", "--all", "--format", "json"], env=env)
    doc = json.loads(as_json.stdout)
    # The baseline is not calibrated: its probability is the country's rate shared by score.
    assert doc["run"]["probability_method"] == "base_rate_scaled"
    assert all(0 < item["probability"] < 1 for item in doc["items"])
    assert all(item["action"] and item["action_reason"] for item in doc["items"])
    assert len(doc["items"]) == 4
    assert doc["items"][0]["reasons"][0]["factor"] == "incident_exposure"

    table = runner.invoke(app, ["rank", "--top", "3"], env=env)
    assert "NEAR" in table.stdout
    assert "FAR" not in table.stdout
