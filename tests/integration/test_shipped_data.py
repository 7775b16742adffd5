"""Every shipped file ingests with its profile; counts match data/PROVENANCE.md."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from atm_risk.areas.models import AreaLayer
from atm_risk.areas.service import ingest_area, load_layer
from atm_risk.atms.models import Atm
from atm_risk.catalog import SHIPPED
from atm_risk.clock import FrozenClock
from atm_risk.incidents.models import GeocodePrecision, Incident
from atm_risk.ingest.run import ingest_atms, ingest_incidents
from tests.conftest import DATA


def _by_layer(name: str) -> str:
    item = next(s for s in SHIPPED if s.layer == name)
    return item.path


def test_geldmaat_profile(sessions: sessionmaker[Session], clock: FrozenClock) -> None:
    path = DATA / "geldmaat_atm_locations_nl/geldmaat_locations.csv.gz"
    report = ingest_atms(sessions, path=path, profile="geldmaat", clock=clock)
    assert report.summary_line() == "accepted 3559, rejected 0"
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(Atm)) == 3559
        first = s.scalar(select(Atm).where(Atm.atm_id == "1011002"))
        assert first is not None
        assert first.host == "albertheijn"
        assert first.site_type == "shop"
        assert first.opening_hours is not None
        assert first.opening_hours["mon"] == "07:00-22:00"
        assert first.night_closure is True
        # Sunday "00:00-00:00" in the finder means closed.
        closed_sundays = s.scalar(
            select(func.count())
            .select_from(Atm)
            .where(Atm.opening_hours["sun"].as_string() == "closed")
        )
        assert closed_sundays == 844


def test_lisbon_atms_and_events_link(sessions: sessionmaker[Session], clock: FrozenClock) -> None:
    atms = ingest_atms(
        sessions, path=DATA / "atm_attacks_lisbon_trespass/atms.csv", profile="lisbon", clock=clock
    )
    assert atms.summary_line() == "accepted 723, rejected 0"
    events = ingest_incidents(
        sessions,
        path=DATA / "atm_attacks_lisbon_trespass/attack_events.csv",
        profile="lisbon",
        clock=clock,
    )
    assert events.summary_line() == "accepted 77, rejected 0"
    with sessions() as s:
        unlinked = s.scalar(
            select(func.count()).select_from(Incident).where(Incident.atm_pk.is_(None))
        )
        assert unlinked == 0
        banks = s.scalar(select(func.count(func.distinct(Atm.operator_id))))
        assert banks == 12


def test_news_profile(sessions: sessionmaker[Session], clock: FrozenClock) -> None:
    path = DATA / "atm_attacks_news_compiled/incidents.csv"
    report = ingest_incidents(sessions, path=path, profile="news", clock=clock)
    assert report.summary_line() == "accepted 114, rejected 0"
    with sessions() as s:
        none = s.scalar(
            select(func.count())
            .select_from(Incident)
            .where(Incident.geocode_precision == GeocodePrecision.NONE)
        )
        assert none == 23  # BE/GB/IE rows: kept, without coordinates
        municipal = s.scalar(
            select(func.count())
            .select_from(Incident)
            .where(Incident.geocode_precision == GeocodePrecision.MUNICIPALITY)
        )
        assert municipal == 91
        ram = s.scalar(
            select(func.count()).select_from(Incident).where(Incident.method == "ram_raid")
        )
        assert ram == 15


AREA_EXPECTED = {
    # layer: (accepted, rejected, repaired at least)
    "nl_municipalities": (345, 0, 0),
    "nl_provinces": (12, 0, 0),
    "nl_postcodes4": (4067, 1, 0),  # one PC4 feature has no geometry in the source
    "de_districts": (401, 0, 0),
    "de_states": (16, 0, 1),  # one self-intersecting Land polygon (PROVENANCE.md)
    "de_national_border": (404, 0, 0),
    "nl_vild_points": (9139, 0, 0),
    "nl_police_stations": (100, 0, 0),
    "de_bw_police": (626, 0, 0),
    "pt_lisbon_parishes": (24, 0, 0),
    "us_memphis_precincts": (9, 0, 1),  # the other self-intersection
}


@pytest.mark.parametrize("layer", sorted(AREA_EXPECTED))
def test_area_layers(layer: str, sessions: sessionmaker[Session], clock: FrozenClock) -> None:
    accepted, rejected, repaired = AREA_EXPECTED[layer]
    report = ingest_area(sessions, name=layer, path=DATA / _by_layer(layer), clock=clock)
    assert (report.accepted, report.rejected) == (accepted, rejected)
    with sessions() as s:
        stored = s.scalar(select(AreaLayer).where(AreaLayer.name == layer))
        assert stored is not None
        assert stored.n_features == accepted
        assert stored.n_repaired >= repaired
        frame = load_layer(s, layer)
    assert len(frame) == accepted
    assert frame.crs.to_epsg() == 4326
    assert frame.geometry.is_valid.all()


def test_reloading_an_area_layer_replaces_it(
    sessions: sessionmaker[Session], clock: FrozenClock
) -> None:
    path = DATA / _by_layer("nl_provinces")
    ingest_area(sessions, name="nl_provinces", path=path, clock=clock)
    ingest_area(sessions, name="nl_provinces", path=path, clock=clock)
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(AreaLayer)) == 1
        assert len(load_layer(s, "nl_provinces")) == 12
