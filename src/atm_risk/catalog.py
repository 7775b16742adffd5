"""The shipped data sets (under ``settings.data_dir``) and how each is ingested.

One list, used by the demo, the tests of every profile, and the documentation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ShippedFile:
    kind: str  # "atms", "incidents" or "area"
    path: str  # relative to the data folder
    profile: str | None = None  # ATMs and incidents
    layer: str | None = None  # area layers
    in_demo: bool = True
    join: str | None = None  # area layers: a CSV of attributes to add (relative path)
    join_on: str | None = None  # "LAYER_PROPERTY=CSV_COLUMN"

    def resolve(self, data_dir: Path) -> Path:
        return data_dir / self.path

    def resolve_join(self, data_dir: Path) -> Path | None:
        return data_dir / self.join if self.join else None


SHIPPED: tuple[ShippedFile, ...] = (
    ShippedFile("atms", "geldmaat_atm_locations_nl/geldmaat_locations.csv.gz", profile="geldmaat"),
    ShippedFile("atms", "atm_attacks_lisbon_trespass/atms.csv", profile="lisbon"),
    ShippedFile("incidents", "atm_attacks_news_compiled/incidents.csv", profile="news"),
    ShippedFile("incidents", "atm_attacks_lisbon_trespass/attack_events.csv", profile="lisbon"),
    ShippedFile("area", "nl_admin_cbs/gemeenten_2022.geojson.gz", layer="nl_municipalities"),
    ShippedFile("area", "nl_admin_cbs/provincies_2022.geojson", layer="nl_provinces"),
    ShippedFile("area", "nl_admin_cbs/postcodes4_areas.geojson.gz", layer="nl_postcodes4"),
    ShippedFile("area", "de_admin_bkg_vg5000/kreise.geojson.gz", layer="de_districts"),
    ShippedFile("area", "de_admin_bkg_vg5000/laender.geojson.gz", layer="de_states"),
    ShippedFile(
        "area", "de_admin_bkg_vg5000/national_border_lines.geojson", layer="de_national_border"
    ),
    ShippedFile(
        "area", "motorway_access_nl_vild/vild_point_locations.csv.gz", layer="nl_vild_points"
    ),
    ShippedFile(
        "area", "police_stations/nl_politiebureaus_partial_2020.csv", layer="nl_police_stations"
    ),
    ShippedFile("area", "police_stations/de_bw_police_locations.csv", layer="de_bw_police"),
    ShippedFile(
        "area",
        "atm_attacks_lisbon_trespass/freguesias_lisbon.geojson.gz",
        layer="pt_lisbon_parishes",
    ),
    ShippedFile(
        "area",
        "de_admin_bkg_vg5000/gemeinden.geojson.gz",
        layer="de_municipalities",
        join="de_population_zensus2022/gemeinden_population_zensus2022.csv.gz",
        join_on="AGS=ags",
    ),
    # Not in the demo: 424k points take ~15 s to load and the demo's machines are Dutch
    # (the Dutch VILD layer has the first motorway exits across the border); out of scope.
    ShippedFile(
        "area",
        "de_motorway_osm_nodes/de_motorway_nodes.csv.gz",
        layer="de_motorway_nodes",
        in_demo=False,
    ),
    ShippedFile(
        "area",
        "crime_benchmarks/memphis_precincts.geojson.gz",
        layer="us_memphis_precincts",
        in_demo=False,
    ),
)
