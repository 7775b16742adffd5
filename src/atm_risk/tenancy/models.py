"""The tenant: an operator of cash machines (a bank or a shared ATM network)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Float, String
from sqlalchemy.orm import Mapped, mapped_column

from atm_risk.db import Base, UTCDateTime


class Operator(Base):
    """A bank or ATM network. Every machine belongs to exactly one operator (its tenant)."""

    __tablename__ = "operators"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    country: Mapped[str | None] = mapped_column(String(2))
    # Loss assumptions of this operator (None: the settings' defaults apply).
    cash_at_risk_eur: Mapped[float | None] = mapped_column(Float)
    property_damage_eur: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
