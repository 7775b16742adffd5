"""The transactional outbox: enqueue in the caller's transaction, dispatch afterwards.

``enqueue`` writes one delivery row per address of an alert version in the *caller's*
session, so the alert, its deliveries and whatever caused them (the incident, the scoring
run) commit together or not at all. ``dispatch`` claims due rows (a lease, so that two
dispatchers never send the same row at the same time and a dead one's rows are taken over),
sends outside any transaction, and records the outcome:

* sent -> ``sent``;
* transient (timeouts, 4xx SMTP replies, HTTP 429/5xx, configuration errors that an operator
  can fix) -> ``pending`` again after an exponential backoff, until ``max_attempts``;
* permanent (5xx SMTP replies, refused recipient, HTTP 4xx) or attempts exhausted ->
  ``failed``, and a ``pipeline_health`` alert goes to the operators.

Delivery is at least once: each row keeps one Message-ID (e-mail) / idempotency key
(webhook) across retries so that a receiver can drop a duplicate.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from atm_risk.alerts.channels import (
    ChannelConfigError,
    DeliveryResult,
    Outcome,
    build_message,
    compose,
    message_id_for,
    post_webhook,
    send_email,
)
from atm_risk.alerts.channels.webhook import envelope
from atm_risk.alerts.digest import embed_map_inline
from atm_risk.alerts.models import (
    Alert,
    AlertKind,
    Channel,
    Delivery,
    DeliveryStatus,
    Silence,
)
from atm_risk.alerts.routing import Target, Webhook
from atm_risk.alerts.settings import AlertSettings
from atm_risk.clock import Clock
from atm_risk.db import transaction
from atm_risk.files import atomic_path


@dataclass(frozen=True)
class Rendered:
    """What one recipient receives: subject, text, optional HTML and attachments (base64 in
    the stored content), and the structured data for webhooks."""

    subject: str
    text: str
    html: str | None = None
    data: dict[str, Any] | None = None
    attachments: tuple[tuple[str, bytes, str], ...] = ()
    inline_map: bool = False  # show the risk-map.png attachment inside the HTML (digest)

    def stored(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "text": self.text,
            "html": self.html,
            "data": self.data or {},
            "inline_map": self.inline_map,
            "attachments": [
                {"filename": f, "mime": m, "base64": base64.b64encode(b).decode("ascii")}
                for f, b, m in self.attachments
            ],
        }


def idempotency_key(alert: Alert, reason: str, seq: int, target: Target) -> str:
    digest = hashlib.sha256(f"{target.channel}:{target.address}".encode()).hexdigest()[:12]
    return f"alert{alert.id}.v{alert.version}.{reason}{seq}.{target.receiver.name}.{digest}"


def active_silences(session: Session, now: datetime) -> list[Any]:
    """The silences in force at ``now``: rows with what matching needs (id, kind,
    severity, region, receiver, operator_code), read without ORM objects (every enqueue
    of the immediate path asks)."""
    return list(
        session.connection().execute(
            select(
                Silence.id,
                Silence.kind,
                Silence.severity,
                Silence.region,
                Silence.receiver,
                Silence.operator_code,
            )
            .where(Silence.starts_at <= now, Silence.ends_at > now, Silence.expired_at.is_(None))
            .order_by(Silence.id)
        )
    )


def matching_silence(
    silences: Sequence[Any], alert: Alert, target: Target, operator: str | None
) -> Any:
    """The first active silence that matches this delivery (never gang_active to police)."""
    if alert.kind == AlertKind.GANG_ACTIVE and target.receiver.role == "police":
        return None
    for s in silences:
        if s.kind is not None and s.kind != str(alert.kind):
            continue
        if s.severity is not None and s.severity != str(alert.severity):
            continue
        if s.region is not None and (alert.region or "").casefold() != s.region.casefold():
            continue
        if s.receiver is not None and s.receiver != target.receiver.name:
            continue
        if s.operator_code is not None and s.operator_code not in (
            {operator} if operator else set(alert.operator_codes)
        ):
            continue
        return s
    return None


def enqueue(
    session: Session,
    alert: Alert,
    deliveries: Sequence[tuple[Target, Rendered]],
    *,
    reason: str,
    seq: int,
    settings: AlertSettings,
    now: datetime,
    claim_token: str | None = None,
) -> list[Delivery]:
    """Add one delivery per (target, rendered content) in the caller's transaction; the
    returned rows are for reading (they are not attached to the session).

    ``claim_token``: the caller sends these rows itself right after its commit (the
    immediate path), so they are written already claimed with a lease; if the caller dies
    before recording the outcome, the lease expires and any dispatcher takes them over."""
    values: list[dict[str, Any]] = []
    silences = active_silences(session, now) if deliveries else []
    for target, content in deliveries:
        key = idempotency_key(alert, reason, seq, target)
        silence = matching_silence(silences, alert, target, target.receiver.operator)
        values.append(
            {
                "alert_id": alert.id,
                "alert_version": alert.version,
                "reason": reason,
                "receiver": target.receiver.name,
                "role": target.receiver.role,
                "channel": target.channel,
                "address": target.address,
                "idempotency_key": key,
                "message_id": message_id_for(key, settings.message_domain),
                "content": {
                    **content.stored(),
                    "secret_env": target.webhook.secret_env if target.webhook else None,
                },
                "status": DeliveryStatus.SUPPRESSED
                if silence
                else (DeliveryStatus.SENDING if claim_token else DeliveryStatus.PENDING),
                "claim_token": None if silence else claim_token,
                "claimed_until": None
                if silence or not claim_token
                else now + timedelta(seconds=settings.claim_lease_s),
                "attempts": 0,
                "next_attempt_at": now,
                "history": [],
                "silence_id": silence.id if silence else None,
                "created_at": now,
            }
        )
    if not values:
        return []
    # one multi-row INSERT ... RETURNING id, without the unit of work's bookkeeping (this
    # runs for every reported attack); the rows come back as plain objects to read
    ids = session.scalars(
        insert(Delivery).returning(Delivery.id, sort_by_parameter_order=True), values
    ).all()
    return [Delivery(**v, id=pk) for v, pk in zip(values, ids, strict=True)]


# --------------------------------------------------------------------------- dispatch


@dataclass(frozen=True)
class Claimed:
    id: int
    channel: Channel
    address: str
    message_id: str
    idempotency_key: str
    content: dict[str, Any]
    alert_kind: str
    alert_created_at: datetime
    attempts: int
    token: str

    @classmethod
    def of(cls, d: Delivery, alert_kind: str, alert_created_at: datetime) -> Claimed:
        """A claimed delivery row, ready to send (its claim token is the lease's owner)."""
        return cls(
            id=d.id,
            channel=d.channel,
            address=d.address,
            message_id=d.message_id,
            idempotency_key=d.idempotency_key,
            content=d.content,
            alert_kind=alert_kind,
            alert_created_at=alert_created_at,
            attempts=d.attempts,
            token=d.claim_token or "",
        )


@dataclass
class DispatchReport:
    claimed: int = 0
    sent: int = 0
    retried: int = 0
    failed: int = 0

    def __str__(self) -> str:
        return (
            f"claimed {self.claimed}: sent {self.sent}, to retry {self.retried}, "
            f"failed {self.failed}"
        )


def _due(now: datetime) -> Any:
    return or_(
        and_(Delivery.status == DeliveryStatus.PENDING, Delivery.next_attempt_at <= now),
        and_(Delivery.status == DeliveryStatus.SENDING, Delivery.claimed_until < now),
    )


def claim(
    sessions: sessionmaker[Session],
    *,
    now: datetime,
    lease_s: float,
    ids: Iterable[int] | None = None,
    limit: int = 200,
) -> list[Claimed]:
    """Claim due deliveries with a lease; a row is claimed by at most one dispatcher."""
    token = secrets.token_hex(16)
    with transaction(sessions, short=True) as session:
        query = select(Delivery.id).where(_due(now)).order_by(Delivery.id).limit(limit)
        if ids is not None:
            query = query.where(Delivery.id.in_(list(ids)))
        candidates = list(session.scalars(query))
        if not candidates:
            return []
        session.execute(
            update(Delivery)
            .where(Delivery.id.in_(candidates), _due(now))
            .values(
                status=DeliveryStatus.SENDING,
                claim_token=token,
                claimed_until=now + timedelta(seconds=lease_s),
            )
            .execution_options(synchronize_session=False)
        )
    with sessions() as session:
        rows = session.execute(
            select(Delivery, Alert.kind, Alert.created_at)
            .join(Alert, Alert.id == Delivery.alert_id)
            .where(Delivery.claim_token == token)
            .order_by(Delivery.id)
        ).all()
        return [Claimed.of(d, str(kind), created) for d, kind, created in rows]


def claimed(rows: Sequence[Delivery], alert: Alert) -> list[Claimed]:
    """The rows ``enqueue`` wrote already claimed, ready for ``deliver``."""
    return [
        Claimed.of(d, str(alert.kind), alert.created_at)
        for d in rows
        if d.status == DeliveryStatus.SENDING and d.claim_token
    ]


def _attachments(content: dict[str, Any]) -> list[tuple[str, bytes, str]]:
    return [
        (a["filename"], base64.b64decode(a["base64"]), a["mime"])
        for a in content.get("attachments", [])
    ]


def send_one(item: Claimed, settings: AlertSettings, now: datetime) -> DeliveryResult:
    """Hand one claimed delivery to its channel; never raises for delivery problems."""
    content = item.content
    try:
        if item.channel == Channel.EMAIL:
            sender = settings.smtp.from_address if settings.smtp else "alerts@atm-risk.invalid"
            message = _email(item, sender, now)
            if settings.eml_dir is not None:
                return _write_eml(settings.eml_dir, item, bytes(message))
            if settings.smtp is None:
                return DeliveryResult(Outcome.TRANSIENT, "no SMTP relay configured")
            return send_email(message, item.address, settings.smtp)
        hook = Webhook(url=item.address, secret_env=content.get("secret_env") or "UNSET")
        payload = envelope(
            kind=item.alert_kind,
            idempotency_key=item.idempotency_key,
            created_at=item.alert_created_at,
            data=content.get("data", {}),
        )
        return post_webhook(
            item.address,
            payload,
            secret=hook.secret(),
            idempotency_key=item.idempotency_key,
            now=int(now.timestamp()),
        )
    except ChannelConfigError as exc:
        return DeliveryResult(Outcome.TRANSIENT, f"configuration: {exc}")
    except Exception as exc:
        return DeliveryResult(Outcome.TRANSIENT, f"{type(exc).__name__}: {exc}")


def _email(item: Claimed, sender: str, now: datetime) -> EmailMessage | bytes:
    """The message of a claimed e-mail delivery: its wire form directly when it is text and
    HTML only (alerts), through the ``email`` object model when it has attachments
    (digests: map and CSV)."""
    content = item.content
    fields: dict[str, Any] = {
        "subject": content["subject"],
        "sender": sender,
        "to": item.address,
        "message_id": item.message_id,
        "text": content["text"],
        "html": content.get("html"),
        "date": now,
    }
    if not content.get("attachments") and not content.get("inline_map"):
        wire = compose(**fields)
        if wire is not None:
            return wire
    message = build_message(**fields, attachments=_attachments(content))
    if content.get("inline_map"):
        embed_map_inline(message)
    return message


def _write_eml(folder: Path, item: Claimed, raw: bytes) -> DeliveryResult:
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{item.id:06d}-{item.alert_kind}-{item.address.replace('@', '_at_')}.eml"
    with atomic_path(folder / name) as tmp:
        tmp.write_bytes(raw)
    return DeliveryResult(Outcome.SENT, f"written to {folder / name}")


_POOLS: dict[int, ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def _pool(workers: int) -> ThreadPoolExecutor:
    """One long-lived pool of sender threads per process (starting threads per report cost
    more than the sends on the immediate path)."""
    with _POOLS_LOCK:
        if workers not in _POOLS:
            _POOLS[workers] = ThreadPoolExecutor(workers, thread_name_prefix="atm-risk-send")
        return _POOLS[workers]


def backoff_s(attempts: int, settings: AlertSettings) -> float:
    return float(min(settings.retry_base_s * 2 ** max(attempts - 1, 0), settings.retry_max_s))


def record(
    sessions: sessionmaker[Session],
    outcomes: Sequence[tuple[Claimed, DeliveryResult]],
    *,
    settings: AlertSettings,
    now: datetime,
    on_failed: Any = None,
) -> list[DeliveryStatus | None]:
    """Store the outcomes (one transaction) of the rows this dispatcher still owns."""
    with transaction(sessions, short=True) as session:
        ids = [item.id for item, _ in outcomes]
        # locked (PostgreSQL), so a dispatcher that took over an expired lease cannot
        # interleave between this check of the claim token and the write; only the columns
        # the outcome depends on (not the message: often tens of kB of JSON)
        current = {
            r.id: r
            for r in session.connection().execute(
                select(
                    Delivery.id,
                    Delivery.claim_token,
                    Delivery.status,
                    Delivery.attempts,
                    Delivery.history,
                    Delivery.next_attempt_at,
                    Delivery.sent_at,
                )
                .where(Delivery.id.in_(ids))
                .with_for_update()
            )
        }
        changes = [
            _outcome(current.get(item.id), item, result, settings, now) for item, result in outcomes
        ]
        written = [c for c in changes if c is not None]
        if written:
            # one UPDATE by primary key for all rows (every change sets the same columns)
            session.execute(update(Delivery), written)
        if on_failed is not None:
            for change in written:
                if change["status"] == DeliveryStatus.FAILED:
                    row = session.get(Delivery, change["id"])
                    assert row is not None
                    on_failed(session, row, now)
        return [None if c is None else c["status"] for c in changes]


def _outcome(
    row: Any, item: Claimed, result: DeliveryResult, settings: AlertSettings, now: datetime
) -> dict[str, Any] | None:
    """The new column values of a delivery after one attempt; None when this dispatcher no
    longer owns it (the lease was lost to another dispatcher, which records)."""
    if row is None or row.claim_token != item.token or row.status != DeliveryStatus.SENDING:
        return None
    attempts = row.attempts + 1
    change: dict[str, Any] = {
        "id": row.id,
        "attempts": attempts,
        "history": [
            *row.history,
            {
                "attempt": attempts,
                "at": now.isoformat(),
                "outcome": str(result.outcome),
                "code": result.code,
                "detail": result.detail[:500],
            },
        ],
        "last_code": result.code,
        "last_error": None,
        "claim_token": None,
        "claimed_until": None,
        "next_attempt_at": row.next_attempt_at,
        "sent_at": row.sent_at,
    }
    if result.outcome == Outcome.SENT:
        change.update(status=DeliveryStatus.SENT, sent_at=now)
    elif result.outcome == Outcome.TRANSIENT and attempts < settings.max_attempts:
        delay = max(backoff_s(attempts, settings), result.retry_after_s or 0.0)
        change.update(
            status=DeliveryStatus.PENDING,
            next_attempt_at=now + timedelta(seconds=delay),
            last_error=result.detail[:2000],
        )
    else:
        change.update(status=DeliveryStatus.FAILED, last_error=result.detail[:2000])
    return change


def dispatch(
    sessions: sessionmaker[Session],
    *,
    settings: AlertSettings,
    clock: Clock,
    ids: Iterable[int] | None = None,
    limit: int = 200,
    on_failed: Any = None,
) -> DispatchReport:
    """Claim what is due (or just ``ids``), send it in parallel, record every outcome."""
    items = claim(sessions, now=clock.now(), lease_s=settings.claim_lease_s, ids=ids, limit=limit)
    return deliver(sessions, items, settings=settings, clock=clock, on_failed=on_failed)


def deliver(
    sessions: sessionmaker[Session],
    items: Sequence[Claimed],
    *,
    settings: AlertSettings,
    clock: Clock,
    on_failed: Any = None,
) -> DispatchReport:
    """Send claimed deliveries (in parallel) and record the outcomes in one transaction."""
    report = DispatchReport(claimed=len(items))
    if not items:
        return report

    def work(item: Claimed) -> DeliveryResult:
        return send_one(item, settings, clock.now())

    if len(items) == 1:
        results = [work(items[0])]
    else:
        results = list(_pool(settings.send_workers).map(work, items))
    statuses = record(
        sessions,
        list(zip(items, results, strict=True)),
        settings=settings,
        now=clock.now(),
        on_failed=on_failed,
    )
    for status in statuses:
        if status == DeliveryStatus.SENT:
            report.sent += 1
        elif status == DeliveryStatus.PENDING:
            report.retried += 1
        elif status == DeliveryStatus.FAILED:
            report.failed += 1
    return report
