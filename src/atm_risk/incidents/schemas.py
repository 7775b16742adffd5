"""The canonical incident record, validated with pydantic.

Canonical columns:

================= ======== ==============================================================
column            required meaning
================= ======== ==============================================================
incident_id       yes      the source's id (unique per feed)
occurred_at       one of   ISO date-time; with an offset, or local in ``timezone`` /
date_earliest     these    the country's zone. Or an interval of days: date_earliest,
date_latest                date_latest (default: date_earliest), date_precision
date_precision             (day, month, range; inferred when absent) and an optional
time_local                 local clock time ``HH:MM``
timezone          no       IANA zone of the local times (default: from ``country``)
lat, lon          yes*     WGS84; *not needed with an ``atm_id`` (the machine's place is
                           used) or with ``geocode_precision=none``
geocode_precision no       exact (default with coordinates), address, municipality, none
method            yes      explosive_gas, explosive_solid, explosive_unspecified,
                           ram_raid, burglary, other
method_detail     no       the source's finer label
outcome           no       loot, no_loot, attempt_failed, unknown (default)
atm_id, operator  no       link to a stored machine (operator needed if ids clash)
country, region, municipality, municipality_code, locality, target, escape,
source_url, notes no       as reported
simulated         no       true for rows made by ``atm-risk simulate`` (default false)
================= ======== ==============================================================
"""

from __future__ import annotations

import calendar
import re
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from atm_risk.incidents.models import AttackMethod, DatePrecision, GeocodePrecision, Outcome

COUNTRY_ZONES = {
    "NL": "Europe/Amsterdam",
    "DE": "Europe/Berlin",
    "BE": "Europe/Brussels",
    "LU": "Europe/Luxembourg",
    "FR": "Europe/Paris",
    "AT": "Europe/Vienna",
    "CH": "Europe/Zurich",
    "DK": "Europe/Copenhagen",
    "PL": "Europe/Warsaw",
    "CZ": "Europe/Prague",
    "GB": "Europe/London",
    "IE": "Europe/Dublin",
    "PT": "Europe/Lisbon",
    "ES": "Europe/Madrid",
    "IT": "Europe/Rome",
    "SE": "Europe/Stockholm",
}
_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
CANONICAL_INCIDENT_COLUMNS = (
    "incident_id",
    "occurred_at",
    "date_earliest",
    "date_latest",
    "date_precision",
    "time_local",
    "timezone",
    "lat",
    "lon",
    "geocode_precision",
    "method",
    "method_detail",
    "outcome",
    "atm_id",
    "operator",
    "country",
    "region",
    "municipality",
    "municipality_code",
    "locality",
    "target",
    "escape",
    "source_url",
    "notes",
    "simulated",
)


class IncidentRecord(BaseModel):
    """A validated incident; ``occurred_from``/``occurred_to`` are filled by validation."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, coerce_numbers_to_str=True)

    incident_id: str = Field(min_length=1, max_length=64)
    occurred_at: str | None = None
    date_earliest: date | None = None
    date_latest: date | None = None
    date_precision: DatePrecision | None = None
    time_local: str | None = Field(None, pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    timezone: str | None = None
    lat: float | None = Field(None, ge=-90, le=90, allow_inf_nan=False)
    lon: float | None = Field(None, ge=-180, le=180, allow_inf_nan=False)
    geocode_precision: GeocodePrecision | None = None
    method: AttackMethod
    method_detail: str | None = Field(None, max_length=64)
    outcome: Outcome = Outcome.UNKNOWN
    atm_id: str | None = Field(None, max_length=64)
    operator: str | None = Field(None, max_length=200)
    country: str | None = Field(None, pattern=r"^[A-Z]{2}$")
    region: str | None = Field(None, max_length=120)
    municipality: str | None = Field(None, max_length=120)
    municipality_code: str | None = Field(None, max_length=16)
    locality: str | None = Field(None, max_length=200)
    target: str | None = Field(None, max_length=200)
    escape: str | None = Field(None, max_length=2000)
    source_url: str | None = Field(None, max_length=4000)
    notes: str | None = Field(None, max_length=4000)
    extra: dict[str, Any] = Field(default_factory=dict)
    simulated: bool = False

    # Filled by validation.
    occurred_from: datetime | None = None
    occurred_to: datetime | None = None

    @field_validator("country", mode="before")
    @classmethod
    def _upper(cls, v: Any) -> Any:
        return v.strip().upper() if isinstance(v, str) else v

    @field_validator("method", "outcome", "date_precision", "geocode_precision", mode="before")
    @classmethod
    def _lower(cls, v: Any) -> Any:
        return v.strip().lower().replace("-", "_").replace(" ", "_") if isinstance(v, str) else v

    @field_validator("simulated", mode="before")
    @classmethod
    def _empty_is_false(cls, v: Any) -> Any:
        return False if v is None else v

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str | None) -> str | None:
        if v is None:
            return None
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown IANA time zone {v!r}") from exc
        return v

    def zone_name(self) -> str | None:
        return self.timezone or COUNTRY_ZONES.get(self.country or "")

    @model_validator(mode="after")
    def _normalise(self, info: ValidationInfo) -> IncidentRecord:
        self._normalise_time()
        self._check_place()
        now = (info.context or {}).get("now")
        if now is not None and self.occurred_from is not None and self.occurred_from > now:
            raise ValueError(f"occurred in the future ({self.occurred_from.isoformat()})")
        return self

    def _local(self, day: date, at: time, zone: str | None) -> datetime:
        if zone is None:
            raise ValueError(
                "local time without a zone: give an offset, a timezone or a known country"
            )
        return datetime.combine(day, at, tzinfo=ZoneInfo(zone)).astimezone(UTC)

    def _normalise_time(self) -> None:
        zone = self.zone_name()
        if self.occurred_at is not None:
            if self.date_earliest or self.date_latest:
                raise ValueError("give occurred_at or date_earliest/date_latest, not both")
            text = self.occurred_at.replace(" ", "T")
            if _DATE_ONLY.match(text):
                self.date_earliest = self.date_latest = date.fromisoformat(text)
            else:
                try:
                    when = datetime.fromisoformat(text.replace("Z", "+00:00"))
                except ValueError as exc:
                    raise ValueError(f"occurred_at {self.occurred_at!r} is not ISO 8601") from exc
                if when.tzinfo is None:
                    when = self._local(when.date(), when.time(), zone)
                self.occurred_from = self.occurred_to = when.astimezone(UTC)
                self.date_precision = DatePrecision.EXACT
                return
        if self.date_earliest is None:
            raise ValueError("no time: give occurred_at or date_earliest")
        earliest = self.date_earliest
        latest = self.date_latest or earliest
        if latest < earliest:
            raise ValueError(f"date_latest {latest} is before date_earliest {earliest}")
        self.date_latest = latest
        if self.date_precision is None:
            self.date_precision = _infer_precision(earliest, latest)
        if self.date_precision is DatePrecision.EXACT and (
            self.time_local is None or earliest != latest
        ):
            raise ValueError("date_precision 'exact' needs one day and a time_local")
        if self.date_precision is DatePrecision.DAY and earliest != latest:
            raise ValueError("date_precision 'day' but date_earliest != date_latest")
        if self.time_local is not None and earliest == latest:
            at = time.fromisoformat(self.time_local)
            self.occurred_from = self.occurred_to = self._local(earliest, at, zone)
            self.date_precision = DatePrecision.EXACT
            return
        self.occurred_from = self._local(earliest, time(0), zone)
        self.occurred_to = self._local(latest + timedelta(days=1), time(0), zone)

    def _check_place(self) -> None:
        has_lat, has_lon = self.lat is not None, self.lon is not None
        if has_lat != has_lon:
            raise ValueError("give both lat and lon, or neither")
        if self.geocode_precision is GeocodePrecision.NONE:
            if has_lat:
                raise ValueError("geocode_precision 'none' but coordinates are given")
            return
        if has_lat:
            if self.geocode_precision is None:
                self.geocode_precision = GeocodePrecision.EXACT
            return
        if self.atm_id is None:
            raise ValueError(
                "lat/lon: required, missing (or give an atm_id, or geocode_precision=none)"
            )


def _infer_precision(earliest: date, latest: date) -> DatePrecision:
    if earliest == latest:
        return DatePrecision.DAY
    last_day = calendar.monthrange(earliest.year, earliest.month)[1]
    if (
        earliest.day == 1
        and latest.year == earliest.year
        and latest.month == earliest.month
        and latest.day == last_day
    ):
        return DatePrecision.MONTH
    return DatePrecision.RANGE
