"""`atm-risk backtest` end to end on a CSV of timed points (protocol shortened to 3 origins)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from atm_risk.cli import app


def _events_csv(path: Path) -> Path:
    rng = np.random.default_rng(3)
    n = 400
    days = np.sort(rng.uniform(0, 200, n))
    hot = rng.random(n) < 0.4
    lon = np.where(hot, 4.9 + rng.normal(0, 0.001, n), rng.uniform(4.85, 4.95, n))
    lat = np.where(hot, 52.37 + rng.normal(0, 0.001, n), rng.uniform(52.33, 52.40, n))
    stamps = np.datetime64("2024-01-01T00:00") + (days * 86400).astype("timedelta64[s]")
    rows = [f"{s},{x:.6f},{y:.6f}" for s, x, y in zip(stamps, lon, lat, strict=True)]
    path.write_text("when,x_deg,y_deg\n" + "\n".join(rows) + "\n")
    return path


def test_backtest_prints_tables_and_one_json_line(tmp_path: Path) -> None:
    path = _events_csv(tmp_path / "points.csv")
    result = CliRunner().invoke(
        app,
        [
            "backtest",
            "--events",
            str(path),
            "--time-col",
            "when",
            "--lon-col",
            "x_deg",
            "--lat-col",
            "y_deg",
            "--origins",
            "3",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout.strip().splitlines()[-1])
    assert doc["dataset"] == "points.csv"
    assert set(doc["methods"]) >= {"model", "prior_counts", "sepp", "prospective_hotspot"}
    for m in doc["methods"].values():
        assert set(m["hit_rate"]) == {"1", "5", "10", "20"}
        assert m["kind"] in {"model", "baseline"}
        assert m["pai"]["5"] == m["hit_rate"]["5"] / 0.05
        assert m["seconds"] >= 0
    # 40 % of the events sit in one spot: every sensible method flags it at 1 %.
    assert doc["methods"]["prior_counts"]["hit_rate"]["1"] > 0.3
    assert "Pooled hit rate" in result.stdout


def test_backtest_names_a_missing_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("when,lon,lat\n2024-01-01,4.9,52.3\n")
    result = CliRunner().invoke(app, ["backtest", "--events", str(path)])
    assert result.exit_code == 2
    assert "no time column found" in result.output
