"""The incident (an attack) as stored: time as an interval, place with its precision."""

from __future__ import annotations

import enum
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import JSON, Float, ForeignKey, String, Text, UniqueConstraint, false
from sqlalchemy.orm import Mapped, mapped_column

from atm_risk.db import Base, UTCDateTime, str_enum


class DatePrecision(enum.StrEnum):
    """How well the time is known; [occurred_from, occurred_to) always holds the truth."""

    EXACT = "exact"  # a clock time is known (to the minute)
    DAY = "day"
    MONTH = "month"
    RANGE = "range"  # a wider interval


class GeocodePrecision(enum.StrEnum):
    EXACT = "exact"  # the machine's own coordinates
    ADDRESS = "address"
    MUNICIPALITY = "municipality"  # a representative point of the municipality
    NONE = "none"  # no coordinates known (kept, but not used for spatial features)


class AttackMethod(enum.StrEnum):
    EXPLOSIVE_GAS = "explosive_gas"
    EXPLOSIVE_SOLID = "explosive_solid"
    EXPLOSIVE_UNSPECIFIED = "explosive_unspecified"
    RAM_RAID = "ram_raid"
    BURGLARY = "burglary"
    OTHER = "other"


PHYSICAL_ATTACKS = frozenset(
    {
        AttackMethod.EXPLOSIVE_GAS,
        AttackMethod.EXPLOSIVE_SOLID,
        AttackMethod.EXPLOSIVE_UNSPECIFIED,
        AttackMethod.RAM_RAID,
    }
)
"""The attacks atm-risk forecasts (burglary and fraud are kept but not scored on)."""


class Outcome(enum.StrEnum):
    LOOT = "loot"
    NO_LOOT = "no_loot"
    ATTEMPT_FAILED = "attempt_failed"
    UNKNOWN = "unknown"


class Incident(Base):
    __tablename__ = "incidents"
    __table_args__ = (UniqueConstraint("feed", "incident_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    feed: Mapped[str] = mapped_column(String(64))
    incident_id: Mapped[str] = mapped_column(String(64))
    occurred_from: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    occurred_to: Mapped[datetime] = mapped_column(UTCDateTime())
    date_precision: Mapped[DatePrecision] = mapped_column(str_enum(DatePrecision, "date_precision"))
    time_local: Mapped[str | None] = mapped_column(String(5))  # HH:MM, also when the day is not
    timezone: Mapped[str] = mapped_column(String(64))  # IANA zone the local times refer to
    country: Mapped[str | None] = mapped_column(String(2))
    region: Mapped[str | None] = mapped_column(String(120))
    municipality: Mapped[str | None] = mapped_column(String(120))
    municipality_code: Mapped[str | None] = mapped_column(String(16))
    locality: Mapped[str | None] = mapped_column(String(200))
    lon: Mapped[float | None] = mapped_column(Float)
    lat: Mapped[float | None] = mapped_column(Float)
    geocode_precision: Mapped[GeocodePrecision] = mapped_column(
        str_enum(GeocodePrecision, "geocode_precision")
    )
    method: Mapped[AttackMethod] = mapped_column(str_enum(AttackMethod, "attack_method"))
    method_detail: Mapped[str | None] = mapped_column(String(64))
    outcome: Mapped[Outcome] = mapped_column(str_enum(Outcome, "outcome"))
    atm_pk: Mapped[int | None] = mapped_column(ForeignKey("atms.id"), index=True)
    target: Mapped[str | None] = mapped_column(String(200))
    escape: Mapped[str | None] = mapped_column(Text)
    source_url: Mapped[str | None] = mapped_column(Text)
    notes: Mapped[str | None] = mapped_column(Text)
    extra: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # True for rows made by `atm-risk simulate`: shown as simulated wherever they appear.
    simulated: Mapped[bool] = mapped_column(default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    def when_text(self) -> str:
        """The date as precisely as it is known, in local time: a day, a month or a range."""
        zone = ZoneInfo(self.timezone)
        start = self.occurred_from.astimezone(zone)
        if self.date_precision is DatePrecision.EXACT:
            return start.strftime("%Y-%m-%d %H:%M")
        if self.date_precision is DatePrecision.DAY:
            return start.date().isoformat()
        if self.date_precision is DatePrecision.MONTH:
            return start.strftime("%B %Y")
        last = (self.occurred_to - timedelta(seconds=1)).astimezone(zone)
        return f"between {start.date().isoformat()} and {last.date().isoformat()}"
