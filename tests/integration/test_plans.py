"""`atm-risk plan hardening|patrol|sensitivity` on a small scored database, both backends."""

from __future__ import annotations

import csv
import io
import json

import pytest
from typer.testing import CliRunner

from atm_risk.cli import app
from tests.conftest import DATA

# Six machines: four around Utrecht (province Utrecht), two in Groningen.
ATMS = (
    "atm_id,operator,lat,lon,site_type,night_closure,country\n"
    "U1,BankA,52.0907,5.1214,free_standing,true,NL\n"
    "U2,BankA,52.0930,5.1100,shop,true,NL\n"
    "U3,BankB,52.1561,5.3878,wall,true,NL\n"
    "U4,BankB,52.0800,5.1300,foyer,true,NL\n"
    "G1,BankA,53.2194,6.5665,shop,true,NL\n"
    "G2,BankB,53.2100,6.5500,shop,true,NL\n"
)
INCIDENTS = (
    "incident_id,occurred_at,lat,lon,geocode_precision,method,locality\n"
    "E1,2025-06-01T03:00Z,52.0910,5.1200,exact,explosive_solid,Utrecht\n"
    "E2,2025-09-01T03:00Z,52.1550,5.3870,exact,explosive_solid,Amersfoort\n"
)
# Three motorway access points: one at Utrecht, one at Amersfoort, one at Groningen.
MOTORWAY = (
    "name,road_number,exit_number,category,motorway_access,lat,lon\n"
    "Utrecht-Centrum,A28,1,exit,1,52.0950,5.1400\n"
    "Amersfoort,A28,6,exit,1,52.1600,5.3800\n"
    "Groningen-Zuid,A28,38,exit,1,53.2000,6.5700\n"
)


@pytest.fixture
def cli(database_url: str, write):  # type: ignore[no-untyped-def]
    runner = CliRunner()
    env = {"ATM_RISK_DATABASE_URL": database_url, "ATM_RISK_MODEL_PATH": ""}

    def run(*args: str, ok: bool = True):  # type: ignore[no-untyped-def]
        result = runner.invoke(app, list(args), env=env)
        if ok:
            assert result.exit_code == 0, result.output
        return result

    run("ingest", "atms", str(write("a.csv", ATMS)))
    run("ingest", "incidents", str(write("i.csv", INCIDENTS)))
    run("ingest", "area", "nl_provinces", str(DATA / "nl_admin_cbs/provincies_2022.geojson"))
    run("ingest", "area", "nl_vild_points", str(write("m.csv", MOTORWAY)))
    return run


def last_json(output: str) -> dict:  # type: ignore[type-arg]
    return json.loads(output.strip().splitlines()[-1])


def test_plans_need_a_published_run(cli) -> None:  # type: ignore[no-untyped-def]
    result = cli("plan", "hardening", "--budget", "1000", ok=False)
    assert result.exit_code == 1
    assert "atm-risk score" in result.output


def test_hardening_plan_keeps_the_budget_and_filters_by_operator(cli) -> None:  # type: ignore[no-untyped-def]
    cli("score", "--as-of", "2025-10-01")
    plan = last_json(cli("plan", "hardening", "--budget", "10000", "--format", "json").stdout)
    assert plan["spent_eur"] <= 10_000
    assert plan["solver"].startswith("milp")
    assert plan["optimal"] is True
    assert plan["machines_considered"] == 6
    assert sum(i["cost_eur"] for i in plan["items"]) == pytest.approx(plan["spent_eur"])
    assert plan["loss_averted_year_eur"] == pytest.approx(
        sum(i["averted_year_eur"] for i in plan["items"]), abs=0.05
    )
    assert 0 < plan["share_of_expected_loss_averted"] < 1
    # the same inputs give the same plan
    again = last_json(cli("plan", "hardening", "--budget", "10000", "--format", "json").stdout)
    assert again == plan
    only_b = last_json(
        cli(
            "plan", "hardening", "--budget", "10000", "--operator", "BankB", "--format", "json"
        ).stdout
    )
    assert only_b["machines_considered"] == 3
    assert {i["operator"] for i in only_b["items"]} <= {"bankb"}
    rows = list(
        csv.DictReader(
            io.StringIO(cli("plan", "hardening", "--budget", "10000", "--format", "csv").stdout)
        )
    )
    assert [r["atm_id"] for r in rows] == [i["atm_id"] for i in plan["items"]]
    unknown = cli("plan", "hardening", "--budget", "1", "--operator", "Nobody", ok=False)
    assert unknown.exit_code == 2
    assert "no operator 'Nobody'" in unknown.output


def test_patrol_plan_covers_the_region_and_lists_escape_routes(cli) -> None:  # type: ignore[no-untyped-def]
    cli("score", "--as-of", "2025-10-01")
    plan = last_json(
        cli(
            "plan",
            "patrol",
            "--units",
            "2",
            "--minutes",
            "10",
            "--region",
            "utrecht",
            "--format",
            "json",
        ).stdout
    )
    assert plan["machines_in_scope"] == 4  # the Groningen machines are outside the region
    assert plan["units"] == 2
    assert plan["share_of_risk_covered"] == pytest.approx(1.0)
    covered = {m["atm_id"] for p in plan["positions"] for m in p["machines"]}
    assert covered == {"U1", "U2", "U3", "U4"}
    routes = {r["label"] for p in plan["positions"] for r in p["escape_routes"]}
    assert any("A28 exit 1 Utrecht-Centrum" in r for r in routes)
    assert not any("Groningen" in r for r in routes)
    one = last_json(
        cli("plan", "patrol", "--units", "1", "--minutes", "10", "--format", "json").stdout
    )
    assert one["machines_in_scope"] == 6
    assert 0 < one["share_of_risk_covered"] < 1  # Utrecht and Groningen are 150 km apart
    geo = json.loads(
        cli("plan", "patrol", "--units", "1", "--minutes", "10", "--format", "geojson").stdout
    )
    assert geo["type"] == "FeatureCollection"
    assert geo["features"][0]["geometry"]["type"] == "Point"
    lon, lat = geo["features"][0]["geometry"]["coordinates"]
    assert 3 < lon < 8
    assert 50 < lat < 54
    bad = cli("plan", "patrol", "--units", "1", "--minutes", "10", "--region", "Atlantis", ok=False)
    assert bad.exit_code == 2
    assert "no region named 'Atlantis'" in bad.output
    before = cli(
        "plan", "patrol", "--units", "1", "--minutes", "10", "--night", "2020-01-01", ok=False
    )
    assert "no published scoring run before the night of 2020-01-01" in before.output


def test_sensitivity_table_moves_with_the_assumptions(cli) -> None:  # type: ignore[no-untyped-def]
    cli("score", "--as-of", "2025-10-01")
    doc = last_json(cli("plan", "sensitivity", "--budget", "10000", "--format", "json").stdout)
    rows = {(r["assumption"], r["factor"]): r for r in doc["sensitivity"]}
    base = rows[("base", 1.0)]
    assert (
        rows[("cash_at_risk_eur", 1.5)]["expected_loss_year_eur"] > base["expected_loss_year_eur"]
    )
    assert rows[("attack_rate", 0.5)]["expected_loss_year_eur"] == pytest.approx(
        base["expected_loss_year_eur"] / 2, rel=1e-3
    )
    # a uniform change of every machine's loss does not reorder the machines
    assert rows[("property_damage_eur", 0.5)]["rank_correlation"] == pytest.approx(1.0)
