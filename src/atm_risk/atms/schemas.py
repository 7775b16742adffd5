"""The canonical ATM record every ingest profile maps to, validated with pydantic.

Canonical columns (CSV header names, GeoJSON/GeoPackage property names):

====================== ======== ========================================================
column                 required meaning
====================== ======== ========================================================
atm_id                 yes      the operator's id for the machine (unique per operator)
operator               yes      bank or ATM network that runs it (the tenant)
lat, lon               yes      WGS84 degrees (GeoJSON/GeoPackage: a Point geometry instead)
country                no       ISO 3166-1 alpha-2
address                no       street address
postcode               no
city                   no
municipality           no
site_type              no       branch, foyer, shop, free_standing, wall, other, unknown (default)
host                   no       host business (e.g. a supermarket chain)
n_devices              no       machines at this location
opening_hours          no       ``07:00-23:00`` (every day), ``mon=07:00-23:00;sun=closed`` or JSON
night_closure          no       true/false; derived from opening_hours when absent
hardening              no       ``|``- or ``,``-separated: dye_ink, glue, gas_neutraliser, bollards,
                                reinforced_safe, alarm_fog, cctv, relocated_indoors
cash_at_risk_eur       no       cash typically held (EUR)
property_damage_eur    no       damage to machine and building per attack (EUR)
residential_building   no       true when people live in the building (collateral damage)
night_withdrawal_share no       share of withdrawals made 23:00-07:00 (0-1)
status                 no       active (default) or removed
installed_on           no       ISO date
removed_on             no       ISO date (only for status removed)
====================== ======== ========================================================


Any other column is kept in ``extra``.
"""

from __future__ import annotations

import json
import re
from datetime import date
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from atm_risk.atms.models import AtmStatus, HardeningMeasure, SiteType

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HOURS = re.compile(r"^([01]\d|2[0-4]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)$")
CANONICAL_ATM_COLUMNS = (
    "atm_id",
    "operator",
    "lat",
    "lon",
    "country",
    "address",
    "postcode",
    "city",
    "municipality",
    "site_type",
    "host",
    "n_devices",
    "opening_hours",
    "night_closure",
    "hardening",
    "cash_at_risk_eur",
    "property_damage_eur",
    "residential_building",
    "night_withdrawal_share",
    "status",
    "installed_on",
    "removed_on",
)
NIGHT_CHECK_MINUTE = 3 * 60  # 03:00, the middle of the 02:00-05:00 attack window


def _minutes(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


def open_at(hours: str, minute_of_day: int) -> bool:
    """Whether an ``HH:MM-HH:MM`` interval (possibly past midnight) covers a minute."""
    if hours == "closed":
        return False
    start, end = (_minutes(p) for p in hours.split("-"))
    if start == end:  # parse_opening_hours refuses these; stay safe for stored values
        return False
    if start < end:
        return start <= minute_of_day < end
    return minute_of_day >= start or minute_of_day < end


def parse_opening_hours(value: Any) -> dict[str, str] | None:
    """Normalise opening hours to ``{weekday: "HH:MM-HH:MM" | "closed"}``.

    Accepts one interval for every day, ``day=interval`` pairs separated by ``;``, a JSON
    object, or a dict. ``00:00-00:00`` means closed (as in the Geldmaat finder); ``24h``
    means ``00:00-24:00``.
    """
    if value is None or value == "":
        return None
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("{"):
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"opening hours are not valid JSON: {exc.msg}") from exc
        elif "=" in text:
            value = dict(part.split("=", 1) for part in text.split(";") if part.strip())
        else:
            value = dict.fromkeys(WEEKDAYS, text)
    if not isinstance(value, dict):
        raise ValueError("opening hours must be a string or an object")
    out: dict[str, str] = {}
    for day, hours in value.items():
        d = str(day).strip().lower()[:3]
        if d not in WEEKDAYS:
            raise ValueError(f"unknown weekday {day!r}")
        h = str(hours).strip().lower().replace(" ", "")
        if h in {"24h", "00:00-24:00"}:
            h = "00:00-24:00"
        elif h in {"closed", "gesloten", "00:00-00:00"}:
            h = "closed"
        elif not _HOURS.match(h):
            raise ValueError(f"opening hours {hours!r} for {d}: expected HH:MM-HH:MM")
        elif max(_minutes(h[:5]), _minutes(h[6:])) > 24 * 60:
            raise ValueError(f"opening hours {hours!r} for {d}: no such time (after 24:00)")
        elif h[:5] == h[6:]:
            raise ValueError(f"opening hours {hours!r} for {d}: empty interval")
        out[d] = h
    return out


class AtmRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, coerce_numbers_to_str=True)

    atm_id: str = Field(min_length=1, max_length=64)
    operator: str = Field(min_length=1, max_length=200)
    lat: float = Field(ge=-90, le=90, allow_inf_nan=False)
    lon: float = Field(ge=-180, le=180, allow_inf_nan=False)
    country: str | None = Field(None, pattern=r"^[A-Z]{2}$")
    address: str | None = Field(None, max_length=300)
    postcode: str | None = Field(None, max_length=16)
    city: str | None = Field(None, max_length=120)
    municipality: str | None = Field(None, max_length=120)
    site_type: SiteType = SiteType.UNKNOWN
    host: str | None = Field(None, max_length=120)
    n_devices: int | None = Field(None, ge=0, le=1000)
    opening_hours: dict[str, str] | None = None
    night_closure: bool | None = None
    hardening: list[HardeningMeasure] = Field(default_factory=list)
    cash_at_risk_eur: float | None = Field(None, ge=0, le=10_000_000, allow_inf_nan=False)
    property_damage_eur: float | None = Field(None, ge=0, le=100_000_000, allow_inf_nan=False)
    residential_building: bool | None = None
    night_withdrawal_share: float | None = Field(None, ge=0, le=1, allow_inf_nan=False)
    status: AtmStatus = AtmStatus.ACTIVE
    installed_on: date | None = None
    removed_on: date | None = None
    extra: dict[str, Any] = Field(default_factory=dict)

    @field_validator("country", mode="before")
    @classmethod
    def _upper_country(cls, v: Any) -> Any:
        return v.strip().upper() if isinstance(v, str) else v

    @field_validator("site_type", "status", mode="before")
    @classmethod
    def _lower_enum(cls, v: Any) -> Any:
        return v.strip().lower().replace("-", "_").replace(" ", "_") if isinstance(v, str) else v

    @field_validator("opening_hours", mode="before")
    @classmethod
    def _hours(cls, v: Any) -> Any:
        return parse_opening_hours(v)

    @field_validator("hardening", mode="before")
    @classmethod
    def _split_measures(cls, v: Any) -> Any:
        if v is None:
            return []
        if isinstance(v, str):
            return [p.strip().lower() for p in re.split(r"[|,;]", v) if p.strip()]
        return v

    @model_validator(mode="after")
    def _consistent(self) -> AtmRecord:
        if self.removed_on is not None and self.status is not AtmStatus.REMOVED:
            raise ValueError("removed_on is given but status is not 'removed'")
        if self.installed_on and self.removed_on and self.removed_on < self.installed_on:
            raise ValueError("removed_on is before installed_on")
        if self.night_closure is None and self.opening_hours:
            self.night_closure = not any(
                open_at(h, NIGHT_CHECK_MINUTE) for h in self.opening_hours.values()
            )
        self.hardening = sorted(set(self.hardening))
        return self
