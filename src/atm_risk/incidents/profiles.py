"""Ingest profiles for incident files: the canonical columns and the shipped sources."""

from __future__ import annotations

from typing import Any

from atm_risk.incidents.schemas import CANONICAL_INCIDENT_COLUMNS
from atm_risk.ingest.readers import SourceRow
from atm_risk.ingest.validation import GEOMETRY, Profile, RowError, pick


def _canonical(row: SourceRow) -> dict[str, Any]:
    out = pick(row.values, CANONICAL_INCIDENT_COLUMNS)
    if row.geometry is not None:
        if row.geometry.geom_type != "Point" or row.geometry.is_empty:
            raise RowError(f"geometry must be a Point, got {row.geometry.geom_type}")
        out["lon"], out["lat"] = row.geometry.x, row.geometry.y
    extra = {
        k: v for k, v in row.values.items() if k not in CANONICAL_INCIDENT_COLUMNS and v is not None
    }
    if extra:
        out["extra"] = extra
    return out


_NEWS_METHODS = {"ram_raid_machine": "ram_raid"}
_NEWS_GEOCODE = {"municipality_representative_point": "municipality", "none": "none"}


def _news(row: SourceRow) -> dict[str, Any]:
    """The compiled news list (data/atm_attacks_news_compiled/incidents.csv)."""
    v = row.values
    method = v.get("attack_method")
    geocode = v.get("geocode_level")
    if geocode is not None and geocode not in _NEWS_GEOCODE:
        raise RowError(f"geocode_level: unknown value {geocode!r}")
    urls = [u for u in (v.get("source_url"), v.get("source_url_2")) if u]
    return {
        "incident_id": v.get("incident_id"),
        "date_earliest": v.get("date_earliest"),
        "date_latest": v.get("date_latest"),
        "date_precision": v.get("date_precision"),
        "time_local": v.get("time_local"),
        "country": v.get("country"),
        "region": v.get("region"),
        "municipality": v.get("municipality"),
        "municipality_code": v.get("municipality_code"),
        "locality": v.get("locality"),
        "lat": v.get("lat"),
        "lon": v.get("lon"),
        "geocode_precision": _NEWS_GEOCODE.get(geocode or ""),
        "method": _NEWS_METHODS.get(method or "", method),
        "method_detail": method,
        "outcome": v.get("outcome") or "unknown",
        "target": v.get("target"),
        "escape": v.get("escape"),
        "source_url": " ".join(urls) or None,
        "notes": v.get("notes"),
    }


_LISBON_METHODS = {
    "explosive_gas": "explosive_gas",
    "ram_raid": "ram_raid",
    "burglary": "burglary",
}
_LISBON_EXTRA = (
    "attack_group_inferred",
    "DETEC_DATE",
    "GROSS_LOSS",
    "INDIRECT_LOSS",
    "NET_LOSS",
    "N_ATTACK_L0",
    "N_ATTACK_L1",
    "N_ATTACK_L2",
    "ATTACK_DURATION",
    "RECOVERED",
    "RECOV_AMOUNT",
)


def _lisbon(row: SourceRow) -> dict[str, Any]:
    """TREsPASS Lisbon events: physical and fraud attacks, linked to the ATM table."""
    v = row.values
    kind = v.get("attack_type_inferred")
    success = v.get("SUCCESS_ATTACK")
    return {
        "incident_id": v.get("event_id"),
        "occurred_at": v.get("EVENT_DATE"),
        "timezone": "Europe/Lisbon",
        "country": "PT",
        "municipality": "Lisboa",
        "atm_id": v.get("ATM_ID"),
        "method": _LISBON_METHODS.get(kind or "", "other"),
        "method_detail": kind,
        "outcome": {"1": "loot", "0": "attempt_failed"}.get(str(success), "unknown"),
        "extra": {k: v[k] for k in _LISBON_EXTRA if v.get(k) is not None},
    }


INCIDENT_PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile(
            name="canonical",
            description="atm-risk's own columns (see atm_risk.incidents.schemas)",
            required=(
                ("incident_id",),
                ("occurred_at", "date_earliest"),
                ("lat", "atm_id", "geocode_precision", GEOMETRY),
                ("method",),
            ),
            to_canonical=_canonical,
        ),
        Profile(
            name="news",
            description="incidents compiled from news reports (data/atm_attacks_news_compiled)",
            required=(("incident_id",), ("date_earliest",), ("lat",), ("lon",), ("attack_method",)),
            to_canonical=_news,
            default_feed="news",
        ),
        Profile(
            name="lisbon",
            description="TREsPASS Lisbon attack events (needs the lisbon ATM table first)",
            required=(("event_id",), ("ATM_ID",), ("EVENT_DATE",), ("attack_type_inferred",)),
            to_canonical=_lisbon,
            default_feed="lisbon",
        ),
    )
}
