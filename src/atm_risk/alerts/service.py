"""The alerting flows: the immediate path of a reported incident, failures that raise
``pipeline_health``, repeats of unacknowledged alerts, and the outbox drain."""

from __future__ import annotations

import secrets
import threading
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from atm_risk.alerts import outbox
from atm_risk.alerts.digest import DigestItem, render_digest
from atm_risk.alerts.models import (
    Alert,
    AlertKind,
    AlertStatus,
    Delivery,
    DeliveryStatus,
    Severity,
)
from atm_risk.alerts.outbox import DispatchReport, Rendered, enqueue
from atm_risk.alerts.routing import Receiver, Target, targets
from atm_risk.alerts.rules import (
    Surroundings,
    escape_routes,
    gang_active,
    nearby,
    render_gang_active,
    risk_change,
    routing_of,
    surroundings,
)
from atm_risk.alerts.rules import warm as warm_caches
from atm_risk.areas.service import load_layer
from atm_risk.atms.models import Atm
from atm_risk.clock import Clock
from atm_risk.config import Settings
from atm_risk.db import transaction
from atm_risk.geo import project
from atm_risk.incidents.models import Incident
from atm_risk.incidents.schemas import IncidentRecord
from atm_risk.incidents.service import upsert_incidents
from atm_risk.ingest.validation import format_validation_error
from atm_risk.regions import region_of
from atm_risk.risk.models import RiskRun
from atm_risk.risk.service import RankedAtm, latest_run, ranking, run_scoring
from atm_risk.tenancy.models import Operator
from atm_risk.tenancy.service import operator_code

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
    with _admission(settings.alerts.report_concurrency):
        result, items = _store_report(sessions, settings, clock, fields, send=send)
    if items:
        report = outbox.deliver(
            sessions,
            items,
            settings=settings.alerts,
            clock=clock,
            on_failed=delivery_failed(settings),
        )
        result = ReportResult(**{**result.__dict__, "dispatch": report})
    return result


class FairGate:
    """At most ``limit`` holders at once; the others wait and are let in strictly in
    arrival order (a freed place is handed to the longest waiter, so a thread that
    leaves and comes straight back cannot overtake it, as it can with a semaphore)."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self._lock = threading.Lock()
        self._inside = 0
        self._waiting: deque[threading.Event] = deque()

    def __enter__(self) -> FairGate:
        with self._lock:
            if self._inside < self.limit and not self._waiting:
                self._inside += 1
                return self
            turn = threading.Event()
            self._waiting.append(turn)
        try:
            turn.wait()  # the place is handed over with the event (self._inside unchanged)
        except BaseException:  # interrupted while waiting: give up the turn or the place
            with self._lock:
                if turn in self._waiting:
                    self._waiting.remove(turn)
                    raise
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            if self._waiting:
                self._waiting.popleft().set()
            else:
                self._inside -= 1


_ADMISSION: dict[int, FairGate] = {}
_ADMISSION_LOCK = threading.Lock()


def _admission(limit: int) -> FairGate:
    """Admission control for the immediate path: at most ``limit`` reports are handled at
    once per process; the others wait their turn in arrival order."""
    with _ADMISSION_LOCK:
        if limit not in _ADMISSION:
            _ADMISSION[limit] = FairGate(limit)
        return _ADMISSION[limit]


def _store_report(
    sessions: sessionmaker[Session],
    settings: Settings,
    clock: Clock,
    fields: dict[str, Any],
    *,
    send: bool,
) -> tuple[ReportResult, list[outbox.Claimed]]:
    """The incident, its alert and its deliveries (claimed for sending when ``send``),
    committed in one transaction."""
    now = clock.now()
    fields = {
        "incident_id": new_report_id(now),
        **{k: v for k, v in fields.items() if v is not None},
    }
    lon: Any = fields.get("lon")
    lat: Any = fields.get("lat")
    if fields.get("atm_id") and not _is_coordinate(lon, lat):
        # reported by machine: its place gives the surroundings, country (local time) and
        # locality; the incident itself is linked to the machine by the ingest path
        with sessions() as session:
            machine = _machine(session, fields.get("operator"), str(fields["atm_id"]))
        if machine is not None:
            fields.setdefault("locality", machine.city)
            if machine.country and not fields.get("country"):
                fields["country"] = machine.country
            lon, lat = machine.lon, machine.lat
    around = None
    if _is_coordinate(lon, lat):
        # Read the surroundings first (region, machines near, escape routes): the write
        # transaction below then only writes, and holds locks briefly.
        with sessions() as session:
            around = surroundings(session, settings, float(lon), float(lat))
        if not fields.get("country") and around.country:
            # the local time of a report is read in the zone of its country
            fields["country"] = around.country
    try:
        record = IncidentRecord.model_validate(fields)
    except ValidationError as exc:
        raise ReportError(format_validation_error(exc)) from exc
    if record.occurred_from is not None and record.occurred_from > now + timedelta(minutes=5):
        raise ReportError("occurred_at: the attack cannot lie in the future")
    token = secrets.token_hex(16) if send else None
    with transaction(sessions, short=True) as session:
        result, items = _write_report(session, settings, record, now, around, (lon, lat), token)
    return result, items


def _write_report(
    session: Session,
    settings: Settings,
    record: IncidentRecord,
    now: datetime,
    around: Surroundings | None,
    where: tuple[Any, Any],
    token: str | None,
) -> tuple[ReportResult, list[outbox.Claimed]]:
    """In the caller's transaction: the incident, its gang_active alert, its deliveries."""
    counts, rejections = upsert_incidents(
        session, records=[("report", record)], feed=REPORT_FEED, now=now
    )
    if rejections:
        raise ReportError(rejections[0].reason)
    [incident] = counts.objects
    if around is not None and (incident.lon, incident.lat) != where:
        around = None  # located through its machine: read again inside
    alert, rows = gang_active(
        session, settings, incident, now=now, around=around, claim_token=token
    )
    items = outbox.claimed(rows, alert) if alert is not None else []
    result = ReportResult(
        incident_pk=incident.id,
        incident_label=f"{REPORT_FEED}/{incident.incident_id}",
        alert_id=alert.id if alert is not None else None,
        deliveries=[r.id for r in rows if r.status != DeliveryStatus.SUPPRESSED],
        dispatch=None,
    )
    return result, items


def warm(sessions: sessionmaker[Session], settings: Settings, clock: Clock) -> None:
    """Prepare this process for its first reported attack: build the caches of the
    immediate path (regions, machines, scores, escape routes, templates, routing) and run
    one SIMULATED report through it in a transaction that is rolled back, so that its SQL
    is compiled too. A server calls this at start; nothing is written."""
    warm_caches(sessions, settings)
    with sessions() as session:
        anchor = session.execute(
            select(Atm.lon, Atm.lat).where(Atm.lon.is_not(None), Atm.lat.is_not(None)).limit(1)
        ).first()
        if anchor is None:
            return
        lon, lat = float(anchor[0]), float(anchor[1])
        now = clock.now()
        around = surroundings(session, settings, lon, lat)
        record = IncidentRecord.model_validate(
            {
                "incident_id": f"warm-up-{secrets.token_hex(4)}",
                "occurred_at": now.isoformat(),
                "lon": lon,
                "lat": lat,
                "country": around.country,
                "geocode_precision": "exact",
                "method": "explosive_solid",
                "simulated": True,
            }
        )
        try:
            _write_report(session, settings, record, now, around, (lon, lat), None)
        finally:
            session.rollback()


def _machine(session: Session, operator: Any, atm_id: str) -> Atm | None:
    query = select(Atm).join(Operator, Atm.operator_id == Operator.id).where(Atm.atm_id == atm_id)
    if operator:
        code = operator_code(str(operator))
        query = query.where((Operator.code == code) | (Operator.name == str(operator)))
    found = session.scalars(query.limit(2)).all()
    return found[0] if len(found) == 1 else None


def _is_coordinate(lon: Any, lat: Any) -> bool:
    try:
        return -180 <= float(lon) <= 180 and -90 <= float(lat) <= 90
    except (TypeError, ValueError):
        return False


def score_and_alert(
    sessions: sessionmaker[Session],
    settings: Settings,
    clock: Clock,
    *,
    as_of: datetime | None = None,
    send: bool = True,
) -> tuple[RiskRun, DispatchReport | None]:
    """A scoring run whose risk_change alerts commit with it; then the due deliveries go."""

    def on_publish(session: Session, run: RiskRun) -> None:
        risk_change(session, settings, run, now=clock.now())

    run = run_scoring(sessions, settings=settings, clock=clock, as_of=as_of, on_publish=on_publish)
    return run, (drain(sessions, settings, clock) if send else None)


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
        alert = Alert.new(
            kind=AlertKind.PIPELINE_HEALTH,
            severity=Severity.WARNING,
            status=AlertStatus.FIRING,
            dedup_key=dedup,
            title=title,
            now=now,
            payload={"lines": [line]},
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
    with transaction(sessions, short=True) as session:
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
            machines = nearby(
                session, settings, incident["lon"], incident["lat"], cfg.gang_radius_km * 1000
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


# --------------------------------------------------------------------------- digests

PERIOD_DAYS = {"daily": 1, "weekly": 7}


def _scoped(
    items: list[RankedAtm], receiver: Receiver, regions: dict[str, str | None]
) -> list[RankedAtm]:
    """What one receiver may see: a bank its machines, police their regions, ops all."""
    if receiver.role == "bank":
        return [i for i in items if i.operator_code == receiver.operator]
    if receiver.role == "police":
        return [i for i in items if receiver.sees_region(regions[_key(i)])]
    return items


def _key(item: RankedAtm) -> str:
    return f"{item.operator_code}/{item.atm_id}"


def build_digests(
    sessions: sessionmaker[Session],
    settings: Settings,
    clock: Clock,
    *,
    period: str = "daily",
    zone: str = "Europe/Amsterdam",
) -> list[int]:
    """One digest alert for the period, one personal digest per routed receiver address
    (a bank sees its machines, police their regions without money, operators all), with
    the map (PNG) and the ranked list (CSV). Idempotent per period and day."""
    from zoneinfo import ZoneInfo

    if period not in PERIOD_DAYS:
        raise ValueError(f"period must be daily or weekly, not {period!r}")
    routing = routing_of(settings)
    now = clock.now()
    local_day = now.astimezone(ZoneInfo(zone)).date()
    key = f"digest:{period}:{local_day.isoformat()}"
    start = now - timedelta(days=PERIOD_DAYS[period])
    with transaction(sessions) as session:
        if session.scalar(select(Alert).where(Alert.dedup_key == key)) is not None:
            return []  # this period's digest exists already (a second scheduler, a rerun)
        run = latest_run(session)
        items = ranking(session, run) if run is not None else []
        alert = Alert.new(
            kind=AlertKind.DIGEST,
            severity=Severity.INFO,
            status=AlertStatus.RESOLVED,
            dedup_key=key,
            title=f"{period.capitalize()} digest {local_day}",
            now=now,
            payload={"run_id": run.id if run else None, "period": period},
            operator_codes=sorted({i.operator_code for i in items}),
            run_id=run.id if run else None,
        )
        session.add(alert)
        session.flush()
        if routing is None:
            return []
        found = targets(
            routing,
            kind=AlertKind.DIGEST,
            severity=Severity.INFO,
            region=None,
            operators=set(alert.operator_codes),
            per_recipient_scope=True,
        )
        regions = _machine_regions(session, settings, items)
        boundaries = _boundaries(session)
        incidents = [
            {
                "when_text": i.when_text(),
                "place": ", ".join(p for p in (i.locality, i.municipality) if p)
                or (i.region or ""),
                "method": str(i.method).replace("_", " "),
                "label": f"{i.feed}/{i.incident_id}",
                "simulated": bool(i.simulated),
            }
            for i in session.scalars(
                select(Incident)
                .where(Incident.occurred_from >= start, Incident.occurred_from < now)
                .order_by(Incident.occurred_from)
            )
        ]
        run_view = (
            {
                "id": run.id,
                "as_of": run.as_of,
                "scorer": run.scorer,
                "probability_method": run.params.get("probability_method"),
                "horizon_days": run.horizon_days,
            }
            if run is not None
            else {
                "id": None,
                "as_of": now,
                "scorer": "none",
                "probability_method": None,
                "horizon_days": 28,
            }
        )
        rendered: list[tuple[Target, Rendered]] = []
        cache: dict[str, Rendered] = {}
        for target in found:
            receiver = target.receiver
            if receiver.name not in cache:
                scoped = _scoped(items, receiver, regions)
                content = render_digest(
                    recipient_name=receiver.name,
                    role=receiver.role,
                    period=period,
                    period_start=start,
                    period_end=now,
                    zone=zone,
                    run=run_view,
                    items=[_digest_item(i) for i in scoped],
                    incidents=incidents,
                    changes=[],
                    boundaries=boundaries,
                    show_money=receiver.role != "police",
                )
                cache[receiver.name] = Rendered(
                    subject=content.subject,
                    text=content.text,
                    html=content.html,
                    data={"digest": period, "day": local_day.isoformat(), "machines": len(scoped)},
                    attachments=tuple(content.attachments),
                    inline_map=True,
                )
            rendered.append((target, cache[receiver.name]))
        rows = enqueue(
            session, alert, rendered, reason="new", seq=0, settings=settings.alerts, now=now
        )
        return [r.id for r in rows]


def _digest_item(i: RankedAtm) -> DigestItem:
    return DigestItem(
        rank=i.rank,
        operator=i.operator,
        atm_id=i.atm_id,
        city=i.city,
        address=i.address,
        lon=i.lon,
        lat=i.lat,
        probability=i.probability,
        risk_band=i.risk_band or "low",
        expected_loss_eur=i.expected_loss_eur,
        action=i.action or "monitor",
        action_reason=i.action_text(),
        reasons=i.reasons_text(),
    )


def _machine_regions(
    session: Session, settings: Settings, items: list[RankedAtm]
) -> dict[str, str | None]:
    return {_key(i): region_of(session, settings, i.lon, i.lat) for i in items}


def _boundaries(session: Session) -> Any:
    try:
        return load_layer(session, "nl_provinces")
    except LookupError:
        return None
