"""Ingest and read area layers (polygons, lines, points) with CRS checks and repairs."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import shapely
from shapely.geometry.base import BaseGeometry
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from atm_risk.areas.models import AreaFeature, AreaLayer
from atm_risk.clock import Clock
from atm_risk.db import transaction
from atm_risk.ingest.errors import IngestError
from atm_risk.ingest.readers import SourceRow, read_source
from atm_risk.ingest.report import IngestReport, Rejection

_LAYER_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_LAT_COLUMNS = ("lat", "latitude", "y")
_LON_COLUMNS = ("lon", "lng", "longitude", "x")
_NAME_COLUMNS = ("name", "gemeente", "GEN", "provincie", "postcode", "nome", "precinct")


@dataclass
class _Feature:
    location: str
    geometry: BaseGeometry
    properties: dict[str, Any]
    repaired: bool


def _point_from_columns(row: SourceRow, lat_col: str, lon_col: str) -> BaseGeometry:
    try:
        lat, lon = float(row.values[lat_col]), float(row.values[lon_col])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{lat_col}/{lon_col}: not numbers") from exc
    return shapely.Point(lon, lat)


def _first(columns: list[str], candidates: tuple[str, ...]) -> str | None:
    lower = {c.lower(): c for c in columns}
    return next((lower[c.lower()] for c in candidates if c.lower() in lower), None)


def _check_feature(location: str, geometry: BaseGeometry | None) -> tuple[BaseGeometry, bool]:
    if geometry is None or geometry.is_empty:
        raise ValueError("no geometry")
    minx, miny, maxx, maxy = geometry.bounds
    if not (-180 <= minx <= maxx <= 180 and -90 <= miny <= maxy <= 90):
        raise ValueError(
            f"coordinates outside WGS84 range (bounds {minx:.0f}, {miny:.0f}, {maxx:.0f}, "
            f"{maxy:.0f}): projected coordinates without a declared CRS?"
        )
    if geometry.is_valid:
        return geometry, False
    repaired = shapely.make_valid(geometry)
    if geometry.geom_type in {"Polygon", "MultiPolygon"}:
        # make_valid can return a collection with slivers of lower dimension; keep the area.
        polys = [g for g in getattr(repaired, "geoms", [repaired]) if g.area > 0]
        repaired = shapely.unary_union(polys)
    return repaired, True


def ingest_area(
    sessions: sessionmaker[Session], *, name: str, path: Path, clock: Clock, strict: bool = False
) -> IngestReport:
    """Load ``path`` as layer ``name``, replacing any previous version in one transaction.

    CSV files need lat/lon (or latitude/longitude) columns and give points. Invalid
    polygons are repaired with ``make_valid`` and counted.
    """
    if not _LAYER_NAME.match(name):
        raise IngestError(f"layer name {name!r}: use lower-case letters, digits and '_'")
    source = read_source(path)
    lat_col = lon_col = None
    if source.format == "csv":
        lat_col, lon_col = (
            _first(source.columns, _LAT_COLUMNS),
            _first(source.columns, _LON_COLUMNS),
        )
        if lat_col is None or lon_col is None:
            raise IngestError(f"{path}: a CSV layer needs lat and lon columns")
    name_col = _first(source.columns, _NAME_COLUMNS)

    features: list[_Feature] = []
    rejections: list[Rejection] = []
    for row in source.rows:
        try:
            geom = row.geometry
            if lat_col and lon_col:
                geom = _point_from_columns(row, lat_col, lon_col)
            geom, repaired = _check_feature(row.location, geom)
        except ValueError as exc:
            rejections.append(Rejection(row.location, str(exc)))
            continue
        features.append(_Feature(row.location, geom, row.values, repaired))
    rejections.extend(source.unreadable)
    report = IngestReport(source=str(path), accepted=len(features), rejections=rejections)
    if features and sum("WGS84 range" in r.reason for r in rejections) > len(features):
        raise IngestError(
            f"{path}: most coordinates are outside the WGS84 range; the file's CRS is "
            "probably projected but not declared"
        )
    if (strict and rejections) or not features:
        return report
    kinds = sorted({f.geometry.geom_type.removeprefix("Multi") for f in features})
    now = clock.now()
    with transaction(sessions) as session:
        session.execute(delete(AreaLayer).where(AreaLayer.name == name))
        session.flush()
        layer = AreaLayer(
            name=name,
            geometry_type="/".join(kinds),
            source_crs=source.crs,
            source=str(path),
            n_features=len(features),
            n_repaired=sum(f.repaired for f in features),
            loaded_at=now,
        )
        session.add(layer)
        session.flush()
        session.add_all(
            AreaFeature(
                layer_id=layer.id,
                feature_no=i,
                name=str(f.properties.get(name_col))
                if name_col and f.properties.get(name_col) is not None
                else None,
                properties=_jsonable(f.properties),
                geometry_wkb=shapely.to_wkb(f.geometry),
                minx=f.geometry.bounds[0],
                miny=f.geometry.bounds[1],
                maxx=f.geometry.bounds[2],
                maxy=f.geometry.bounds[3],
            )
            for i, f in enumerate(features, start=1)
        )
    report.inserted = len(features)
    report.written = True
    return report


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in values.items():
        if v is None or isinstance(v, (str, int, float, bool)):
            out[k] = v
        else:
            out[k] = str(v)
    return out


def load_layer(session: Session, name: str) -> gpd.GeoDataFrame:
    """A stored layer as a GeoDataFrame in WGS84 (EPSG:4326), properties as columns."""
    layer = session.scalar(select(AreaLayer).where(AreaLayer.name == name))
    if layer is None:
        raise LookupError(f"no area layer named {name!r}; load it with `atm-risk ingest area`")
    rows = session.execute(
        select(AreaFeature.name, AreaFeature.properties, AreaFeature.geometry_wkb)
        .where(AreaFeature.layer_id == layer.id)
        .order_by(AreaFeature.feature_no)
    ).all()
    records = [{**props, "feature_name": fname} for fname, props, _ in rows]
    geoms = shapely.from_wkb([wkb for _, _, wkb in rows])
    return gpd.GeoDataFrame(records, geometry=list(geoms), crs="EPSG:4326")


def list_layers(session: Session) -> list[AreaLayer]:
    return list(session.scalars(select(AreaLayer).order_by(AreaLayer.name)))
