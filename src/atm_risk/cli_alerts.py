"""``atm-risk incident report``, ``atm-risk alerts ...`` and ``atm-risk silences ...``."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer
from rich.table import Table
from sqlalchemy import select

from atm_risk.alerts.ack import acknowledge
from atm_risk.alerts.models import Alert, AlertKind, Delivery, Silence
from atm_risk.alerts.service import (
    ReportError,
    build_digests,
    drain,
    report_incident,
    schedule_repeats,
)
from atm_risk.cli_common import context_of, fail, out, sessions_of
from atm_risk.db import transaction
from atm_risk.incidents.models import AttackMethod, Outcome

incident_app = typer.Typer(no_args_is_help=True, help="Report incidents (immediate alerts).")
alerts_app = typer.Typer(no_args_is_help=True, help="Alerts and the delivery log (outbox).")
silences_app = typer.Typer(no_args_is_help=True, help="Silences: mute matching alerts for a time.")

MAX_SILENCE = timedelta(days=30)


@incident_app.command("report")
def report(
    ctx: typer.Context,
    lat: Annotated[float | None, typer.Option(help="WGS84 latitude.")] = None,
    lon: Annotated[float | None, typer.Option(help="WGS84 longitude.")] = None,
    atm: Annotated[
        str | None, typer.Option(help="The machine attacked, OPERATOR/ATM_ID (gives lat/lon).")
    ] = None,
    when: Annotated[
        str | None, typer.Option("--time", help="When (ISO 8601; default: now).")
    ] = None,
    method: Annotated[AttackMethod, typer.Option()] = AttackMethod.EXPLOSIVE_UNSPECIFIED,
    outcome: Annotated[Outcome, typer.Option()] = Outcome.UNKNOWN,
    locality: Annotated[str | None, typer.Option(help="Town or street.")] = None,
    notes: Annotated[str | None, typer.Option(help="What was seen (vehicle, direction).")] = None,
    escape: Annotated[str | None, typer.Option(help="Escape direction or vehicle.")] = None,
    no_send: Annotated[
        bool, typer.Option("--no-send", help="Only enqueue; the outbox drain sends.")
    ] = False,
) -> None:
    """Store an attack and alert at once: police of the region, the banks concerned, ops."""
    c = context_of(ctx)
    operator = atm_id = None
    if atm:
        operator, _, atm_id = atm.partition("/")
        if not operator or not atm_id:
            fail("--atm: expected OPERATOR/ATM_ID")
    fields: dict[str, Any] = {
        "occurred_at": when or c.clock.now().isoformat(),
        "lat": lat,
        "lon": lon,
        "operator": operator,
        "atm_id": atm_id,
        "method": str(method),
        "outcome": str(outcome),
        "locality": locality,
        "notes": notes,
        "escape": escape,
        "geocode_precision": "exact" if lat is not None else None,
    }
    try:
        result = report_incident(sessions_of(c), c.settings, c.clock, fields, send=not no_send)
    except ReportError as exc:
        fail(f"report rejected, nothing written: {exc}")
    sent = f"; {result.dispatch}" if result.dispatch else ""
    out.print(
        f"incident {result.incident_label} stored; alert {result.alert_id or '-'}; "
        f"{len(result.deliveries)} deliveries{sent}",
        markup=False,
    )


@alerts_app.command("list")
def alerts_list(
    ctx: typer.Context,
    kind: Annotated[AlertKind | None, typer.Option()] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The latest alerts, newest first."""
    c = context_of(ctx)
    if c.settings.alerts.routing_file is None:
        out.print("note: no routing file configured: alerts are recorded, nobody is notified")
    with sessions_of(c)() as session:
        query = select(Alert).order_by(Alert.updated_at.desc(), Alert.id.desc()).limit(limit)
        if kind is not None:
            query = query.where(Alert.kind == kind)
        rows = [a.summary() for a in session.scalars(query)]
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table(title="Alerts")
    for col in ("id", "kind", "severity", "status", "region", "version", "ack", "title"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(
            str(r["id"]),
            r["kind"],
            r["severity"],
            r["status"],
            r["region"] or "",
            str(r["version"]),
            r["acknowledged_by"] or "",
            r["title"],
        )
    out.print(table)


def _delivery_row(d: Delivery) -> dict[str, Any]:
    return {
        "id": d.id,
        "alert_id": d.alert_id,
        "version": d.alert_version,
        "reason": d.reason,
        "receiver": d.receiver,
        "channel": str(d.channel),
        "address": d.address,
        "status": str(d.status),
        "attempts": d.attempts,
        "next_attempt_at": d.next_attempt_at.isoformat(),
        "sent_at": d.sent_at.isoformat() if d.sent_at else None,
        "message_id": d.message_id,
        "last_code": d.last_code,
        "last_error": d.last_error,
        "history": d.history,
    }


@alerts_app.command("show")
def alerts_show(ctx: typer.Context, alert_id: int) -> None:
    """One alert with its payload and every delivery (the delivery log)."""
    c = context_of(ctx)
    with sessions_of(c)() as session:
        alert = session.get(Alert, alert_id)
        if alert is None:
            fail(f"no alert {alert_id}", 1)
        deliveries = session.scalars(
            select(Delivery).where(Delivery.alert_id == alert_id).order_by(Delivery.id)
        ).all()
        doc = {
            **alert.summary(),
            "payload": alert.payload,
            "deliveries": [_delivery_row(d) for d in deliveries],
        }
    out.print_json(json.dumps(doc, default=str))


@alerts_app.command("deliveries")
def alerts_deliveries(
    ctx: typer.Context,
    status: Annotated[
        str | None, typer.Option(help="pending, sending, sent, failed, suppressed")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The outbox: deliveries with their attempts, newest first."""
    c = context_of(ctx)
    with sessions_of(c)() as session:
        query = select(Delivery).order_by(Delivery.id.desc()).limit(limit)
        if status:
            query = query.where(Delivery.status == status)
        rows = [_delivery_row(d) for d in session.scalars(query)]
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table(title="Deliveries")
    for col in ("id", "alert", "reason", "receiver", "address", "status", "tries", "last"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(
            str(r["id"]),
            f"{r['alert_id']}v{r['version']}",
            r["reason"],
            r["receiver"],
            r["address"],
            r["status"],
            str(r["attempts"]),
            r["last_error"] or "",
        )
    out.print(table)


@alerts_app.command("ack")
def alerts_ack(
    ctx: typer.Context,
    alert_id: int,
    by: Annotated[str, typer.Option(help="Who acknowledges (recorded).")],
) -> None:
    """Acknowledge an alert: records who and when, and stops its repeats."""
    c = context_of(ctx)
    try:
        with transaction(sessions_of(c)) as session:
            alert = acknowledge(session, alert_id, by, c.clock.now())
            who, when = alert.acknowledged_by, alert.acknowledged_at
    except (LookupError, ValueError) as exc:
        fail(str(exc), 1)
    out.print(f"alert {alert_id} acknowledged by {who} at {when}", markup=False)


@alerts_app.command("dispatch")
def alerts_dispatch(ctx: typer.Context) -> None:
    """Enqueue due repeats, then send every due delivery once (what the scheduler runs)."""
    c = context_of(ctx)
    repeats = schedule_repeats(sessions_of(c), c.settings, c.clock.now())
    result = drain(sessions_of(c), c.settings, c.clock)
    out.print(f"repeats enqueued {repeats}; {result}", markup=False)


@alerts_app.command("digest")
def alerts_digest(
    ctx: typer.Context,
    period: Annotated[str, typer.Option(help="daily or weekly")] = "daily",
    zone: Annotated[str, typer.Option(help="IANA zone of the digest's dates")] = (
        "Europe/Amsterdam"
    ),
    no_send: Annotated[bool, typer.Option("--no-send")] = False,
) -> None:
    """Write this period's digest for every routed receiver (once per period and day)."""
    c = context_of(ctx)
    try:
        ids = build_digests(sessions_of(c), c.settings, c.clock, period=period, zone=zone)
    except ValueError as exc:
        fail(str(exc))
    sent = "" if no_send or not ids else f"; {drain(sessions_of(c), c.settings, c.clock, ids=ids)}"
    out.print(f"{period} digest: {len(ids)} deliveries{sent}", markup=False)


def _parse_until(value: str, now: datetime) -> datetime:
    units = {"m": "minutes", "h": "hours", "d": "days"}
    if value and value[-1] in units and value[:-1].isdigit():
        return now + timedelta(**{units[value[-1]]: int(value[:-1])})
    when = datetime.fromisoformat(value)
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@silences_app.command("add")
def silences_add(
    ctx: typer.Context,
    creator: Annotated[str, typer.Option(help="Who silences (recorded).")],
    comment: Annotated[str, typer.Option(help="Why (recorded).")],
    until: Annotated[str, typer.Option(help="End: ISO time or a duration like 4h, 2d.")],
    kind: Annotated[AlertKind | None, typer.Option()] = None,
    region: Annotated[str | None, typer.Option()] = None,
    operator: Annotated[str | None, typer.Option()] = None,
    receiver: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Mute matching deliveries until a set time (at most 30 days; never gang_active to
    police: those are always sent)."""
    c = context_of(ctx)
    now = c.clock.now()
    try:
        ends = _parse_until(until, now)
    except ValueError:
        fail(f"--until {until!r}: expected an ISO time or a duration like 4h or 2d")
    if ends <= now:
        fail("--until lies in the past")
    if ends - now > MAX_SILENCE:
        fail("a silence may last at most 30 days (no open-ended silences)")
    if not creator.strip() or not comment.strip():
        fail("--creator and --comment must not be empty")
    with transaction(sessions_of(c)) as session:
        silence = Silence(
            kind=str(kind) if kind else None,
            region=region,
            operator_code=operator,
            receiver=receiver,
            severity=None,
            creator=creator.strip(),
            comment=comment.strip(),
            starts_at=now,
            ends_at=ends,
            created_at=now,
        )
        session.add(silence)
        session.flush()
        sid = silence.id
    note = (
        " (gang_active alerts to police are never silenced)"
        if kind in (None, AlertKind.GANG_ACTIVE)
        else ""
    )
    out.print(f"silence {sid} until {ends.isoformat()}{note}", markup=False)


@silences_app.command("list")
def silences_list(ctx: typer.Context) -> None:
    """Silences, active first."""
    c = context_of(ctx)
    now = c.clock.now()
    with sessions_of(c)() as session:
        rows = session.scalars(select(Silence).order_by(Silence.ends_at.desc())).all()
        table = Table(title="Silences")
        for col in ("id", "active", "matches", "until", "creator", "comment"):
            table.add_column(col, overflow="fold")
        for s in rows:
            active = s.expired_at is None and s.starts_at <= now < s.ends_at
            matches = ", ".join(
                f"{k}={v}"
                for k, v in (
                    ("kind", s.kind),
                    ("region", s.region),
                    ("operator", s.operator_code),
                    ("receiver", s.receiver),
                )
                if v
            )
            table.add_row(
                str(s.id),
                "yes" if active else "no",
                matches or "everything",
                s.ends_at.isoformat(),
                s.creator,
                s.comment,
            )
    out.print(table)


@silences_app.command("expire")
def silences_expire(
    ctx: typer.Context, silence_id: int, by: Annotated[str, typer.Option()]
) -> None:
    """End a silence now."""
    c = context_of(ctx)
    with transaction(sessions_of(c)) as session:
        silence = session.get(Silence, silence_id)
        if silence is None:
            fail(f"no silence {silence_id}", 1)
        silence.expired_at, silence.expired_by = c.clock.now(), by
    out.print(f"silence {silence_id} expired", markup=False)
