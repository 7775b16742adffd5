"""Area layers as stored: one row per layer, one per feature (WKB geometry in WGS84)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Float, ForeignKey, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from atm_risk.db import Base, UTCDateTime


class AreaLayer(Base):
    __tablename__ = "area_layers"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    geometry_type: Mapped[str] = mapped_column(String(32))
    source_crs: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(300))
    n_features: Mapped[int] = mapped_column(Integer)
    n_repaired: Mapped[int] = mapped_column(Integer)
    loaded_at: Mapped[datetime] = mapped_column(UTCDateTime())

    features: Mapped[list[AreaFeature]] = relationship(
        back_populates="layer", cascade="all, delete-orphan", passive_deletes=True
    )


class AreaFeature(Base):
    __tablename__ = "area_features"

    id: Mapped[int] = mapped_column(primary_key=True)
    layer_id: Mapped[int] = mapped_column(
        ForeignKey("area_layers.id", ondelete="CASCADE"), index=True
    )
    feature_no: Mapped[int] = mapped_column(Integer)
    name: Mapped[str | None] = mapped_column(String(200))
    properties: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    geometry_wkb: Mapped[bytes] = mapped_column(LargeBinary)
    minx: Mapped[float] = mapped_column(Float)
    miny: Mapped[float] = mapped_column(Float)
    maxx: Mapped[float] = mapped_column(Float)
    maxy: Mapped[float] = mapped_column(Float)

    layer: Mapped[AreaLayer] = relationship(back_populates="features")
