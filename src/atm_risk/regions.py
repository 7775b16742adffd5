"""Which province (NL) or state (DE) a point or a machine lies in, from the loaded area
layers, with per-process caches that a re-ingest of a layer or a change of the machines
invalidates. Used by alert routing (police regions) and the API's police scope."""

from __future__ import annotations

from typing import Any

import numpy as np
import shapely
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from atm_risk.areas.models import AreaLayer
from atm_risk.areas.service import load_layer
from atm_risk.atms.models import Atm
from atm_risk.config import Settings

REGION_LAYERS = (("nl_provinces", "NL"), ("de_states", "DE"))

# Area layers change only when re-ingested (a new id/loaded_at): cache them per process so
# that an incident report does not re-read thousands of features.
CACHE: dict[tuple[object, ...], Any] = {}


def layer_stamps(session: Session) -> dict[str, str]:
    """Every loaded layer's identity (name, id, load time): a re-ingest invalidates caches."""
    # plain rows (no ORM step): asked on every reported attack
    rows = (
        session.connection()
        .execute(select(AreaLayer.name, AreaLayer.id, AreaLayer.loaded_at))
        .all()
    )
    return {name: f"{name}:{pk}:{loaded.isoformat()}" for name, pk, loaded in rows}


def _regions(session: Session, url: str, name: str, stamp: str) -> tuple[list[str], Any]:
    key = ("regions", url, stamp)
    if key not in CACHE:
        frame = load_layer(session, name)
        geoms = shapely.make_valid(frame.geometry.to_numpy())
        shapely.prepare(geoms)
        CACHE[key] = ([str(n) for n in frame["feature_name"]], geoms)
    return CACHE[key]  # type: ignore[no-any-return]


def locate(
    session: Session,
    settings: Settings,
    lon: float,
    lat: float,
    *,
    stamps: dict[str, str] | None = None,
) -> tuple[str | None, str | None]:
    """(province or state, country) containing the point, from the loaded area layers
    (``stamps``: the caller's fresh :func:`layer_stamps`, to save a query)."""
    point = shapely.Point(lon, lat)
    if stamps is None:
        stamps = layer_stamps(session)
    for layer, country in REGION_LAYERS:
        stamp = stamps.get(layer)
        if stamp is None:
            continue
        names, geoms = _regions(session, settings.database_url, layer, stamp)
        hit = np.flatnonzero(shapely.contains(geoms, point))
        if len(hit):
            return names[int(hit[0])], country
    return None, None


def region_of(session: Session, settings: Settings, lon: float, lat: float) -> str | None:
    return locate(session, settings, lon, lat)[0]


def machine_regions(session: Session, settings: Settings) -> dict[int, str | None]:
    """The region of every machine (active or not), vectorised, cached until a machine or a
    region layer changes."""
    count, changed = session.execute(select(func.count(Atm.id), func.max(Atm.updated_at))).one()
    stamps = layer_stamps(session)
    key = (
        "machine_regions",
        settings.database_url,
        count,
        str(changed),
        *(stamps.get(layer) for layer, _ in REGION_LAYERS),
    )
    if key not in CACHE:
        rows = session.execute(select(Atm.id, Atm.lon, Atm.lat).order_by(Atm.id)).all()
        pks = [r[0] for r in rows]
        lon = np.array([r[1] for r in rows], dtype=float)
        lat = np.array([r[2] for r in rows], dtype=float)
        found: list[str | None] = [None] * len(rows)
        for layer, _ in REGION_LAYERS:
            stamp = stamps.get(layer)
            if stamp is None:
                continue
            names, geoms = _regions(session, settings.database_url, layer, stamp)
            for name, geom in zip(names, geoms, strict=True):
                inside = shapely.contains_xy(geom, lon, lat)
                for k in np.flatnonzero(inside):
                    if found[k] is None:
                        found[k] = name
        CACHE[key] = dict(zip(pks, found, strict=True))
    return CACHE[key]  # type: ignore[no-any-return]
