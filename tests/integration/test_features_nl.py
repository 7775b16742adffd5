"""The feature table on the shipped Dutch data: plausible values for every Geldmaat machine."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from atm_risk.areas.service import ingest_area
from atm_risk.atms.models import Atm
from atm_risk.catalog import SHIPPED
from atm_risk.clock import FrozenClock
from atm_risk.config import Settings
from atm_risk.features.store import compute_features
from atm_risk.ingest.run import ingest_atms, ingest_incidents
from tests.conftest import DATA

LAYERS = (
    "nl_provinces",
    "nl_municipalities",
    "nl_postcodes4",
    "nl_vild_points",
    "nl_police_stations",
    "de_states",
    "de_national_border",
)
WADDEN_POSTCODES = ("1791", "1794", "1796", "8881", "8891", "9161", "9163", "9164", "8899")


def _features(sessions: sessionmaker[Session], clock: FrozenClock) -> pd.DataFrame:
    ingest_atms(
        sessions,
        path=DATA / "geldmaat_atm_locations_nl/geldmaat_locations.csv.gz",
        profile="geldmaat",
        clock=clock,
    )
    ingest_incidents(
        sessions, path=DATA / "atm_attacks_news_compiled/incidents.csv", profile="news", clock=clock
    )
    for item in SHIPPED:
        if item.layer in LAYERS:
            ingest_area(sessions, name=item.layer, path=item.resolve(DATA), clock=clock)
    with sessions() as session:
        return compute_features(session, Settings(), as_of=datetime(2020, 1, 1, tzinfo=UTC))


def _postcodes(features: pd.DataFrame, sessions: sessionmaker[Session]) -> pd.Series:
    with sessions() as s:
        pcs = dict(s.execute(select(Atm.id, Atm.postcode)).all())
    return pd.Series([pcs[i] or "" for i in features.index], index=features.index)


def _check_every_geldmaat_machine_has_a_row(features: pd.DataFrame) -> None:
    assert len(features) == 3559
    assert features["motorway_access_distance_m"].notna().all()
    assert features["population_density_per_km2"].notna().mean() > 0.99


def _check_amsterdam_is_dense_and_urban(
    features: pd.DataFrame, sessions: sessionmaker[Session]
) -> None:
    pc = _postcodes(features, sessions)
    amsterdam = features[pc.str[:2].isin(["10", "11"]) & pc.str[:4].between("1011", "1109")]
    assert len(amsterdam) > 100
    assert amsterdam["population_density_per_km2"].median() > 5_000
    assert (amsterdam["urban_rural_class"] == "urban").mean() > 0.8
    assert amsterdam["atms_within_1km"].median() >= 5


def _check_wadden_islands_are_far_from_motorways(
    features: pd.DataFrame, sessions: sessionmaker[Session]
) -> None:
    pc = _postcodes(features, sessions)
    islands = features[pc.str[:4].isin(WADDEN_POSTCODES)]
    assert len(islands) >= 5
    mainland = features.drop(islands.index)
    assert islands["motorway_access_distance_m"].min() > 15_000
    assert mainland["motorway_access_distance_m"].median() < 5_000


def _check_partial_police_layer_leaves_uncovered_machines_missing(features: pd.DataFrame) -> None:
    police = features["police_station_distance_m"]
    assert 0.1 < police.notna().mean() < 0.6  # ~100 of ~250 Dutch stations are shipped
    assert police.max() < 20_000  # covered machines get a real, short distance


def _check_border_distance_is_small_near_the_border(features: pd.DataFrame) -> None:
    assert features["nl_de_border_distance_m"].min() < 2_000
    assert features["nl_de_border_distance_m"].max() < 300_000


def _check_news_incidents_before_t_drive_exposure(features: pd.DataFrame) -> None:
    assert (features["near_repeat_exposure_30km_365d"] > 0.1).sum() > 50
    assert features["attacks_within_50km_last_365d"].max() >= 1


def _check_municipality_sigma_from_its_area(sessions: sessionmaker[Session]) -> None:
    import math

    from atm_risk.areas.service import load_layer
    from atm_risk.features.store import incident_frame

    with sessions() as s:
        incidents = incident_frame(s)
        municipalities = load_layer(s, "nl_municipalities")
    area = float(
        municipalities.loc[municipalities["gemeente"] == "Venlo", "oppervlakte_km2"].iloc[0]
    )
    venlo = incidents[(incidents["municipality"] == "Venlo")]
    assert len(venlo) > 0
    assert venlo["location_sigma_m"].iloc[0] == pytest.approx(math.sqrt(area * 1e6 / math.pi) / 2)
    unlocated = incidents[incidents["geocode_precision"] == "none"]
    assert unlocated["location_sigma_m"].isna().all()


def test_feature_table_on_shipped_dutch_data(
    sessions: sessionmaker[Session], clock: FrozenClock
) -> None:
    """One ingest (about 7 s), then every check, on each backend."""
    features = _features(sessions, clock)
    _check_every_geldmaat_machine_has_a_row(features)
    _check_amsterdam_is_dense_and_urban(features, sessions)
    _check_wadden_islands_are_far_from_motorways(features, sessions)
    _check_partial_police_layer_leaves_uncovered_machines_missing(features)
    _check_border_distance_is_small_near_the_border(features)
    _check_news_incidents_before_t_drive_exposure(features)
    _check_municipality_sigma_from_its_area(sessions)
