"""The area context of the feature engine: projected layers, each with the region it covers.

A layer that covers only part of the map (the shipped Dutch police stations are about 100 of
some 250) carries a coverage polygon; a distance computed for a machine outside it is
reported as missing, never as a misleading large distance.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from shapely.geometry.base import BaseGeometry

from atm_risk.features.kernels import FloatArray
from atm_risk.geo import WGS84, check_same_crs

# The shipped layers the engine uses by default (see atm_risk.catalog).
NL_TERRITORY = "nl_provinces"
DE_TERRITORY = "de_states"
NL_MUNICIPALITIES = "nl_municipalities"
NL_MOTORWAY = "nl_vild_points"
DE_MOTORWAY = "de_motorway_nodes"
NL_POLICE = "nl_police_stations"
DE_BW_POLICE = "de_bw_police"
BORDER = "de_national_border"
NL_POPULATION = "nl_postcodes4"
DE_POPULATION = "de_municipalities"


@dataclass(frozen=True)
class PointLayer:
    """Points in the metric CRS, optional labels, and the region where the layer is complete."""

    name: str
    xy: FloatArray
    labels: list[str | None] | None = None
    coverage: BaseGeometry | None = None  # None: complete everywhere


@dataclass(frozen=True)
class PolygonLayer:
    """Polygons in the metric CRS with a population density (inhabitants per km2)."""

    name: str
    geometries: np.ndarray
    density_per_km2: FloatArray


@dataclass
class AreaContext:
    crs: str
    motorway: list[PointLayer] = field(default_factory=list)
    police: list[PointLayer] = field(default_factory=list)
    border: np.ndarray | None = None  # line geometries, metric CRS
    population: list[PolygonLayer] = field(default_factory=list)
    missing_layers: list[str] = field(default_factory=list)


def _projected(frame: gpd.GeoDataFrame, crs: str, name: str) -> gpd.GeoDataFrame:
    check_same_crs(frame.crs, WGS84, what=f"layer {name}")
    return frame.to_crs(crs)


def _xy(frame: gpd.GeoDataFrame) -> FloatArray:
    return np.column_stack([frame.geometry.x.to_numpy(), frame.geometry.y.to_numpy()])


def _truthy(series: pd.Series) -> pd.Series:
    return series.astype(str).str.lower().isin({"1", "true", "1.0"})


def _names(frame: gpd.GeoDataFrame) -> list[str | None] | None:
    if "feature_name" not in frame:
        return None
    return [None if pd.isna(n) else str(n) for n in frame["feature_name"]]


def _union(frame: gpd.GeoDataFrame) -> BaseGeometry:
    return shapely.union_all(shapely.make_valid(frame.geometry.to_numpy()))


def _motorway_label(row: Mapping[str, object]) -> str | None:
    road = row.get("road_number") or ""
    exit_no = row.get("exit_number")
    name = row.get("name") or row.get("feature_name") or ""
    kind = "exit" if row.get("category") == "exit" else "junction"
    no = f" {kind} {exit_no}" if exit_no not in (None, "", "nan") else f" {kind}"
    return f"{road}{no} {name}".strip() or None


def context_from_layers(layers: Mapping[str, gpd.GeoDataFrame], crs: str) -> AreaContext:
    """Build the context from WGS84 layers keyed by the default layer names.

    Missing layers are recorded in ``missing_layers``; the features they feed stay missing.
    """
    ctx = AreaContext(crs=crs)
    get = {name: _projected(frame, crs, name) for name, frame in layers.items()}
    for name in (
        NL_TERRITORY,
        DE_TERRITORY,
        NL_MUNICIPALITIES,
        NL_MOTORWAY,
        DE_MOTORWAY,
        NL_POLICE,
        DE_BW_POLICE,
        BORDER,
        NL_POPULATION,
        DE_POPULATION,
    ):
        if name not in get:
            ctx.missing_layers.append(name)
    nl = _union(get[NL_TERRITORY]) if NL_TERRITORY in get else None
    de = _union(get[DE_TERRITORY]) if DE_TERRITORY in get else None

    # Motorway access: Dutch exits and interchanges (VILD, complete for NL in 2013, with the
    # first exits across the border) and German motorway nodes incl. ramps (OSM).
    if NL_MOTORWAY in get and nl is not None:
        vild = get[NL_MOTORWAY]
        access = vild[_truthy(vild["motorway_access"])] if "motorway_access" in vild else vild
        labels = [_motorway_label(r) for r in access.to_dict("records")]
        ctx.motorway.append(PointLayer(NL_MOTORWAY, _xy(access), labels, coverage=nl))
    if DE_MOTORWAY in get and de is not None:
        nodes = get[DE_MOTORWAY]
        ctx.motorway.append(PointLayer(DE_MOTORWAY, _xy(nodes), None, coverage=de))

    # Police: Baden-Wuerttemberg complete; Dutch list partial, so it covers only the
    # municipalities where it lists a station (approximate; documented).
    if DE_BW_POLICE in get and DE_TERRITORY in get:
        states = get[DE_TERRITORY]
        bw = states[states["GEN"] == "Baden-Württemberg"] if "GEN" in states else states.iloc[0:0]
        if len(bw):
            stations = get[DE_BW_POLICE]
            ctx.police.append(
                PointLayer(DE_BW_POLICE, _xy(stations), _names(stations), coverage=_union(bw))
            )
    if NL_POLICE in get and NL_MUNICIPALITIES in get:
        stations = get[NL_POLICE]
        municipalities = get[NL_MUNICIPALITIES]
        hit = gpd.sjoin(municipalities, stations[["geometry"]], predicate="contains", how="inner")
        covered = municipalities.loc[sorted(set(hit.index))]
        ctx.police.append(
            PointLayer(NL_POLICE, _xy(stations), _names(stations), coverage=_union(covered))
        )

    if BORDER in get:
        border = get[BORDER]
        if "near_nl_border" in border:
            border = border[_truthy(border["near_nl_border"])]
        ctx.border = border.geometry.to_numpy()

    # Population density: Dutch 4-digit postcode areas first, German municipalities next.
    if NL_POPULATION in get:
        pc4 = get[NL_POPULATION]
        density = pd.to_numeric(pc4["inwoners"], errors="coerce") / pd.to_numeric(
            pc4["oppervlakte_km2"], errors="coerce"
        )
        ctx.population.append(
            PolygonLayer(NL_POPULATION, pc4.geometry.to_numpy(), density.to_numpy(float))
        )
    if DE_POPULATION in get:
        gem = get[DE_POPULATION]
        if "population" in gem:
            density = pd.to_numeric(gem["population"], errors="coerce") / pd.to_numeric(
                gem["area_km2"], errors="coerce"
            )
            ctx.population.append(
                PolygonLayer(DE_POPULATION, gem.geometry.to_numpy(), density.to_numpy(float))
            )
    return ctx
