"""Alerts, their deliveries (the transactional outbox) and silences, as stored.

An alert is the grouped, deduplicated fact ("a gang is active around Utrecht"); a delivery is
one message of one alert version to one address. Deliveries are written in the same
transaction as what caused them (the incident, the scoring run), each with a unique
idempotency key and one Message-ID that every retry reuses. The outbox *is* the delivery log.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from atm_risk.db import Base, UTCDateTime, str_enum


class AlertKind(enum.StrEnum):
    GANG_ACTIVE = "gang_active"
    RISK_CHANGE = "risk_change"
    DIGEST = "digest"
    PIPELINE_HEALTH = "pipeline_health"


class Severity(enum.StrEnum):
    CRITICAL = "critical"
    WARNING = "warning"
    INFO = "info"


class AlertStatus(enum.StrEnum):
    FIRING = "firing"
    RESOLVED = "resolved"


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"  # waiting for its first or next attempt
    SENDING = "sending"  # claimed by a dispatcher until claimed_until
    SENT = "sent"
    FAILED = "failed"  # permanent refusal or attempts exhausted
    SUPPRESSED = "suppressed"  # matched a silence: recorded, not sent


class Channel(enum.StrEnum):
    EMAIL = "email"
    WEBHOOK = "webhook"


class Alert(Base):
    __tablename__ = "alerts"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[AlertKind] = mapped_column(str_enum(AlertKind, "alert_kind"), index=True)
    severity: Mapped[Severity] = mapped_column(str_enum(Severity, "alert_severity"))
    status: Mapped[AlertStatus] = mapped_column(str_enum(AlertStatus, "alert_status"))
    # Deterministic: the same facts give the same key (e.g. gang_active:NL:Utrecht:<first>).
    dedup_key: Mapped[str] = mapped_column(String(200), unique=True)
    region: Mapped[str | None] = mapped_column(String(120), index=True)
    title: Mapped[str] = mapped_column(String(300))
    version: Mapped[int] = mapped_column(Integer, default=1)  # +1 per update (new incident)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    operator_codes: Mapped[list[str]] = mapped_column(JSON, default=list)  # tenants concerned
    incident_pk: Mapped[int | None] = mapped_column(ForeignKey("incidents.id"))
    run_id: Mapped[int | None] = mapped_column(ForeignKey("risk_runs.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_event_at: Mapped[datetime] = mapped_column(UTCDateTime())
    repeats_sent: Mapped[int] = mapped_column(Integer, default=0)
    last_notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    acknowledged_by: Mapped[str | None] = mapped_column(String(200))
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    def summary(self) -> dict[str, Any]:
        """The alert as the CLI and the API show it (without its payload)."""
        return {
            "id": self.id,
            "kind": str(self.kind),
            "severity": str(self.severity),
            "status": str(self.status),
            "region": self.region,
            "title": self.title,
            "version": self.version,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "acknowledged_by": self.acknowledged_by,
            "acknowledged_at": self.acknowledged_at.isoformat() if self.acknowledged_at else None,
        }

    @classmethod
    def new(
        cls,
        *,
        kind: AlertKind,
        severity: Severity,
        status: AlertStatus,
        dedup_key: str,
        title: str,
        now: datetime,
        region: str | None = None,
        payload: dict[str, Any] | None = None,
        operator_codes: list[str] | None = None,
        incident_pk: int | None = None,
        run_id: int | None = None,
        last_event_at: datetime | None = None,
    ) -> Alert:
        """A first version of an alert, as every rule opens one."""
        return cls(
            kind=kind,
            severity=severity,
            status=status,
            dedup_key=dedup_key,
            region=region,
            title=title,
            version=1,
            payload=payload or {},
            operator_codes=operator_codes or [],
            incident_pk=incident_pk,
            run_id=run_id,
            created_at=now,
            updated_at=now,
            last_event_at=last_event_at or now,
            repeats_sent=0,
        )


class Delivery(Base):
    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("idempotency_key"),
        Index("ix_deliveries_due", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id", ondelete="CASCADE"), index=True)
    alert_version: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(String(16))  # new | update | repeat
    receiver: Mapped[str] = mapped_column(String(120))
    role: Mapped[str] = mapped_column(String(16))  # bank | police | operator
    channel: Mapped[Channel] = mapped_column(str_enum(Channel, "delivery_channel"))
    address: Mapped[str] = mapped_column(String(500))
    idempotency_key: Mapped[str] = mapped_column(String(300))
    message_id: Mapped[str] = mapped_column(String(300))
    content: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # rendered, per recipient
    status: Mapped[DeliveryStatus] = mapped_column(str_enum(DeliveryStatus, "delivery_status"))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime())
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    claim_token: Mapped[str | None] = mapped_column(String(64))
    last_error: Mapped[str | None] = mapped_column(Text)
    last_code: Mapped[int | None] = mapped_column(Integer)
    history: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)  # every attempt
    silence_id: Mapped[int | None] = mapped_column(ForeignKey("silences.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Silence(Base):
    """Mutes matching deliveries until ``ends_at`` (never open-ended; never gang_active to
    police)."""

    __tablename__ = "silences"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str | None] = mapped_column(String(32))  # None: any kind
    region: Mapped[str | None] = mapped_column(String(120))
    operator_code: Mapped[str | None] = mapped_column(String(64))
    receiver: Mapped[str | None] = mapped_column(String(120))
    severity: Mapped[str | None] = mapped_column(String(16))
    creator: Mapped[str] = mapped_column(String(200))
    comment: Mapped[str] = mapped_column(Text)
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expired_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    expired_by: Mapped[str | None] = mapped_column(String(200))
