"""The benchmark protocol pieces: grid, tie rule, origins, metrics, events input."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from atm_risk.risk import metrics
from atm_risk.risk.backtest import protocol_origins
from atm_risk.risk.events import EventsInputError, load_events
from atm_risk.risk.grid import Grid, project_utm
from atm_risk.risk.history import History


def test_grid_follows_the_protocol() -> None:
    x = np.array([1000.0, 1449.9, 1150.0])
    y = np.array([2000.0, 2000.0, 2301.0])
    grid = Grid.covering(x, y, crs="EPSG:32631")
    assert (grid.xmin, grid.ymin) == (900.0, 1950.0)  # floor(min / 150) * 150
    assert grid.nx == math.floor((1449.9 - 900) / 150) + 1 == 4
    assert grid.ny == math.floor((2301 - 1950) / 150) + 1 == 3
    # iy = 0 is the southern row; index = iy * nx + ix
    assert grid.index(
        np.array([900.0, 1050.0, 900.0]), np.array([1950.0, 1950.0, 2100.0])
    ).tolist() == [0, 1, 4]
    cx, cy = grid.centres()
    assert (cx[5], cy[5]) == (900 + 1.5 * 150, 1950 + 1.5 * 150)


def test_utm_zone_from_bbox_centre() -> None:
    _, _, crs = project_utm(np.array([-90.1, -89.7]), np.array([35.0, 35.3]))
    assert crs == "EPSG:32616"
    _, _, crs = project_utm(np.array([4.8, 5.0]), np.array([52.3, 52.4]))
    assert crs == "EPSG:32631"


def test_ties_are_broken_by_ascending_cell_index() -> None:
    risk = np.array([0.0, 2.0, 1.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    assert metrics.ranked_cells(risk)[:4].tolist() == [1, 3, 2, 0]
    assert metrics.flagged(risk, 20).tolist() == [1, 3]
    assert metrics.flagged(risk, 21).tolist() == [1, 3, 2]  # ceil(2.1) = 3 cells
    assert metrics.share_flagged_positive(risk, 50) == pytest.approx(0.6)


def test_hits_and_pai() -> None:
    risk = np.zeros(100)
    risk[[7, 8]] = [3.0, 1.0]
    events = np.array([7, 7, 8, 50])
    assert metrics.hits(risk, events, 1) == 2
    assert metrics.hits(risk, events, 2) == 3
    assert metrics.hits(risk, events, 5) == 3  # cells 0-2 fill the ties; 50 is not flagged


def test_origins_are_weekly_ending_a_week_before_the_last_event_day() -> None:
    t = np.array([10.0, 200.5, 300.75])
    grid = Grid.covering(np.array([0.0]), np.array([0.0]), crs="EPSG:32631")
    h = History(t, np.zeros(3), np.zeros(3), np.zeros(3, dtype=np.int64), grid)
    origins = protocol_origins(h)
    assert len(origins) == 26
    assert origins[-1] == 300 - 7
    assert np.diff(origins).tolist() == [7.0] * 25


def test_paired_bootstrap_detects_a_clear_difference() -> None:
    a, b, n = [8] * 20, [4] * 20, [10] * 20
    out = metrics.paired_bootstrap(a, b, n)
    assert out["difference"] == pytest.approx(0.4)
    assert out["p_not_better"] == 0.0
    same = metrics.paired_bootstrap(b, b, n)
    assert same["p_not_better"] == 1.0


def test_brier_skill_and_reliability() -> None:
    outcome = np.array([0, 0, 1, 1], dtype=float)
    perfect = outcome.copy()
    base = np.full(4, 0.5)
    assert metrics.brier_skill(perfect, base, outcome) == 1.0
    assert metrics.brier_skill(base, base, outcome) == 0.0
    rows = metrics.reliability(np.array([0.1, 0.2, 0.8, 0.9]), outcome, bins=2)
    assert [r["observed"] for r in rows] == [0.0, 1.0]


def test_events_any_csv_with_named_columns(tmp_path: Path) -> None:
    path = tmp_path / "e.csv"
    path.write_text("when,X,Y\n2020-01-02 03:04,5.1,52.1\n2020-01-01T00:00,5.0,52.0\n")
    events = load_events(path, time_col="when", lon_col="X", lat_col="Y")
    assert len(events) == 2
    assert str(events.time[0]) == "2020-01-01T00:00:00.000000000"  # sorted by time


@pytest.mark.parametrize(
    ("body", "kwargs", "message"),
    [
        ("when,lon,lat\n2020-01-01,5,52\n", {}, "no time column found"),
        ("datetime,lon\n2020-01-01,5\n", {}, "no lat column found"),
        ("datetime,lon,lat\n2020-01-01,5,52\n", {"lon_col": "x"}, "no lon column 'x'"),
        (
            "datetime,lon,lat\n2020-01-01,5,52\nyesterday,5,52\n",
            {},
            "column 'datetime': cannot parse",
        ),
        (
            "datetime,lon,lat\n2020-01-01,5,52\n2020-01-02,5,95\n",
            {},
            "column 'lat': not a coordinate",
        ),
    ],
)
def test_events_errors_name_the_column(
    tmp_path: Path, body: str, kwargs: dict[str, str], message: str
) -> None:
    path = tmp_path / "e.csv"
    path.write_text(body)
    with pytest.raises(EventsInputError, match=message):
        load_events(path, **kwargs)  # type: ignore[arg-type]


def test_unparseable_value_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "e.csv"
    path.write_text("datetime,lon,lat\n2020-01-01,5,52\n2020-01-02,five,52\n")
    with pytest.raises(EventsInputError, match=r"line 3: 'five'"):
        load_events(path)
