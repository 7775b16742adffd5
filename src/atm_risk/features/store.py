"""Reading the feature engine's inputs from the database."""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime

import geopandas as gpd
import numpy as np
import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from atm_risk.areas.models import AreaFeature, AreaLayer
from atm_risk.areas.service import load_layer
from atm_risk.atms.models import Atm, AtmStatus
from atm_risk.config import Settings
from atm_risk.features.context import (
    DE_POPULATION,
    NL_MUNICIPALITIES,
    AreaContext,
    context_from_layers,
)
from atm_risk.features.engine import FeatureConfig, build_features
from atm_risk.incidents.models import Incident
from atm_risk.tenancy.models import Operator


def feature_config(settings: Settings) -> FeatureConfig:
    return FeatureConfig(
        metric_crs=settings.metric_crs,
        location_uncertainty_m=dict(settings.location_uncertainty_m),
    )


def atm_frame(session: Session, *, active_only: bool = True) -> pd.DataFrame:
    query = select(
        Atm.id.label("atm_pk"),
        Operator.name.label("operator"),
        Atm.atm_id,
        Atm.country,
        Atm.lon,
        Atm.lat,
        Atm.site_type,
        Atm.night_closure,
        Atm.opening_hours,
        Atm.hardening,
    ).join(Operator, Atm.operator_id == Operator.id)
    if active_only:
        query = query.where(Atm.status == AtmStatus.ACTIVE)
    rows = session.execute(query.order_by(Atm.id)).mappings().all()
    frame = pd.DataFrame([dict(r) for r in rows], columns=list(query.selected_columns.keys()))
    frame["site_type"] = frame["site_type"].astype(str)
    return frame


def incident_frame(session: Session, *, before: datetime | None = None) -> pd.DataFrame:
    """Incidents (all methods; the engine keeps the physical attacks), started before ``before``."""
    query = select(
        Incident.id.label("incident_pk"),
        Incident.lon,
        Incident.lat,
        Incident.occurred_from,
        Incident.occurred_to,
        Incident.geocode_precision,
        Incident.method,
        Incident.atm_pk,
        Incident.municipality,
        Incident.municipality_code,
        Incident.date_precision,
        Incident.timezone,
        Incident.simulated,
    )
    if before is not None:
        query = query.where(Incident.occurred_from < before)
    rows = session.execute(query).mappings().all()
    frame = pd.DataFrame([dict(r) for r in rows], columns=list(query.selected_columns.keys()))
    for col in ("geocode_precision", "method", "date_precision"):
        frame[col] = frame[col].astype(str)
    frame["location_sigma_m"] = _municipality_sigma(session, frame)
    return frame


def _municipality_sigma(session: Session, incidents: pd.DataFrame) -> pd.Series:
    """Per-axis location error of municipality-level incidents from the municipality's area.

    A point spread uniformly over a disc of radius R has a per-axis standard deviation of
    R/2; R comes from the area of the municipality polygon (Dutch by name, German by AGS).
    NaN where the municipality is not found (the precision's default applies).
    """
    areas: dict[str, float] = {}
    names = set(session.scalars(select(AreaLayer.name)))
    for layer, key, area_key in (
        (NL_MUNICIPALITIES, "gemeente", "oppervlakte_km2"),
        (DE_POPULATION, "AGS", "area_km2"),
    ):
        if layer not in names:
            continue
        rows = session.execute(
            select(AreaFeature.properties).join(AreaLayer).where(AreaLayer.name == layer)
        ).scalars()
        for props in rows:
            try:
                areas[str(props[key])] = float(props[area_key])
            except (KeyError, TypeError, ValueError):
                continue
    sigma = pd.Series(np.nan, index=incidents.index)
    municipal = incidents["geocode_precision"] == "municipality"
    for idx in incidents.index[municipal]:
        code = incidents.at[idx, "municipality_code"] if "municipality_code" in incidents else None
        area = areas.get(str(code)) if code else None
        if area is None:
            area = areas.get(str(incidents.at[idx, "municipality"]))
        if area is not None and area > 0:
            sigma[idx] = math.sqrt(area * 1e6 / math.pi) / 2
    return sigma


def area_context(
    session: Session, settings: Settings, *, only: Iterable[str] | None = None
) -> AreaContext:
    """The area context from the stored layers (``only``: just these, when loaded)."""
    names = set(session.scalars(select(AreaLayer.name)))
    if only is not None:
        names &= set(only)
    layers: dict[str, gpd.GeoDataFrame] = {n: load_layer(session, n) for n in sorted(names)}
    return context_from_layers(layers, settings.metric_crs)


def compute_features(session: Session, settings: Settings, *, as_of: datetime) -> pd.DataFrame:
    """The feature table for every active machine; operator, atm_id, country, lon, lat first."""
    atms = atm_frame(session)
    table = build_features(
        atms,
        incident_frame(session, before=as_of),
        area_context(session, settings),
        as_of=as_of,
        config=feature_config(settings),
    )
    ids = atms.set_index("atm_pk")[["operator", "atm_id", "country", "lon", "lat"]]
    out = ids.join(table)
    out.attrs.update(table.attrs)
    return out
