"""PostGIS when the database is PostgreSQL; the SQLite path stays extension-free.

Migration 0009 gives ``atms``, ``incidents`` and ``area_features`` a ``geom`` column (SRID
4326) that PostgreSQL *generates* from the lon/lat (or WKB) the application writes, so it needs
no application code and cannot drift, and a GiST index on it. The columns are not in the ORM
models (SQLite has none): queries name them through :func:`geom`, and schema comparison skips
them (:func:`include_object`).

Queries keep one code path for both backends: :func:`in_box` applies the exact lon/lat test on
every backend and, on PostgreSQL, adds the ``&&`` test that the GiST index answers.
"""

from __future__ import annotations

from typing import Any

import geoalchemy2  # registers PostGIS types with SQLAlchemy's reflection
import numpy as np
from sqlalchemy import ColumnElement, func, literal_column
from sqlalchemy.orm import Session

from atm_risk.geo import project, unproject

SRID = 4326
GEOM = "geom"
# table -> geometry type of its generated ``geom`` column
SPATIAL_TABLES = {"atms": "POINT", "incidents": "POINT", "area_features": "GEOMETRY"}
SPATIAL_INDEXES = {f"ix_{table}_{GEOM}" for table in SPATIAL_TABLES}

Box = tuple[float, float, float, float]  # min lon, min lat, max lon, max lat (WGS84)


def is_postgis(session: Session) -> bool:
    """True when the session's database is PostgreSQL (which then has PostGIS, see 0009)."""
    return session.get_bind().dialect.name == "postgresql"


def geom(table: str) -> ColumnElement[Any]:
    """The generated ``geom`` column of ``table`` (PostgreSQL only), for use in queries."""
    if table not in SPATIAL_TABLES:
        raise KeyError(f"{table} has no geometry column")
    return literal_column(f"{table}.{GEOM}", geoalchemy2.Geometry(SPATIAL_TABLES[table], SRID))


def in_box(box: Box, model: Any, *, postgis: bool) -> list[ColumnElement[bool]]:
    """Conditions for ``query.where(*...)``: the ``model``'s lon/lat lie in ``box`` (edges
    included). The exact test is the same on both backends; on PostgreSQL ``geom && envelope``
    comes first, so that the GiST index finds the candidates instead of a scan of the table."""
    min_lon, min_lat, max_lon, max_lat = box
    exact = [model.lon.between(min_lon, max_lon), model.lat.between(min_lat, max_lat)]
    if not postgis:
        return exact
    envelope = func.ST_MakeEnvelope(min_lon, min_lat, max_lon, max_lat, SRID)
    return [geom(model.__tablename__).op("&&")(envelope), *exact]


def disc_box(lon: float, lat: float, radius_m: float, crs: str) -> Box:
    """A lon/lat box that contains every point within ``radius_m`` of (lon, lat), distances
    measured in the metric ``crs`` (as every distance here is): the disc's edge unprojected at
    96 points, on a radius 0.1 % + 1 m larger (the polygon of 96 points on it stays outside
    the disc: its inner radius is 0.9995 of its outer one)."""
    px, py = project([lon], [lat], crs)
    angles = np.linspace(0.0, 2 * np.pi, 96, endpoint=False)
    reach = radius_m * 1.001 + 1.0
    edge_lon, edge_lat = unproject(
        px[0] + reach * np.cos(angles), py[0] + reach * np.sin(angles), crs, shared_thread=True
    )
    return (
        float(edge_lon.min()),
        float(edge_lat.min()),
        float(edge_lon.max()),
        float(edge_lat.max()),
    )


def parse_bbox(text: str) -> Box:
    """``min_lon,min_lat,max_lon,max_lat`` (WGS84 degrees) as a box; ValueError says why not."""
    parts = text.split(",")
    if len(parts) != 4:
        raise ValueError("bbox: give min_lon,min_lat,max_lon,max_lat (four numbers)")
    try:
        min_lon, min_lat, max_lon, max_lat = (float(p) for p in parts)
    except ValueError:
        raise ValueError("bbox: the four values must be numbers") from None
    values = (min_lon, min_lat, max_lon, max_lat)
    if not all(np.isfinite(values)):
        raise ValueError("bbox: the four values must be finite numbers")
    if not (-180 <= min_lon <= max_lon <= 180):
        raise ValueError("bbox: need -180 <= min_lon <= max_lon <= 180")
    if not (-90 <= min_lat <= max_lat <= 90):
        raise ValueError("bbox: need -90 <= min_lat <= max_lat <= 90")
    return values


def include_object(obj: Any, name: str | None, kind: str, reflected: bool, compare_to: Any) -> bool:
    """Schema comparison (Alembic) ignores what PostGIS owns (``spatial_ref_sys``) and the
    generated ``geom`` columns and their indexes, which only PostgreSQL has."""
    if not reflected or compare_to is not None:
        return True
    if kind == "table":
        return name != "spatial_ref_sys"
    if kind == "column":
        return not (name == GEOM and obj.table.name in SPATIAL_TABLES)
    return not (kind == "index" and name in SPATIAL_INDEXES)
