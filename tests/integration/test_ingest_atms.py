"""Ingesting ATMs: bad rows reported by line, valid rows committed at once, no duplicates."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import pytest
import shapely
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from atm_risk.atms.models import Atm
from atm_risk.cli import app
from atm_risk.clock import FrozenClock
from atm_risk.ingest.errors import IngestError
from atm_risk.ingest.run import ingest_atms

FIVE_ATMS = """atm_id,operator,lat,lon,site_type,opening_hours,hardening
A1,Bank One,52.10,5.10,shop,07:00-23:00,
A2,Bank One,95,5.20,branch,,
,Bank One,52.30,5.30,branch,,
A4,Bank Two,52.40,5.40,free_standing,24h,dye_ink|bollards
A5,Bank Two,52.50,5.50,foyer,,
"""


def _count(sessions: sessionmaker[Session]) -> int:
    with sessions() as s:
        return int(s.scalar(select(func.count()).select_from(Atm)) or 0)


def test_five_rows_two_bad_accepts_three_and_names_lines(
    sessions: sessionmaker[Session], clock: FrozenClock, write
) -> None:
    path = write("atms.csv", FIVE_ATMS)
    report = ingest_atms(sessions, path=path, clock=clock)
    assert report.summary_line() == "accepted 3, rejected 2"
    assert [r.location for r in report.rejections] == ["line 3", "line 4"]
    assert "lat" in report.rejections[0].reason
    assert "90" in report.rejections[0].reason
    assert "atm_id" in report.rejections[1].reason
    assert _count(sessions) == 3
    with sessions() as s:
        a4 = s.scalar(select(Atm).where(Atm.atm_id == "A4"))
        assert a4 is not None
        assert a4.hardening == ["bollards", "dye_ink"]
        assert a4.night_closure is False  # open 24h
        a1 = s.scalar(select(Atm).where(Atm.atm_id == "A1"))
        assert a1 is not None
        assert a1.night_closure is True


def test_strict_writes_nothing_when_a_row_is_bad(
    sessions: sessionmaker[Session], clock: FrozenClock, write
) -> None:
    report = ingest_atms(sessions, path=write("atms.csv", FIVE_ATMS), strict=True, clock=clock)
    assert report.summary_line() == "accepted 3, rejected 2"
    assert not report.written
    assert _count(sessions) == 0


def test_reingest_same_file_creates_no_duplicates(
    sessions: sessionmaker[Session], clock: FrozenClock, write
) -> None:
    path = write("atms.csv", FIVE_ATMS)
    first = ingest_atms(sessions, path=path, clock=clock)
    second = ingest_atms(sessions, path=path, clock=clock)
    assert (first.inserted, second.inserted, second.unchanged) == (3, 0, 3)
    assert _count(sessions) == 3


def test_changed_row_is_updated_in_place(
    sessions: sessionmaker[Session], clock: FrozenClock, write
) -> None:
    ingest_atms(sessions, path=write("a.csv", FIVE_ATMS), clock=clock)
    changed = FIVE_ATMS.replace("A1,Bank One,52.10,5.10", "A1,Bank One,52.11,5.10")
    report = ingest_atms(sessions, path=write("b.csv", changed), clock=clock)
    assert (report.inserted, report.updated, report.unchanged) == (0, 1, 2)
    with sessions() as s:
        assert s.scalar(select(Atm.lat).where(Atm.atm_id == "A1")) == pytest.approx(52.11)


def test_duplicate_key_in_one_file_rejects_the_later_row(
    sessions: sessionmaker[Session], clock: FrozenClock, write
) -> None:
    body = "atm_id,operator,lat,lon\nX,B,52,5\nX,B,52.1,5.1\nX,Other,52,5\n"
    report = ingest_atms(sessions, path=write("d.csv", body), clock=clock)
    assert report.summary_line() == "accepted 2, rejected 1"
    assert str(report.rejections[0]).startswith("line 3: duplicate atm_id 'X'")
    assert "line 2" in report.rejections[0].reason


def test_empty_optional_cells_take_their_defaults(
    sessions: sessionmaker[Session], clock: FrozenClock, write
) -> None:
    # found by reliability/badinput.py: an empty site_type rejected the row as "missing"
    body = "atm_id,operator,lat,lon,site_type,status,hardening\nE1,B,52,5,,,\n,B,52,5,shop,,\n"
    report = ingest_atms(sessions, path=write("e.csv", body), clock=clock)
    assert report.summary_line() == "accepted 1, rejected 1"
    assert str(report.rejections[0]) == "line 3: atm_id: required, missing"
    with sessions() as s:
        e1 = s.scalar(select(Atm).where(Atm.atm_id == "E1"))
        assert e1 is not None
        assert (e1.site_type, e1.status, e1.hardening) == ("unknown", "active", [])


def test_missing_required_column_is_a_file_error_and_writes_nothing(
    sessions: sessionmaker[Session], clock: FrozenClock, write
) -> None:
    with pytest.raises(IngestError, match="operator"):
        ingest_atms(sessions, path=write("m.csv", "atm_id,lat,lon\nA,52,5\n"), clock=clock)
    assert _count(sessions) == 0


def test_geojson_points_are_numbered_by_feature(
    sessions: sessionmaker[Session], clock: FrozenClock, write
) -> None:
    doc = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "properties": {"atm_id": 1, "operator": "B"},
                "geometry": {"type": "Point", "coordinates": [5.1, 52.1]},
            },
            {
                "type": "Feature",
                "properties": {"atm_id": 2, "operator": "B"},
                "geometry": {"type": "LineString", "coordinates": [[5, 52], [5.1, 52.1]]},
            },
            {
                "type": "Feature",
                "properties": {"atm_id": 3, "operator": "B", "site_type": "spaceship"},
                "geometry": {"type": "Point", "coordinates": [5.1, 52.1]},
            },
        ],
    }
    report = ingest_atms(sessions, path=write("a.geojson", json.dumps(doc)), clock=clock)
    assert report.summary_line() == "accepted 1, rejected 2"
    assert [r.location for r in report.rejections] == ["feature 2", "feature 3"]
    assert "Point" in report.rejections[0].reason
    assert "site_type" in report.rejections[1].reason
    with sessions() as s:
        assert s.scalar(select(Atm.atm_id)) == "1"


def test_geopackage_in_a_projected_crs_is_reprojected(
    sessions: sessionmaker[Session], clock: FrozenClock, tmp_path: Path
) -> None:
    # Utrecht Dom tower in the Dutch RD New grid (EPSG:28992).
    frame = gpd.GeoDataFrame(
        {"atm_id": ["U1"], "operator": ["Bank"]},
        geometry=[shapely.Point(136_600, 455_900)],
        crs="EPSG:28992",
    )
    path = tmp_path / "atms.gpkg"
    frame.to_file(path, driver="GPKG")
    report = ingest_atms(sessions, path=path, clock=clock)
    assert report.summary_line() == "accepted 1, rejected 0"
    with sessions() as s:
        atm = s.scalar(select(Atm))
        assert atm is not None
        assert atm.lat == pytest.approx(52.09, abs=0.01)
        assert atm.lon == pytest.approx(5.12, abs=0.01)


def test_cli_prints_summary_and_line_reasons(database_url: str, write) -> None:
    path = write("atms.csv", FIVE_ATMS)
    runner = CliRunner()
    env = {"ATM_RISK_DATABASE_URL": database_url}
    result = runner.invoke(app, ["ingest", "atms", str(path)], env=env)
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert lines[0] == "accepted 3, rejected 2"
    assert any(line.startswith("line 3: lat") for line in lines)
    assert any(line.startswith("line 4: atm_id") for line in lines)
    again = runner.invoke(app, ["ingest", "atms", "--strict", str(path)], env=env)
    assert again.exit_code == 1
    assert "written: nothing" in again.output
    missing = runner.invoke(app, ["ingest", "atms", str(path) + ".nope"], env=env)
    assert missing.exit_code == 2
    assert "no such file" in missing.output
