"""The alerting flows: the immediate path of a reported incident, failures that raise
``pipeline_health``, repeats of unacknowledged alerts, and the outbox drain."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from atm_risk.alerts import outbox
from atm_risk.alerts.models import (
    Alert,
    AlertKind,
    AlertStatus,
    Delivery,
    DeliveryStatus,
    Severity,
)
from atm_risk.alerts.outbox import DispatchReport, Rendered, enqueue
from atm_risk.alerts.routing import targets
from atm_risk.alerts.rules import (
    escape_routes,
    gang_active,
    locate,
    machines_near,
    render_gang_active,
    routing_of,
)
from atm_risk.clock import Clock
from atm_risk.config import Settings
from atm_risk.db import transaction
from atm_risk.geo import project
from atm_risk.incidents.models import Incident
from atm_risk.incidents.schemas import IncidentRecord
from atm_risk.incidents.service import upsert_incidents
from atm_risk.ingest.validation import format_validation_error

REPORT_FEED = "reports"


class ReportError(ValueError):
    """The report is invalid: nothing was written."""


@dataclass(frozen=True)
class ReportResult:
    incident_pk: int
    incident_label: str
    alert_id: int | None
    deliveries: list[int]
    dispatch: DispatchReport | None


def new_report_id(now: datetime) -> str:
    return f"R{now:%Y%m%d%H%M%S}-{secrets.token_hex(3)}"


def report_incident(
    sessions: sessionmaker[Session],
    settings: Settings,
    clock: Clock,
    fields: dict[str, Any],
    *,
    send: bool = True,
) -> ReportResult:
    """Store a reported incident and, in the same transaction, its gang_active alert and
    deliveries; then send them at once (no scheduler tick)."""
    now = clock.now()
    fields = {
        "incident_id": new_report_id(now),
        **{k: v for k, v in fields.items() if v is not None},
    }
    if not fields.get("country") and _is_coordinate(fields.get("lon"), fields.get("lat")):
        # the local time of a report is read in the zone of the country it happened in
        with sessions() as session:
            _, country = locate(session, settings, float(fields["lon"]), float(fields["lat"]))
        if country:
            fields["country"] = country
    try:
        record = IncidentRecord.model_validate(fields)
    except ValidationError as exc:
        raise ReportError(format_validation_error(exc)) from exc
    if record.occurred_from is not None and record.occurred_from > now + timedelta(minutes=5):
        raise ReportError("occurred_at: the attack cannot lie in the future")
    with transaction(sessions) as session:
        _, rejections = upsert_incidents(
            session, records=[("report", record)], feed=REPORT_FEED, now=now
        )
        if rejections:
            raise ReportError(rejections[0].reason)
        incident = session.scalar(
            select(Incident).where(
                Incident.feed == REPORT_FEED, Incident.incident_id == record.incident_id
            )
        )
        assert incident is not None
        rows = gang_active(session, settings, incident, now=now)
        result = ReportResult(
            incident_pk=incident.id,
            incident_label=f"{REPORT_FEED}/{incident.incident_id}",
            alert_id=rows[0].alert_id if rows else _alert_of(session, incident),
            deliveries=[r.id for r in rows if r.status == DeliveryStatus.PENDING],
            dispatch=None,
        )
    if send and result.deliveries:
        report = drain(sessions, settings, clock, ids=result.deliveries)
        result = ReportResult(**{**result.__dict__, "dispatch": report})
    return result


def _is_coordinate(lon: Any, lat: Any) -> bool:
    try:
        return -180 <= float(lon) <= 180 and -90 <= float(lat) <= 90
    except (TypeError, ValueError):
        return False


def _alert_of(session: Session, incident: Incident) -> int | None:
    alert = session.scalar(
        select(Alert).where(Alert.kind == AlertKind.GANG_ACTIVE, Alert.incident_pk == incident.id)
    )
    return alert.id if alert else None


def delivery_failed(settings: Settings) -> Any:
    """Callback for the outbox: a delivery failed for good -> pipeline_health to operators
    (in the same transaction). Failures of pipeline_health deliveries are only logged in
    the delivery row, so a broken operator mailbox cannot loop."""

    def on_failed(session: Session, row: Delivery, now: datetime) -> None:
        alert = session.get(Alert, row.alert_id)
        if alert is None or alert.kind == AlertKind.PIPELINE_HEALTH:
            return
        pipeline_health(
            session,
            settings,
            key=f"delivery_failed:{now:%Y-%m-%d}",
            title="A delivery failed for good",
            line=f"delivery {row.id} ({alert.kind} alert {alert.id}) to {row.receiver} "
            f"<{row.address}> failed after {row.attempts} attempt(s): {row.last_error}",
            now=now,
        )

    return on_failed


def pipeline_health(
    session: Session, settings: Settings, *, key: str, title: str, line: str, now: datetime
) -> list[Delivery]:
    """Open or update the pipeline_health alert ``key`` and notify the operators."""
    dedup = f"pipeline_health:{key}"
    alert = session.scalar(select(Alert).where(Alert.dedup_key == dedup))
    if alert is None:
        alert = Alert(
            kind=AlertKind.PIPELINE_HEALTH,
            severity=Severity.WARNING,
            status=AlertStatus.FIRING,
            dedup_key=dedup,
            region=None,
            title=title,
            version=1,
            payload={"lines": [line]},
            operator_codes=[],
            created_at=now,
            updated_at=now,
            last_event_at=now,
            repeats_sent=0,
        )
        session.add(alert)
        session.flush()
        reason = "new"
    else:
        alert.version += 1
        alert.payload = {**alert.payload, "lines": [*alert.payload.get("lines", []), line]}
        alert.updated_at = alert.last_event_at = now
        reason = "update"
    routing = routing_of(settings)
    if routing is None:
        return []
    found = [
        t
        for t in targets(
            routing,
            kind=AlertKind.PIPELINE_HEALTH,
            severity=alert.severity,
            region=None,
            operators=set(),
        )
        if t.receiver.role == "operator"
    ]
    lines = alert.payload["lines"]
    text = (
        f"{title}\n\n"
        + "\n".join(f"- {x}" for x in lines[-50:])
        + (f"\n\n-- atm-risk, alert {alert.id} version {alert.version}\n")
    )
    content = Rendered(
        subject=f"[atm-risk] pipeline health: {title}",
        text=text,
        data={"alert_id": alert.id, "title": title, "lines": lines[-50:]},
    )
    return enqueue(
        session,
        alert,
        [(t, content) for t in found],
        reason=reason,
        seq=0,
        settings=settings.alerts,
        now=now,
    )


def schedule_repeats(sessions: sessionmaker[Session], settings: Settings, now: datetime) -> int:
    """Re-send unacknowledged critical gang_active alerts every repeat interval (at most
    ``max_repeats`` times since the last update). Returns the deliveries enqueued."""
    cfg = settings.alerts
    due = now - timedelta(minutes=cfg.repeat_interval_minutes)
    count = 0
    routing = routing_of(settings)
    if routing is None:
        return 0
    with transaction(sessions) as session:
        alerts = session.scalars(
            select(Alert).where(
                Alert.kind == AlertKind.GANG_ACTIVE,
                Alert.status == AlertStatus.FIRING,
                Alert.severity == Severity.CRITICAL,
                Alert.acknowledged_at.is_(None),
                Alert.repeats_sent < cfg.max_repeats,
                Alert.last_notified_at <= due,
            )
        ).all()
        for alert in alerts:
            incident = alert.payload["incidents"][-1]
            machines = machines_near(
                session, settings, incident["lon"], incident["lat"], cfg.gang_radius_km * 1000
            )
            machines["shutdown"] = (
                machines["distance_m"] <= settings.decisions.shutdown_radius_km * 1000
            )
            px, py = project([incident["lon"]], [incident["lat"]], settings.metric_crs)
            routes = escape_routes(session, settings, float(px[0]), float(py[0]))
            alert.repeats_sent += 1
            alert.last_notified_at = now
            found = targets(
                routing,
                kind=alert.kind,
                severity=alert.severity,
                region=alert.region,
                operators=set(alert.operator_codes),
            )
            rendered = [
                (
                    t,
                    render_gang_active(
                        settings,
                        alert,
                        incident,
                        machines,
                        routes,
                        t,
                        now=now,
                        repeat=alert.repeats_sent,
                    ),
                )
                for t in found
            ]
            count += len(
                enqueue(
                    session,
                    alert,
                    rendered,
                    reason="repeat",
                    seq=alert.repeats_sent,
                    settings=cfg,
                    now=now,
                )
            )
    return count


def drain(
    sessions: sessionmaker[Session],
    settings: Settings,
    clock: Clock,
    *,
    ids: list[int] | None = None,
    limit: int = 500,
) -> DispatchReport:
    """Send what is due now (or only ``ids``) and record every outcome."""
    return outbox.dispatch(
        sessions,
        settings=settings.alerts,
        clock=clock,
        ids=ids,
        limit=limit,
        on_failed=delivery_failed(settings),
    )


def delivery_counts(session: Session) -> dict[str, int]:
    rows = session.execute(select(Delivery.status)).scalars().all()
    out: dict[str, int] = {}
    for status in rows:
        out[str(status)] = out.get(str(status), 0) + 1
    return out
