"""`atm-risk demo` end to end on the shipped data (what `make demo` runs)."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

from typer.testing import CliRunner

from atm_risk.cli import app
from tests.conftest import DATA


def test_demo_writes_a_ranking_row_for_every_machine(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        ["demo", "--out", str(out), "--database", str(tmp_path / "demo.sqlite3")],
        env={"ATM_RISK_DATA_DIR": str(DATA)},
    )
    assert result.exit_code == 0, result.output
    assert "accepted 3559, rejected 0" in result.output
    with (out / "ranking.csv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    with gzip.open(DATA / "geldmaat_atm_locations_nl/geldmaat_locations.csv.gz", "rt") as fh:
        geldmaat_ids = {r["location_id"] for r in csv.DictReader(fh)}
    ranked_geldmaat = {r["atm_id"] for r in rows if r["operator"] == "Geldmaat"}
    assert ranked_geldmaat == geldmaat_ids
    assert len(rows) == 3559 + 723
    assert [int(r["rank"]) for r in rows] == list(range(1, len(rows) + 1))
    scores = [float(r["score"]) for r in rows]
    assert scores == sorted(scores, reverse=True)
    assert all(r["reasons"] for r in rows)
    assert not (out / "ranking.csv.tmp").exists()
    # decisions on every row, and both plans written beside the ranking
    assert all(r["action"] and r["action_reason"] and r["probability"] for r in rows)
    hardening = json.loads((out / "hardening_plan.json").read_text(encoding="utf-8"))
    assert 0 < hardening["spent_eur"] <= 500_000
    assert hardening["machines_hardened"] == len(hardening["items"]) > 0
    assert sum(i["cost_eur"] for i in hardening["items"]) == hardening["spent_eur"]
    assert len({(i["operator"], i["atm_id"]) for i in hardening["items"]}) == len(
        hardening["items"]
    )  # at most one measure per machine
    patrol = json.loads((out / "patrol_plan.json").read_text(encoding="utf-8"))
    assert len(patrol["positions"]) == 5
    assert 0 < patrol["share_of_risk_covered"] <= 1
    kinds = {p["kind"] for p in patrol["positions"]}
    assert kinds <= {"motorway_access", "police_station", "risk_cluster"}
    geo = json.loads((out / "patrol_plan.geojson").read_text(encoding="utf-8"))
    assert len(geo["features"]) == 5
    with (out / "sensitivity.csv").open(encoding="utf-8") as fh:
        table = list(csv.DictReader(fh))
    assert table[0]["assumption"] == "base"
    assert len(table) == 11
