"""Ingest and read area layers (polygons, lines, points) with CRS checks and repairs."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import numpy.typing as npt
import shapely
from shapely.geometry.base import BaseGeometry
from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session, sessionmaker

from atm_risk.areas.models import AreaFeature, AreaLayer
from atm_risk.clock import Clock
from atm_risk.db import Base, transaction
from atm_risk.ingest.errors import IngestError
from atm_risk.ingest.readers import Source, read_source
from atm_risk.ingest.report import IngestReport, Rejection

_LAYER_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_LAT_COLUMNS = ("lat", "latitude", "y")
_LON_COLUMNS = ("lon", "lng", "longitude", "x")
_TYPE_NAMES = {
    0: "Point",
    1: "LineString",
    2: "LineString",
    3: "Polygon",
    4: "Point",
    5: "LineString",
    6: "Polygon",
    7: "GeometryCollection",
}
_NAME_COLUMNS = ("name", "gemeente", "GEN", "provincie", "postcode", "nome", "precinct")


def _first(columns: list[str], candidates: tuple[str, ...]) -> str | None:
    lower = {c.lower(): c for c in columns}
    return next((lower[c.lower()] for c in candidates if c.lower() in lower), None)


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _geometries(
    source: Source, lat_col: str | None, lon_col: str | None
) -> tuple[list[str], list[dict[str, Any]], npt.NDArray[Any]]:
    """Locations, properties and geometries (points built vectorised for CSV layers)."""
    locations: list[str] = []
    properties: list[dict[str, Any]] = []
    geoms: list[BaseGeometry | None] = []
    lats: list[float] = []
    lons: list[float] = []
    for row in source.rows:
        locations.append(row.location)
        if lat_col and lon_col:
            values = dict(row.values)  # the point geometry carries lat/lon from here on
            lats.append(_float(values.pop(lat_col, None)))
            lons.append(_float(values.pop(lon_col, None)))
            properties.append(values)
        else:
            properties.append(row.values)
            geoms.append(row.geometry)
    if lat_col and lon_col:
        return locations, properties, shapely.points(np.asarray(lons), np.asarray(lats))
    return locations, properties, np.asarray(geoms, dtype=object)


def _repair(geometry: BaseGeometry) -> BaseGeometry:
    repaired = shapely.make_valid(geometry)
    if geometry.geom_type in {"Polygon", "MultiPolygon"}:
        # make_valid can return a collection with slivers of lower dimension; keep the area.
        polys = [g for g in getattr(repaired, "geoms", [repaired]) if g.area > 0]
        repaired = shapely.unary_union(polys)
    return repaired


def _join_attributes(
    properties: list[dict[str, Any]], join: Path, on: str
) -> tuple[int, list[str]]:
    """Add the columns of the CSV ``join`` to each feature's properties, matched on ``on``.

    ``on`` is ``LEFT=RIGHT`` (layer property = CSV column) or one name used for both.
    Returns the number of features without a match and the joined column names.
    """
    left, _, right = on.partition("=")
    right = right or left
    table = read_source(join)
    if right not in table.columns:
        raise IngestError(f"{join}: no column {right!r} to join on")
    lookup: dict[str, dict[str, Any]] = {}
    for row in table.rows:
        key = row.values.get(right)
        if key is not None:
            lookup[str(key)] = {k: v for k, v in row.values.items() if k != right}
    if table.unreadable:
        raise IngestError(f"{join}: unreadable rows, first: {table.unreadable[0]}")
    unmatched = 0
    for props in properties:
        extra = lookup.get(str(props.get(left)))
        if extra is None:
            unmatched += 1
            continue
        for k, v in extra.items():
            props.setdefault(k, v)
    return unmatched, [c for c in table.columns if c != right]


def ingest_area(
    sessions: sessionmaker[Session],
    *,
    name: str,
    path: Path,
    clock: Clock,
    strict: bool = False,
    join: Path | None = None,
    join_on: str | None = None,
) -> IngestReport:
    """Load ``path`` as layer ``name``, replacing any previous version in one transaction.

    CSV files need lat/lon (or latitude/longitude) columns and give points. Invalid
    geometries are repaired with ``make_valid`` and counted. ``join``/``join_on`` add the
    columns of a CSV table (e.g. population by municipality key) to the features.
    """
    if not _LAYER_NAME.match(name):
        raise IngestError(f"layer name {name!r}: use lower-case letters, digits and '_'")
    if (join is None) != (join_on is None):
        raise IngestError("--join and --on go together")
    source = read_source(path)
    lat_col = lon_col = None
    if source.format == "csv":
        lat_col = _first(source.columns, _LAT_COLUMNS)
        lon_col = _first(source.columns, _LON_COLUMNS)
        if lat_col is None or lon_col is None:
            raise IngestError(f"{path}: a CSV layer needs lat and lon columns")
    name_col = _first(source.columns, _NAME_COLUMNS)

    locations, properties, geoms = _geometries(source, lat_col, lon_col)
    rejections: list[Rejection] = list(source.unreadable)
    missing = shapely.is_missing(geoms) | shapely.is_empty(geoms)
    bounds = shapely.bounds(geoms)  # NaN for missing/empty
    with np.errstate(invalid="ignore"):
        in_range = (
            (bounds[:, 0] >= -180)
            & (bounds[:, 2] <= 180)
            & (bounds[:, 1] >= -90)
            & (bounds[:, 3] <= 90)
        )
    for i in np.flatnonzero(missing):
        why = f"{lat_col}/{lon_col}: not numbers" if lat_col else "no geometry"
        rejections.append(Rejection(locations[i], why))
    out_of_range = np.flatnonzero(~missing & ~in_range)
    for i in out_of_range:
        b = bounds[i]
        rejections.append(
            Rejection(
                locations[i],
                f"coordinates outside WGS84 range (bounds {b[0]:.0f}, {b[1]:.0f}, {b[2]:.0f}, "
                f"{b[3]:.0f}): projected coordinates without a declared CRS?",
            )
        )
    keep = np.flatnonzero(~missing & in_range)
    if len(out_of_range) > len(keep):
        raise IngestError(
            f"{path}: most coordinates are outside the WGS84 range; the file's CRS is "
            "probably projected but not declared"
        )
    rejections.sort(key=lambda r: int(r.location.split()[-1]))
    report = IngestReport(source=str(path), accepted=len(keep), rejections=rejections)
    if (strict and rejections) or not len(keep):
        return report

    kept = geoms[keep]
    invalid = np.flatnonzero(~shapely.is_valid(kept))
    for i in invalid:
        kept[i] = _repair(kept[i])
    kept_props = [properties[i] for i in keep]
    if join is not None and join_on is not None:
        unmatched, _ = _join_attributes(kept_props, join, join_on)
        report.notes.append(f"{unmatched} feature(s) without a matching row in {join}")
    kept_bounds = shapely.bounds(kept)
    wkb = shapely.to_wkb(kept)
    kinds = sorted({_TYPE_NAMES[int(t)] for t in np.unique(shapely.get_type_id(kept))})
    now = clock.now()
    with transaction(sessions) as session:
        session.execute(delete(AreaLayer).where(AreaLayer.name == name))
        session.flush()
        layer = AreaLayer(
            name=name,
            geometry_type="/".join(kinds),
            source_crs=source.crs,
            source=str(path) + (f" + {join} on {join_on}" if join else ""),
            n_features=len(kept),
            n_repaired=len(invalid),
            loaded_at=now,
        )
        session.add(layer)
        session.flush()
        rows = [
            {
                "layer_id": layer.id,
                "feature_no": n,
                "name": _name(props, name_col),
                "properties": _jsonable(props),
                "geometry_wkb": wkb[n - 1],
                "minx": float(kept_bounds[n - 1, 0]),
                "miny": float(kept_bounds[n - 1, 1]),
                "maxx": float(kept_bounds[n - 1, 2]),
                "maxy": float(kept_bounds[n - 1, 3]),
            }
            for n, props in enumerate(kept_props, start=1)
        ]
        table = Base.metadata.tables[AreaFeature.__tablename__]
        for chunk in range(0, len(rows), 20_000):
            session.connection().execute(insert(table), rows[chunk : chunk + 20_000])
    report.inserted = len(kept)
    report.written = True
    return report


def _name(props: dict[str, Any], column: str | None) -> str | None:
    value = props.get(column) if column else None
    return None if value is None else str(value)[:200]


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
