"""``engine.build_features`` against brute-force references, and no time travel.

Every feature is recomputed in ``feature_reference`` (double loops, plain datetimes, a
numerical Rice integral) from the machines' and incidents' coordinates projected with
``geo.project``. The area layers are tiny boxes in WGS84 around 6E 51.5N.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pyproj import Transformer
from shapely.geometry import LineString, Point, box

from atm_risk.features import context as ctx
from atm_risk.features.context import AreaContext, PointLayer, PolygonLayer, context_from_layers
from atm_risk.features.engine import (
    FeatureConfig,
    build_features,
    count_column,
    exposure_column,
)
from atm_risk.geo import project
from tests.unit import feature_reference as ref

CRS = "EPSG:3035"
AS_OF = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
ORIGIN_LON, ORIGIN_LAT = 6.0, 51.5
X0, Y0 = (float(v[0]) for v in project([ORIGIN_LON], [ORIGIN_LAT], CRS))
TO_WGS84 = Transformer.from_crs(CRS, "EPSG:4326", always_xy=True)
# The hand-computed figures below assume a 5 km municipality error (set here, not defaulted).
EXACT = FeatureConfig(
    exposure_method="exact",
    location_uncertainty_m={"exact": 0.0, "address": 50.0, "municipality": 5_000.0},
)
PHYSICAL = ["explosive_gas", "explosive_solid", "explosive_unspecified", "ram_raid"]
NOT_PHYSICAL = ["other", "burglary", "skimming", "fraud"]
STATIC_COLUMNS = {
    "motorway_access_distance_m",
    "nearest_motorway_access",
    "police_station_distance_m",
    "nl_de_border_distance_m",
    "population_density_per_km2",
    "population_density_source",
    "urban_rural_class",
    "atms_within_1km",
    "atms_within_5km",
    "site_type",
    "night_closure",
    "opening_hours_per_week",
    "hardening_measures_n",
    "has_cash_protection",
    "has_gas_neutraliser",
    "has_bollards",
}
DYNAMIC_FIXED = {
    "days_since_last_attack_on_atm",
    "days_since_last_attack_within_5km",
    "regional_trend_50km_log_ratio",
}


# --- building inputs -----------------------------------------------------------------------


def lonlat(dx: float, dy: float) -> tuple[float, float]:
    """WGS84 lon/lat of the point (dx, dy) metres from the origin in EPSG:3035."""
    lon, lat = TO_WGS84.transform(X0 + dx, Y0 + dy)
    return float(lon), float(lat)


def projected(lon: Sequence[float], lat: Sequence[float]) -> np.ndarray:
    x, y = project(np.asarray(lon, dtype=float), np.asarray(lat, dtype=float), CRS)
    return np.column_stack([x, y])


def atm_frame(
    points: Sequence[tuple[float, float]], pks: Sequence[int] | None = None
) -> pd.DataFrame:
    """Machines at lon/lat ``points``; atm_pk 101, 102, ... unless given."""
    pks = list(pks) if pks is not None else [101 + i for i in range(len(points))]
    return pd.DataFrame(
        {
            "atm_pk": pd.Series(pks, dtype="int64"),
            "lon": pd.Series([p[0] for p in points], dtype=float),
            "lat": pd.Series([p[1] for p in points], dtype=float),
        }
    )


def incident(
    lon: float,
    lat: float,
    *,
    start: datetime,
    duration: timedelta = timedelta(0),
    precision: str = "exact",
    method: str = "explosive_gas",
    atm_pk: float = math.nan,
) -> dict[str, Any]:
    return {
        "lon": lon,
        "lat": lat,
        "occurred_from": pd.Timestamp(start).tz_convert("UTC"),
        "occurred_to": pd.Timestamp(start + duration).tz_convert("UTC"),
        "geocode_precision": precision,
        "method": method,
        "atm_pk": atm_pk,
    }


def incident_frame(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "lon": pd.Series([r["lon"] for r in rows], dtype=float),
            "lat": pd.Series([r["lat"] for r in rows], dtype=float),
            "occurred_from": pd.Series(
                [r["occurred_from"] for r in rows], dtype="datetime64[ns, UTC]"
            ),
            "occurred_to": pd.Series([r["occurred_to"] for r in rows], dtype="datetime64[ns, UTC]"),
            "geocode_precision": pd.Series([r["geocode_precision"] for r in rows], dtype=object),
            "method": pd.Series([r["method"] for r in rows], dtype=object),
            "atm_pk": pd.Series([r["atm_pk"] for r in rows], dtype=float),
        }
    )
    return frame


def ref_incidents(rows: Sequence[dict[str, Any]]) -> list[ref.RefIncident]:
    xy = projected([r["lon"] for r in rows], [r["lat"] for r in rows])
    return [
        ref.RefIncident(
            x=float(xy[k, 0]),
            y=float(xy[k, 1]),
            occurred_from=r["occurred_from"].to_pydatetime(),
            occurred_to=r["occurred_to"].to_pydatetime(),
            precision=r["geocode_precision"],
            method=r["method"],
            atm_pk=float(r["atm_pk"]),
        )
        for k, r in enumerate(rows)
    ]


def build(
    atms: pd.DataFrame,
    rows: Sequence[dict[str, Any]],
    context: AreaContext | None = None,
    *,
    as_of: datetime = AS_OF,
    config: FeatureConfig = EXACT,
) -> pd.DataFrame:
    return build_features(
        atms,
        incident_frame(rows),
        context if context is not None else AreaContext(crs=CRS),
        as_of=as_of,
        config=config,
    )


# --- strategies ----------------------------------------------------------------------------

BOX_M = 60_000.0
coord = st.floats(0.0, BOX_M, allow_nan=False, allow_infinity=False)
jitter = st.floats(-3_000.0, 3_000.0, allow_nan=False, allow_infinity=False)


@st.composite
def incident_rows(
    draw: st.DrawFn,
    atm_offsets: Sequence[tuple[float, float]],
    *,
    minutes_before: st.SearchStrategy[int],
    methods: Sequence[str],
    precisions: Sequence[str] = ("exact", "address", "municipality", "none"),
) -> dict[str, Any]:
    """One incident, anywhere in the box or within 3 km of a machine."""
    anchor = draw(st.none() | st.integers(0, len(atm_offsets) - 1))
    if anchor is None:
        dx, dy = draw(coord), draw(coord)
    else:
        dx = atm_offsets[anchor][0] + draw(jitter)
        dy = atm_offsets[anchor][1] + draw(jitter)
    start = AS_OF - timedelta(minutes=draw(minutes_before))
    duration = timedelta(minutes=draw(st.just(0) | st.integers(0, 10 * 1440)))
    link = draw(st.none() | st.integers(0, len(atm_offsets) - 1))
    return incident(
        *lonlat(dx, dy),
        start=start,
        duration=duration,
        precision=draw(st.sampled_from(precisions)),
        method=draw(st.sampled_from(methods)),
        atm_pk=math.nan if link is None else float(101 + link),
    )


# Minutes before as_of (< 0: after), with the edges of the time windows drawn often.
EDGES = st.sampled_from([0, 7 * 1440, 30 * 1440, 90 * 1440, 365 * 1440])
PAST_OR_FUTURE = st.integers(-30 * 1440, 400 * 1440) | EDGES
PAST = st.integers(1, 400 * 1440)
AT_OR_AFTER = st.integers(-400 * 1440, 0)
AFTER = st.integers(0, 400 * 1440)  # minutes after as_of


@st.composite
def scenarios(
    draw: st.DrawFn,
    *,
    max_atms: int = 10,
    max_incidents: int = 30,
    minutes_before: st.SearchStrategy[int] = PAST_OR_FUTURE,
    methods: Sequence[str] = (*PHYSICAL, "other", "burglary"),
) -> tuple[list[tuple[float, float]], list[dict[str, Any]]]:
    """Machines (offsets in metres from the origin) and incidents around them."""
    n = draw(st.integers(1, max_atms))
    offsets = draw(st.lists(st.tuples(coord, coord), min_size=n, max_size=n))
    rows = draw(
        st.lists(
            incident_rows(offsets, minutes_before=minutes_before, methods=methods),
            max_size=max_incidents,
        )
    )
    return offsets, rows


def off_boundaries(distances: np.ndarray, radii: Sequence[float], margin: float = 0.01) -> bool:
    return all(bool((np.abs(distances - r) > margin).all()) for r in radii)


# --- dynamic features against the reference ------------------------------------------------


def check_against_reference(
    offsets: Sequence[tuple[float, float]],
    rows: Sequence[dict[str, Any]],
    config: FeatureConfig,
) -> None:
    atms = atm_frame([lonlat(*o) for o in offsets])
    atm_xy = projected(atms["lon"], atms["lat"])
    incidents = ref_incidents(rows)
    used = ref.usable(incidents, AS_OF)
    uncertainty = dict(config.location_uncertainty_m)

    # Stay clear of the ties that floating point may break either way.
    atm_dist = ref.distance_matrix(atm_xy, atm_xy)
    assume(off_boundaries(atm_dist, [1_000.0, 5_000.0]))
    precise = [i for i in used if uncertainty[i.precision] < 1_000]
    radii = {r for r, _ in config.count_windows} | {5_000.0, 50_000.0}
    precise_xy = np.array([[i.x, i.y] for i in precise], dtype=float)
    assume(off_boundaries(ref.distance_matrix(atm_xy, precise_xy), sorted(radii)))
    if used:
        p5 = ref.within_5km_probabilities(atm_xy, used, uncertainty)
        assume(bool((np.abs(p5 - 0.5) > 1e-6).all()))

    table = build_features(
        atms, incident_frame(rows), AreaContext(crs=CRS), as_of=AS_OF, config=config
    )
    expected = ref.dynamic_features(
        atm_xy,
        [float(pk) for pk in atms["atm_pk"]],
        incidents,
        AS_OF,
        uncertainty=uncertainty,
        bandwidths=config.bandwidths,
        count_windows=config.count_windows,
        exposure_name=exposure_column,
        count_name=count_column,
    )
    assert set(table.columns) == STATIC_COLUMNS | set(expected)
    assert table.index.tolist() == atms["atm_pk"].tolist()
    n_used = max(len(used), 1)
    for column, values in expected.items():
        got = table[column].to_numpy(float)
        if column.startswith(("near_repeat_exposure_", "attacks_within_")):
            # Pairs beyond 6 bandwidths (or p < 1e-9) are left out by design.
            np.testing.assert_allclose(got, values, rtol=1e-9, atol=1e-7 * n_used, err_msg=column)
        elif column == "regional_trend_50km_log_ratio":
            np.testing.assert_allclose(got, values, rtol=0, atol=1e-6, err_msg=column)
        else:  # days since: the same ages, exactly (NaN where none)
            np.testing.assert_allclose(got, values, rtol=1e-12, atol=0, err_msg=column)

    np.testing.assert_array_equal(
        table["atms_within_1km"].to_numpy(), ref.count_others_within(atm_xy, 1_000.0)
    )
    np.testing.assert_array_equal(
        table["atms_within_5km"].to_numpy(), ref.count_others_within(atm_xy, 5_000.0)
    )
    # No area layers: every layer-based feature is missing, never a number.
    for column in (
        "motorway_access_distance_m",
        "police_station_distance_m",
        "nl_de_border_distance_m",
        "population_density_per_km2",
    ):
        assert table[column].isna().all(), column


@settings(database=None, max_examples=40, deadline=None)
@given(scenario=scenarios())
def test_dynamic_features_equal_brute_force_reference(
    scenario: tuple[list[tuple[float, float]], list[dict[str, Any]]],
) -> None:
    check_against_reference(*scenario, EXACT)


CUSTOM = FeatureConfig(
    location_uncertainty_m={"exact": 0.0, "address": 50.0, "municipality": 2_000.0},
    bandwidths=((1_000.0, 3.0), (5_000.0, 200.0)),
    count_windows=((1_000.0, 2.0), (10_000.0, 400.0)),
    exposure_method="exact",
)


@settings(database=None, max_examples=25, deadline=None)
@given(scenario=scenarios(max_atms=6, max_incidents=20))
def test_dynamic_features_follow_the_config(
    scenario: tuple[list[tuple[float, float]], list[dict[str, Any]]],
) -> None:
    # With a 2 km municipality error an uncertain incident can pass the p >= 0.5 rule.
    check_against_reference(*scenario, CUSTOM)


def test_dynamic_column_names() -> None:
    table = build(atm_frame([lonlat(0, 0)]), [])
    for name in (
        "near_repeat_exposure_400m_14d",
        "near_repeat_exposure_2km_30d",
        "near_repeat_exposure_30km_365d",
        "attacks_within_5km_last_7d",
        "attacks_within_50km_last_365d",
        *DYNAMIC_FIXED,
    ):
        assert name in table.columns


def test_hand_example_near_repeat_and_counts() -> None:
    atms = atm_frame([lonlat(0, 0), lonlat(20_000, 0)])
    rows = [
        # 1 km east of the first machine, 10 days ago (an instant).
        incident(*lonlat(1_000, 0), start=AS_OF - timedelta(days=10), atm_pk=101.0),
        # at the second machine, 3 days ago, known to municipality level only.
        incident(*lonlat(20_000, 0), start=AS_OF - timedelta(days=3), precision="municipality"),
    ]
    table = build(atms, rows)
    first, second = table.loc[101], table.loc[102]
    assert first["near_repeat_exposure_2km_30d"] == pytest.approx(
        math.exp(-10 / 30) * math.exp(-(1_000**2) / (2 * 2_000**2))
        + math.exp(-3 / 30) * 4 / 29 * math.exp(-(20_000**2) / (2 * (2_000**2 + 5_000**2))),
        rel=1e-6,
    )
    assert second["near_repeat_exposure_400m_14d"] == pytest.approx(
        math.exp(-3 / 14) * 400**2 / (400**2 + 5_000**2), rel=1e-6
    )
    # The first incident is 10 days old; the second lies 20 km away, with a 5 km error.
    assert first["attacks_within_5km_last_7d"] == pytest.approx(
        ref.within_probability([20_000.0], 5_000.0, 5_000.0)[0], rel=1e-6
    )
    assert first["attacks_within_25km_last_30d"] == pytest.approx(
        1.0 + ref.within_probability([20_000.0], 5_000.0, 25_000.0)[0], rel=1e-6
    )
    assert second["attacks_within_5km_last_7d"] == pytest.approx(1 - math.exp(-0.5), rel=1e-6)
    assert first["days_since_last_attack_on_atm"] == 10.0
    assert first["days_since_last_attack_within_5km"] == 10.0
    # A municipality-level incident is never within 5 km with p >= 0.5 (at most 0.39).
    assert math.isnan(second["days_since_last_attack_within_5km"])
    assert math.isnan(second["days_since_last_attack_on_atm"])


# --- time travel -----------------------------------------------------------------------------


@settings(database=None, max_examples=40, deadline=None)
@given(
    # Known incidents mostly recent, so that many intervals straddle as_of.
    scenario=scenarios(
        max_atms=6, max_incidents=15, minutes_before=st.integers(-10 * 1440, 60 * 1440) | EDGES
    ),
    data=st.data(),
    as_of=st.sampled_from([AS_OF, AS_OF.astimezone(ZoneInfo("Europe/Amsterdam"))]),
)
def test_incidents_at_or_after_as_of_change_nothing(
    scenario: tuple[list[tuple[float, float]], list[dict[str, Any]]],
    data: st.DataObject,
    as_of: datetime,
) -> None:
    offsets, rows = scenario
    atms = atm_frame([lonlat(*o) for o in offsets])
    future = data.draw(
        st.lists(
            incident_rows(
                offsets,
                minutes_before=AT_OR_AFTER,
                methods=PHYSICAL,
                precisions=("exact", "address", "municipality"),
            ),
            min_size=1,
            max_size=10,
        ),
        label="future incidents",
    )
    # Inserted anywhere among the known incidents (their own order kept).
    combined = list(rows)
    for row in future:
        combined.insert(data.draw(st.integers(0, len(combined)), label="position"), row)
    # Nor does the end of an interval that started before as_of but ends at or after it.
    moved = [
        row | {"occurred_to": pd.Timestamp(as_of) + timedelta(minutes=data.draw(AFTER))}
        if row["occurred_from"] < as_of <= row["occurred_to"]
        else row
        for row in combined
    ]
    before = build(atms, rows, as_of=as_of)
    after = build(atms, moved, as_of=as_of)
    pd.testing.assert_frame_equal(after, before, check_exact=True)
    assert after.attrs == before.attrs


def test_an_incident_exactly_at_as_of_is_not_known_yet() -> None:
    atms = atm_frame([lonlat(0, 0)])
    at = incident(*lonlat(0, 0), start=AS_OF, atm_pk=101.0)
    just_before = incident(*lonlat(0, 0), start=AS_OF - timedelta(seconds=1), atm_pk=101.0)
    baseline = build(atms, [])
    pd.testing.assert_frame_equal(build(atms, [at]), baseline, check_exact=True)
    # The control: one second earlier it is known, at age 1 s.
    known = build(atms, [just_before])
    assert known.loc[101, "days_since_last_attack_on_atm"] == pytest.approx(1 / 86_400)
    assert known.loc[101, "attacks_within_5km_last_7d"] == 1.0


def test_interval_straddling_as_of_is_aged_from_the_middle_of_the_known_part() -> None:
    atms = atm_frame([lonlat(0, 0)])
    here = lonlat(0, 0)
    for ends_after in (timedelta(days=30), timedelta(days=1_000)):
        row = incident(
            *here,
            start=AS_OF - timedelta(days=10),
            duration=timedelta(days=10) + ends_after,
            atm_pk=101.0,
        )
        table = build(atms, [row])
        # Middle of [as_of - 10 d, as_of]: 5 days old, whatever the end after as_of.
        assert table.loc[101, "days_since_last_attack_on_atm"] == 5.0
        assert table.loc[101, "days_since_last_attack_within_5km"] == 5.0
        assert table.loc[101, "near_repeat_exposure_400m_14d"] == pytest.approx(
            math.exp(-5 / 14), rel=1e-12
        )
        assert table.loc[101, "attacks_within_5km_last_7d"] == 1.0
    # An interval that ended before as_of is aged from its own middle: 7 days, not < 7.
    ended = incident(
        *here, start=AS_OF - timedelta(days=10), duration=timedelta(days=6), atm_pk=101.0
    )
    table = build(atms, [ended])
    assert table.loc[101, "days_since_last_attack_on_atm"] == 7.0
    assert table.loc[101, "attacks_within_5km_last_7d"] == 0.0
    assert table.loc[101, "attacks_within_25km_last_30d"] == 1.0


# --- what counts as an attack ----------------------------------------------------------------


@st.composite
def ignored_rows(draw: st.DrawFn, offsets: Sequence[tuple[float, float]]) -> dict[str, Any]:
    """An incident the engine must ignore: not physical, not geocoded, or without location."""
    kind = draw(st.sampled_from(["method", "precision", "location"]))
    row = draw(
        incident_rows(
            offsets,
            minutes_before=PAST,
            methods=NOT_PHYSICAL if kind == "method" else PHYSICAL,
            precisions=("none",) if kind == "precision" else ("exact", "municipality"),
        )
    )
    if kind == "location":
        row["lon"] = row["lat"] = math.nan
    return row


@settings(database=None, max_examples=30, deadline=None)
@given(scenario=scenarios(max_atms=6, max_incidents=15), data=st.data())
def test_non_physical_and_ungeocoded_incidents_change_nothing(
    scenario: tuple[list[tuple[float, float]], list[dict[str, Any]]], data: st.DataObject
) -> None:
    offsets, rows = scenario
    atms = atm_frame([lonlat(*o) for o in offsets])
    noise = data.draw(st.lists(ignored_rows(offsets), min_size=1, max_size=8), label="ignored")
    combined = list(rows)
    for row in noise:
        combined.insert(data.draw(st.integers(0, len(combined)), label="position"), row)
    pd.testing.assert_frame_equal(build(atms, combined), build(atms, rows), check_exact=True)


@pytest.mark.parametrize(
    ("change", "counts"),
    [
        ({"method": "other"}, False),
        ({"method": "burglary"}, False),
        ({"geocode_precision": "none"}, False),
        ({"method": "ram_raid"}, True),
        ({"method": "explosive_solid"}, True),
        ({"method": "explosive_unspecified"}, True),
        ({"method": "explosive_gas"}, True),
    ],
)
def test_only_physical_geocoded_attacks_count(change: dict[str, str], counts: bool) -> None:
    atms = atm_frame([lonlat(0, 0)])
    row = incident(*lonlat(100, 0), start=AS_OF - timedelta(days=2), atm_pk=101.0) | change
    table = build(atms, [row])
    assert bool(table.loc[101, "attacks_within_5km_last_7d"] == 1.0) is counts
    assert bool(table.loc[101, "days_since_last_attack_on_atm"] == 2.0) is counts
    assert bool(table.loc[101, "near_repeat_exposure_400m_14d"] > 0.5) is counts
    assert bool(table.loc[101, "regional_trend_50km_log_ratio"] > 0) is counts


def test_unknown_precision_is_refused() -> None:
    row = incident(*lonlat(0, 0), start=AS_OF - timedelta(days=1), precision="street")
    with pytest.raises(ValueError, match="street"):
        build(atm_frame([lonlat(0, 0)]), [row])


# --- other dynamic rules ---------------------------------------------------------------------


def test_regional_trend_is_exactly_zero_without_incidents() -> None:
    atms = atm_frame([lonlat(0, 0), lonlat(5_000, 7_000)])
    assert (build(atms, [])["regional_trend_50km_log_ratio"] == 0.0).all()
    # Nor with attacks older than a year, too far away, or not physical.
    rows = [
        incident(*lonlat(0, 0), start=AS_OF - timedelta(days=366)),
        incident(*lonlat(200_000, 0), start=AS_OF - timedelta(days=5)),
        incident(*lonlat(0, 0), start=AS_OF - timedelta(days=5), method="other"),
    ]
    assert (build(atms, rows)["regional_trend_50km_log_ratio"] == 0.0).all()


def test_regional_trend_sign() -> None:
    atms = atm_frame([lonlat(0, 0)])
    recent = [incident(*lonlat(0, 0), start=AS_OF - timedelta(days=10))]
    older = [incident(*lonlat(0, 0), start=AS_OF - timedelta(days=200))]
    prior = 0.5 / 365
    assert build(atms, recent).loc[101, "regional_trend_50km_log_ratio"] == pytest.approx(
        math.log(1 / 90 + prior) - math.log(prior)
    )
    assert build(atms, older).loc[101, "regional_trend_50km_log_ratio"] == pytest.approx(
        math.log(prior) - math.log(1 / 275 + prior)
    )


def test_days_since_last_attack_on_atm_uses_the_link() -> None:
    atms = atm_frame([lonlat(0, 0), lonlat(30_000, 0), lonlat(0, 30_000)], pks=[7, 8, 9])
    rows = [
        # Linked to machine 7 although geocoded 100 km away: still an attack on it.
        incident(*lonlat(100_000, 0), start=AS_OF - timedelta(days=40), atm_pk=7.0),
        incident(*lonlat(0, 0), start=AS_OF - timedelta(days=12), atm_pk=7.0),
        incident(*lonlat(0, 0), start=AS_OF - timedelta(days=3), atm_pk=7.0, method="other"),
        incident(*lonlat(0, 0), start=AS_OF + timedelta(days=1), atm_pk=7.0),  # future
        # At machine 8 but not linked to it.
        incident(*lonlat(30_000, 0), start=AS_OF - timedelta(days=2)),
        # Linked to a machine not in the table.
        incident(*lonlat(0, 30_000), start=AS_OF - timedelta(days=1), atm_pk=99.0),
    ]
    table = build(atms, rows)
    assert table.loc[7, "days_since_last_attack_on_atm"] == 12.0
    assert math.isnan(table.loc[8, "days_since_last_attack_on_atm"])
    assert table.loc[8, "days_since_last_attack_within_5km"] == 2.0
    assert math.isnan(table.loc[9, "days_since_last_attack_on_atm"])
    assert table.loc[9, "days_since_last_attack_within_5km"] == 1.0


def test_atms_within_excludes_the_machine_itself() -> None:
    atms = atm_frame([lonlat(0, 0), lonlat(600, 0), lonlat(1_800, 0), lonlat(9_000, 0)])
    table = build(atms, [])
    assert table["atms_within_1km"].tolist() == [1, 1, 0, 0]
    assert table["atms_within_5km"].tolist() == [2, 2, 2, 0]
    alone = build(atm_frame([lonlat(0, 0)]), [])
    assert alone["atms_within_1km"].tolist() == [0]


# --- area context: static features ----------------------------------------------------------


def _box(lon0: float, lat0: float, lon1: float, lat1: float) -> shapely.Geometry:
    # Densified so that the projected edges follow the parallels closely.
    return shapely.segmentize(box(lon0, lat0, lon1, lat1), 0.01)


def _gdf(records: list[dict[str, Any]]) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(records, geometry="geometry", crs="EPSG:4326")


NL_BOX = (5.5, 51.0, 6.5, 52.0)
MUNICIPALITY_A = (5.5, 51.0, 6.0, 52.0)  # lists police stations: covered
BW_BOX = (6.5, 51.5, 7.5, 52.0)  # labelled Baden-Wuerttemberg (fictitious place)
NL_STATIONS = [(5.8, 51.4), (5.7, 51.7)]
BW_STATIONS = [(7.2, 51.8)]
VILD = [
    # lon, lat, motorway_access, road, exit, name, category, expected label
    (5.9, 51.45, "1", "A73", "3", "Venlo", "exit", "A73 exit 3 Venlo"),
    (6.2, 51.55, "true", "A67", None, "Zaarderheiken", "junction", "A67 junction Zaarderheiken"),
    (5.98, 51.47, "0", "A73", None, "Carpoolpunt", "poi_other", None),  # not an access
    (6.6, 51.3, "1", "A61", "2", "Kaldenkirchen", "exit", "A61 exit 2 Kaldenkirchen"),
    (5.6, 51.9, "True", "A2", "40", "Weert", "exit", "A2 exit 40 Weert"),
]
BORDER_NEAR = [(6.5, 50.9), (6.55, 51.45), (6.5, 52.1)]
BORDER_FAR = [(7.45, 50.9), (7.45, 52.1)]
# (box, layer, density per km2 or NaN)
POPULATION = [
    ((5.5, 51.0, 6.0, 51.5), "nl_postcodes4", 1_500.0),
    ((5.5, 51.5, 6.0, 52.0), "nl_postcodes4", 1_499.5),
    ((6.0, 51.0, 6.5, 51.5), "nl_postcodes4", 300.0),
    ((6.0, 51.5, 6.5, 52.0), "nl_postcodes4", math.nan),  # no inhabitants known
    ((6.5, 51.0, 7.0, 51.5), "de_municipalities", 299.5),
    ((6.5, 51.5, 7.0, 52.0), "de_municipalities", 5_000.0),
    ((6.25, 51.75, 6.5, 52.0), "de_municipalities", 1_000.0),  # under the unknown NL area
]
LON_EDGES = (5.5, 6.0, 6.25, 6.5, 7.0, 7.5)
LAT_EDGES = (51.0, 51.5, 51.75, 52.0)


def area_layers() -> dict[str, gpd.GeoDataFrame]:
    pc4 = [(b, d) for b, layer, d in POPULATION if layer == "nl_postcodes4"]
    gem = [(b, d) for b, layer, d in POPULATION if layer == "de_municipalities"]
    return {
        ctx.NL_TERRITORY: _gdf(
            [
                {"name": "Limburg", "geometry": _box(5.5, 51.0, 6.0, 52.0)},
                {"name": "Gelderland", "geometry": _box(6.0, 51.0, 6.5, 52.0)},
            ]
        ),
        ctx.DE_TERRITORY: _gdf(
            [
                {"GEN": "Nordrhein-Westfalen", "geometry": _box(6.5, 51.0, 7.5, 51.5)},
                {"GEN": "Baden-Württemberg", "geometry": _box(*BW_BOX)},
            ]
        ),
        ctx.NL_MUNICIPALITIES: _gdf(
            [
                {"name": "A", "geometry": _box(*MUNICIPALITY_A)},
                {"name": "B", "geometry": _box(6.0, 51.0, 6.5, 52.0)},
            ]
        ),
        ctx.NL_MOTORWAY: _gdf(
            [
                {
                    "motorway_access": v[2],
                    "road_number": v[3],
                    "exit_number": v[4],
                    "name": v[5],
                    "category": v[6],
                    "geometry": Point(v[0], v[1]),
                }
                for v in VILD
            ]
        ),
        ctx.NL_POLICE: _gdf([{"geometry": Point(p)} for p in NL_STATIONS]),
        ctx.DE_BW_POLICE: _gdf([{"geometry": Point(p)} for p in BW_STATIONS]),
        ctx.BORDER: _gdf(
            [
                {"near_nl_border": "1", "geometry": LineString(BORDER_NEAR)},
                {"near_nl_border": "0", "geometry": LineString(BORDER_FAR)},
            ]
        ),
        ctx.NL_POPULATION: _gdf(
            [
                {
                    "inwoners": None if math.isnan(d) else d * 10.0,
                    "oppervlakte_km2": 10.0,
                    "geometry": _box(*b),
                }
                for b, d in pc4
            ]
        ),
        ctx.DE_POPULATION: _gdf(
            [{"population": d * 4.0, "area_km2": 4.0, "geometry": _box(*b)} for b, d in gem]
        ),
    }


@cache
def area_context() -> AreaContext:
    return context_from_layers(area_layers(), CRS)


def _inside(lon: float, lat: float, bounds: tuple[float, float, float, float]) -> bool:
    return bounds[0] < lon < bounds[2] and bounds[1] < lat < bounds[3]


def reference_static(points: Sequence[tuple[float, float]]) -> dict[str, list[Any]]:
    """Static area features by brute force; points must be clear of every box edge."""
    xy = projected([p[0] for p in points], [p[1] for p in points])
    access = [v for v in VILD if v[7] is not None]
    access_xy = projected([v[0] for v in access], [v[1] for v in access])
    police_xy = projected(*zip(*(NL_STATIONS + BW_STATIONS), strict=True))
    near = projected(*zip(*BORDER_NEAR, strict=True))
    out: dict[str, list[Any]] = {k: [] for k in ("motorway", "label", "police", "border")}
    out |= {"density": [], "source": [], "class": []}
    for k, (lon, lat) in enumerate(points):
        if _inside(lon, lat, NL_BOX):
            d = ref.distance_matrix(xy[k : k + 1], access_xy)[0]
            out["motorway"].append(float(d.min()))
            out["label"].append(access[int(d.argmin())][7])
        else:
            out["motorway"].append(math.nan)
            out["label"].append(None)
        covered = _inside(lon, lat, MUNICIPALITY_A) or _inside(lon, lat, BW_BOX)
        police = ref.nearest_distance(xy[k : k + 1], police_xy)[0]
        out["police"].append(float(police) if covered else math.nan)
        out["border"].append(ref.point_polyline_distance(xy[k], near.tolist()))
        density, source = math.nan, None
        for layer in ("nl_postcodes4", "de_municipalities"):
            for b, name, d in POPULATION:
                if name == layer and math.isnan(density) and _inside(lon, lat, b):
                    density, source = d, (name if not math.isnan(d) else None)
        out["density"].append(density)
        out["source"].append(source)
        out["class"].append(ref.urban_rural(density))
    return out


def check_static(table: pd.DataFrame, points: Sequence[tuple[float, float]]) -> None:
    expected = reference_static(points)
    np.testing.assert_allclose(
        table["motorway_access_distance_m"].to_numpy(float), expected["motorway"], rtol=1e-9
    )
    assert table["nearest_motorway_access"].tolist() == expected["label"]
    np.testing.assert_allclose(
        table["police_station_distance_m"].to_numpy(float), expected["police"], rtol=1e-9
    )
    np.testing.assert_allclose(
        table["nl_de_border_distance_m"].to_numpy(float), expected["border"], rtol=1e-9, atol=1e-6
    )
    np.testing.assert_allclose(
        table["population_density_per_km2"].to_numpy(float), expected["density"], rtol=1e-12
    )
    assert table["population_density_source"].tolist() == expected["source"]
    assert table["urban_rural_class"].tolist() == expected["class"]
    xy = projected([p[0] for p in points], [p[1] for p in points])
    assert table["atms_within_1km"].tolist() == ref.count_others_within(xy, 1_000.0).tolist()
    assert table["atms_within_5km"].tolist() == ref.count_others_within(xy, 5_000.0).tolist()


@st.composite
def machine_lonlats(draw: st.DrawFn) -> list[tuple[float, float]]:
    """Machines over the whole map, some in clusters, clear of every box edge."""
    n = draw(st.integers(1, 12))
    points: list[tuple[float, float]] = []
    for _ in range(n):
        if points and draw(st.booleans()):
            base = points[draw(st.integers(0, len(points) - 1))]
            lon = base[0] + draw(st.floats(-0.05, 0.05))
            lat = base[1] + draw(st.floats(-0.03, 0.03))
        else:
            lon, lat = draw(st.floats(5.4, 7.6)), draw(st.floats(50.9, 52.1))
        points.append((lon, lat))
    margin = 0.003  # >= 200 m
    assume(all(abs(lon - e) > margin for lon, _ in points for e in LON_EDGES))
    assume(all(abs(lat - e) > margin for _, lat in points for e in LAT_EDGES))
    return points


@settings(database=None, max_examples=40, deadline=None)
@given(points=machine_lonlats())
def test_static_area_features_equal_brute_force_reference(
    points: list[tuple[float, float]],
) -> None:
    xy = projected([p[0] for p in points], [p[1] for p in points])
    assume(off_boundaries(ref.distance_matrix(xy, xy), [1_000.0, 5_000.0]))
    table = build(atm_frame(points), [], area_context())
    check_static(table, points)


def test_police_distance_is_missing_outside_the_covered_area() -> None:
    points = [
        (5.81, 51.4),  # municipality A (lists stations): 700 m from a station
        (6.01, 51.4),  # municipality B (lists none): a station 14 km away is not the nearest
        (7.2, 51.81),  # Baden-Wuerttemberg: complete
        (6.8, 51.2),  # Nordrhein-Westfalen: no police layer
        (8.0, 51.5),  # outside every area
    ]
    table = build(atm_frame(points), [], area_context())
    police = table["police_station_distance_m"].to_numpy(float)
    assert 600 < police[0] < 800
    assert math.isnan(police[1])
    assert math.isnan(police[3])
    assert math.isnan(police[4])
    assert 1_000 < police[2] < 1_200
    check_static(table, points)


def test_motorway_distance_and_label_from_the_nearest_access() -> None:
    points = [
        (5.98, 51.47),  # at the carpool point, which is no motorway access
        (5.9, 51.451),  # next to exit 3 Venlo
        (6.45, 51.3),  # in NL, nearest exit is across the border
        (6.6, 51.31),  # in Germany (no German motorway layer): missing
    ]
    table = build(atm_frame(points), [], area_context())
    labels = table["nearest_motorway_access"].tolist()
    assert labels[:3] == ["A73 exit 3 Venlo", "A73 exit 3 Venlo", "A61 exit 2 Kaldenkirchen"]
    assert labels[3] is None
    distance = table["motorway_access_distance_m"].to_numpy(float)
    assert distance[0] > 5_000  # not the 0 m to the carpool point
    assert 100 < distance[1] < 120
    assert math.isnan(distance[3])
    assert table.attrs["missing_layers"] == [ctx.DE_MOTORWAY]
    check_static(table, points)


def test_population_density_and_urban_rural_classes() -> None:
    points = [
        (5.7, 51.2),  # 1500: urban (threshold inclusive)
        (5.7, 51.7),  # 1499.5: intermediate
        (6.2, 51.2),  # 300: intermediate (threshold inclusive)
        (6.7, 51.2),  # 299.5: rural, from the German layer
        (6.2, 51.6),  # Dutch area without inhabitants: missing
        (6.4, 51.9),  # the same, but a German area below it: 1000
        (7.2, 51.2),  # no polygon: missing
    ]
    table = build(atm_frame(points), [], area_context())
    density = table["population_density_per_km2"].tolist()
    assert density[:4] == [1_500.0, 1_499.5, 300.0, 299.5]
    assert math.isnan(density[4])
    assert density[5] == 1_000.0
    assert math.isnan(density[6])
    assert table["urban_rural_class"].tolist() == [
        "urban",
        "intermediate",
        "intermediate",
        "rural",
        None,
        "intermediate",
        None,
    ]
    assert table["population_density_source"].tolist() == [
        "nl_postcodes4",
        "nl_postcodes4",
        "nl_postcodes4",
        "de_municipalities",
        None,
        "de_municipalities",
        None,
    ]
    check_static(table, points)


def test_border_distance_uses_only_the_lines_near_the_dutch_border() -> None:
    points = [(7.44, 51.2), (6.55, 51.45)]
    table = build(atm_frame(points), [], area_context())
    border = table["nl_de_border_distance_m"].to_numpy(float)
    assert border[0] > 50_000  # not the ~700 m to the far (non-Dutch) line
    assert border[1] == pytest.approx(0.0, abs=1e-3)  # on a vertex of the border line
    check_static(table, points)


def _square(x0: float, y0: float, size: float) -> shapely.Geometry:
    return box(x0, y0, x0 + size, y0 + size)


def test_population_density_for_a_machine_on_a_polygon_edge() -> None:
    """A machine exactly on the edge of an area (shared or outer) belongs to it."""
    points = [lonlat(0, 0), lonlat(3_000, 500), lonlat(6_000, 1_000)]
    xy = projected([p[0] for p in points], [p[1] for p in points])
    (x, y), (x2, y2), (x3, y3) = xy
    layer = PolygonLayer(
        "areas",
        np.array(
            [
                box(x - 1_000, y - 1_000, x, y + 1_000),  # machine 1 on the shared edge
                box(x, y - 1_000, x + 1_000, y + 1_000),
                box(x2, y2 - 500, x2 + 1_000, y2 + 500),  # machine 2 on the outer edge
                _square(x3, y3, 100.0),  # machine 3 on the corner
            ]
        ),
        np.array([100.0, 200.0, 2_000.0, 400.0]),
    )
    table = build(atm_frame(points), [], AreaContext(crs=CRS, population=[layer]))
    density = table["population_density_per_km2"].tolist()
    assert density[0] in (100.0, 200.0)
    assert density[1:] == [2_000.0, 400.0]


def test_point_layer_without_coverage_is_complete_and_empty_layer_is_missing() -> None:
    points = [lonlat(0, 0), lonlat(40_000, -25_000)]
    xy = projected([p[0] for p in points], [p[1] for p in points])
    stations = xy[:1] + np.array([[300.0, 400.0]])
    context = AreaContext(
        crs=CRS,
        police=[PointLayer("everywhere", stations, None, coverage=None)],
        motorway=[PointLayer("none yet", np.zeros((0, 2)), [], coverage=None)],
    )
    table = build(atm_frame(points), [], context)
    expected = ref.nearest_distance(xy, stations)
    np.testing.assert_allclose(table["police_station_distance_m"], expected, rtol=1e-12)
    assert table["police_station_distance_m"].iloc[0] == pytest.approx(500.0)
    assert table["motorway_access_distance_m"].isna().all()
    assert table["nearest_motorway_access"].isna().all()


# --- inputs, errors --------------------------------------------------------------------------


def test_inputs_are_not_modified() -> None:
    atms = atm_frame([(5.81, 51.4), (5.82, 51.41), (6.7, 51.2)], pks=[3, 1, 2])
    atms["site_type"] = ["indoor", "wall", "standalone"]
    atms["night_closure"] = [True, False, None]
    atms["opening_hours"] = [
        dict.fromkeys(("mo", "tu", "we", "th", "fr", "sa", "su"), "00:00-24:00"),
        None,
        {"mo": "closed"},
    ]
    atms["hardening"] = [["dye_ink", "bollards"], [], None]
    rows = [  # deliberately in no particular order
        incident(5.83, 51.4, start=AS_OF - timedelta(days=3), atm_pk=3.0),
        incident(6.71, 51.2, start=AS_OF - timedelta(days=30), precision="municipality"),
        incident(math.nan, math.nan, start=AS_OF - timedelta(days=1), precision="none"),
        incident(5.8, 51.41, start=AS_OF + timedelta(days=3)),
        incident(5.9, 51.39, start=AS_OF - timedelta(days=1), method="other"),
        incident(5.81, 51.38, start=AS_OF - timedelta(days=9), precision="address"),
    ]
    incidents = incident_frame(rows)
    layers = area_layers()
    context = context_from_layers(layers, CRS)
    # pickle, not copy.deepcopy: a DataFrame's deepcopy shares the lists and dicts in its cells.
    saved = pickle.loads(pickle.dumps((atms, incidents, layers)))
    saved_context = pickle.loads(pickle.dumps(context))

    table = build_features(atms, incidents, context, as_of=AS_OF, config=EXACT)

    assert table.index.tolist() == [3, 1, 2]  # one row per machine, in input order
    pd.testing.assert_frame_equal(atms, saved[0], check_exact=True)
    pd.testing.assert_frame_equal(incidents, saved[1], check_exact=True)
    for name, frame in layers.items():
        pd.testing.assert_frame_equal(frame, saved[2][name], check_exact=True)
    for before, after in zip(
        saved_context.motorway + saved_context.police,
        context.motorway + context.police,
        strict=True,
    ):
        np.testing.assert_array_equal(after.xy, before.xy)
        assert after.labels == before.labels
    for before, after in zip(saved_context.population, context.population, strict=True):
        np.testing.assert_array_equal(after.density_per_km2, before.density_per_km2)
    assert context.missing_layers == saved_context.missing_layers
    # The same call again gives the same table.
    again = build_features(atms, incidents, context, as_of=AS_OF, config=EXACT)
    pd.testing.assert_frame_equal(again, table, check_exact=True)


def test_context_in_another_crs_is_refused() -> None:
    with pytest.raises(ValueError, match="EPSG:28992"):
        build(atm_frame([lonlat(0, 0)]), [], AreaContext(crs="EPSG:28992"))
    with pytest.raises(ValueError, match="EPSG:3035"):
        build(
            atm_frame([lonlat(0, 0)]),
            [],
            AreaContext(crs=CRS),
            config=FeatureConfig(metric_crs="EPSG:25832"),
        )


def test_naive_as_of_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone"):
        build(atm_frame([lonlat(0, 0)]), [], as_of=AS_OF.replace(tzinfo=None))


def test_missing_columns_are_refused() -> None:
    with pytest.raises(ValueError, match="lat"):
        build(atm_frame([lonlat(0, 0)]).drop(columns="lat"), [])
    with pytest.raises(ValueError, match="method"):
        build_features(
            atm_frame([lonlat(0, 0)]),
            incident_frame([]).drop(columns="method"),
            AreaContext(crs=CRS),
            as_of=AS_OF,
        )


def test_location_errors_are_quantised_to_a_short_ladder() -> None:
    from atm_risk.features.engine import quantise_sigma

    raw = np.array([0.0, 50.0, 249.0, 250.0, 3_000.0, 3_100.0, 7_777.0])
    q = quantise_sigma(raw)
    assert q[:3].tolist() == [0.0, 50.0, 249.0]  # small errors kept
    assert q[3] == 250.0
    assert np.all(np.abs(q[3:] / raw[3:] - 1) <= 0.12)
    many = quantise_sigma(np.linspace(300, 12_000, 5_000))
    assert len(np.unique(many)) <= 20


def test_machine_attributes_same_for_shared_and_distinct_objects() -> None:
    """Machines sharing one schedule or measures object (as read in bulk) get the same
    values as machines with equal objects of their own."""
    from atm_risk.features.engine import machine_attributes

    always = dict.fromkeys(("mo", "tu", "we", "th", "fr", "sa", "su"), "00:00-24:00")
    shop = {**dict.fromkeys(("mo", "tu", "we", "th", "fr", "sa"), "07:00-23:00"), "su": "closed"}
    measures = ["dye_ink", "bollards"]
    shared_hours = [always, shop, None, always, {"mo": "closed"}, shop]
    shared_measures = [measures, [], None, measures, ("glue",), {"gas_neutraliser"}]
    frame = pd.DataFrame(
        {
            "site_type": ["wall"] * 6,
            "night_closure": [True, False, None, True, False, None],
            "opening_hours": pd.Series(shared_hours, dtype=object),
            "hardening": pd.Series(shared_measures, dtype=object),
        }
    )
    copies = frame.copy()
    copies["opening_hours"] = pd.Series(
        [dict(h) if isinstance(h, dict) else h for h in shared_hours], dtype=object
    )
    copies["hardening"] = pd.Series(
        [type(m)(m) if m is not None else None for m in shared_measures], dtype=object
    )
    shared, distinct = machine_attributes(frame), machine_attributes(copies)
    assert shared.keys() == distinct.keys()
    for name in shared:
        np.testing.assert_array_equal(np.asarray(shared[name]), np.asarray(distinct[name]))
    np.testing.assert_array_equal(
        shared["opening_hours_per_week"], [168.0, 96.0, np.nan, 168.0, np.nan, 96.0]
    )
    np.testing.assert_array_equal(shared["hardening_measures_n"], [2.0, 0.0, 0.0, 2.0, 1.0, 1.0])
    np.testing.assert_array_equal(shared["has_cash_protection"], [1, 0, 0, 1, 1, 0])
    np.testing.assert_array_equal(shared["has_gas_neutraliser"], [0, 0, 0, 0, 0, 1])
    np.testing.assert_array_equal(shared["has_bollards"], [1, 0, 0, 1, 0, 0])
