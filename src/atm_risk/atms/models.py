"""The cash machine as stored."""

from __future__ import annotations

import enum
from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, Date, Float, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from atm_risk.db import Base, UTCDateTime, str_enum
from atm_risk.tenancy.models import Operator


class SiteType(enum.StrEnum):
    """Where the machine stands; free-standing and foyer machines are the exposed ones."""

    BRANCH = "branch"  # in the wall of a bank branch
    FOYER = "foyer"  # in a lobby reachable at night
    SHOP = "shop"  # inside or at a shop (supermarket, bookshop, petrol station)
    FREE_STANDING = "free_standing"  # a kiosk or pod on its own
    WALL = "wall"  # through-the-wall, not a branch
    OTHER = "other"
    UNKNOWN = "unknown"


class AtmStatus(enum.StrEnum):
    ACTIVE = "active"
    REMOVED = "removed"


class HardeningMeasure(enum.StrEnum):
    """Physical protection measures (see the measure catalogue in decisions/)."""

    DYE_INK = "dye_ink"  # cash degradation by ink staining
    GLUE = "glue"  # cash bonding
    GAS_NEUTRALISER = "gas_neutraliser"
    BOLLARDS = "bollards"
    REINFORCED_SAFE = "reinforced_safe"  # CEN IV/V safe, explosion-tested
    ALARM_FOG = "alarm_fog"
    CCTV = "cctv"
    RELOCATED_INDOORS = "relocated_indoors"


class Atm(Base):
    """One cash machine (or one location of co-sited machines, as Geldmaat publishes them)."""

    __tablename__ = "atms"
    __table_args__ = (UniqueConstraint("operator_id", "atm_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    operator_id: Mapped[int] = mapped_column(ForeignKey("operators.id"), index=True)
    atm_id: Mapped[str] = mapped_column(String(64))
    lon: Mapped[float] = mapped_column(Float)
    lat: Mapped[float] = mapped_column(Float)
    country: Mapped[str | None] = mapped_column(String(2))
    address: Mapped[str | None] = mapped_column(String(300))
    postcode: Mapped[str | None] = mapped_column(String(16))
    city: Mapped[str | None] = mapped_column(String(120))
    municipality: Mapped[str | None] = mapped_column(String(120))
    site_type: Mapped[SiteType] = mapped_column(str_enum(SiteType, "site_type"))
    host: Mapped[str | None] = mapped_column(String(120))
    n_devices: Mapped[int | None] = mapped_column(Integer)
    opening_hours: Mapped[dict[str, str] | None] = mapped_column(JSON)
    night_closure: Mapped[bool | None]
    hardening: Mapped[list[str]] = mapped_column(JSON, default=list)
    cash_at_risk_eur: Mapped[float | None] = mapped_column(Float)
    property_damage_eur: Mapped[float | None] = mapped_column(Float)
    residential_building: Mapped[bool | None]
    night_withdrawal_share: Mapped[float | None] = mapped_column(Float)
    status: Mapped[AtmStatus] = mapped_column(str_enum(AtmStatus, "atm_status"))
    installed_on: Mapped[date | None] = mapped_column(Date)
    removed_on: Mapped[date | None] = mapped_column(Date)
    source: Mapped[str] = mapped_column(String(64))
    extra: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    operator: Mapped[Operator] = relationship()
