"""Ingest profiles for ATM files: the canonical columns and the shipped sources."""

from __future__ import annotations

from typing import Any

from atm_risk.atms.schemas import CANONICAL_ATM_COLUMNS, WEEKDAYS
from atm_risk.ingest.readers import SourceRow
from atm_risk.ingest.validation import GEOMETRY, Profile, RowError, pick


def _point(row: SourceRow) -> dict[str, Any]:
    """lon/lat from a Point geometry, when the row has one."""
    if row.geometry is None:
        return {}
    if row.geometry.geom_type != "Point" or row.geometry.is_empty:
        raise RowError(f"geometry must be a Point, got {row.geometry.geom_type}")
    return {"lon": row.geometry.x, "lat": row.geometry.y}


def _canonical(row: SourceRow) -> dict[str, Any]:
    out = pick(row.values, CANONICAL_ATM_COLUMNS)
    out.update(_point(row))
    extra = {
        k: v for k, v in row.values.items() if k not in CANONICAL_ATM_COLUMNS and v is not None
    }
    if extra:
        out["extra"] = extra
    return out


def _geldmaat(row: SourceRow) -> dict[str, Any]:
    v = row.values
    hours: dict[str, str] = {}
    # The finder publishes Monday (taken for every weekday), Saturday and Sunday.
    for day in WEEKDAYS[:5]:
        if v.get("hours_mon"):
            hours[day] = v["hours_mon"]
    if v.get("hours_sat"):
        hours["sat"] = v["hours_sat"]
    if v.get("hours_sun"):
        hours["sun"] = v["hours_sun"]
    return {
        "atm_id": v.get("location_id"),
        "operator": "Geldmaat",
        "lat": v.get("latitude"),
        "lon": v.get("longitude"),
        "country": "NL",
        "address": v.get("street_address"),
        "postcode": v.get("zip"),
        "city": v.get("city"),
        # A host shop means the machine stands in or at a shop; an empty store_type is
        # "n/a" in the source (typically a stand-alone or bank site, not confirmed).
        "site_type": "shop" if v.get("store_type") else "unknown",
        "host": v.get("store_type"),
        "n_devices": v.get("n_devices"),
        "opening_hours": hours or None,
        "extra": {
            k: v[k]
            for k in (
                "n_cash_withdrawal",
                "n_deposit_capable",
                "n_sealbag",
                "device_types",
                "device_ids",
            )
            if v.get(k) is not None
        },
    }


_LISBON_EXTRA = (
    "FREGUESIA",
    "PARISH",
    "WITHIN500",
    "WITHIN1000",
    "MWay_Dist",
    "Police_Dis",
    "NUMBER",
    "INCOME",
    "DENSITY",
    "AGE",
    "UNP_RATE",
    "COM_DENS",
)


def _lisbon(row: SourceRow) -> dict[str, Any]:
    v = row.values
    return {
        "atm_id": v.get("ATM_ID"),
        "operator": v.get("BANK"),
        "lat": v.get("lat"),
        "lon": v.get("lon"),
        "country": "PT",
        "address": v.get("ADDRESS"),
        "city": "Lisboa",
        "municipality": "Lisboa",
        "extra": {k: v[k] for k in _LISBON_EXTRA if v.get(k) is not None},
    }


ATM_PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile(
            name="canonical",
            description="atm-risk's own columns (see atm_risk.atms.schemas)",
            required=(("atm_id",), ("operator",), ("lat", GEOMETRY), ("lon", GEOMETRY)),
            to_canonical=_canonical,
        ),
        Profile(
            name="geldmaat",
            description="Geldmaat location finder export (data/geldmaat_atm_locations_nl)",
            required=(("location_id",), ("latitude",), ("longitude",)),
            to_canonical=_geldmaat,
        ),
        Profile(
            name="lisbon",
            description="TREsPASS Lisbon ATM table (data/atm_attacks_lisbon_trespass/atms.csv)",
            required=(("ATM_ID",), ("BANK",), ("lat",), ("lon",)),
            to_canonical=_lisbon,
        ),
    )
}
