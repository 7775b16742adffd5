"""Signed acknowledgement links and acknowledging an alert (who and when; stops repeats)."""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timedelta
from urllib.parse import urlencode

from pydantic import SecretStr
from sqlalchemy.orm import Session

from atm_risk.alerts.models import Alert

LINK_VALID = timedelta(days=7)


class AckError(ValueError):
    """The link is forged, expired or for another alert."""


def _mac(secret: SecretStr, alert_id: int, who: str, expires: int) -> str:
    msg = f"ack:{alert_id}:{who}:{expires}".encode()
    return hmac.new(secret.get_secret_value().encode(), msg, hashlib.sha256).hexdigest()


def ack_link(base_url: str, secret: SecretStr, alert_id: int, who: str, now: datetime) -> str:
    expires = int((now + LINK_VALID).timestamp())
    query = urlencode({"by": who, "exp": expires, "sig": _mac(secret, alert_id, who, expires)})
    return f"{base_url.rstrip('/')}/api/v1/alerts/{alert_id}/ack?{query}"


def verify_link(
    secret: SecretStr, alert_id: int, who: str, expires: int, sig: str, now: datetime
) -> None:
    # as bytes: compare_digest refuses str with non-ASCII characters (a forged link)
    given = sig.encode("utf-8", "replace")
    if not hmac.compare_digest(_mac(secret, alert_id, who, expires).encode(), given):
        raise AckError("the acknowledgement link is not valid")
    if now.timestamp() > expires:
        raise AckError("the acknowledgement link has expired")


def acknowledge(session: Session, alert_id: int, who: str, now: datetime) -> Alert:
    """Record who acknowledged and when (the first acknowledgement stands)."""
    alert = session.get(Alert, alert_id)
    if alert is None:
        raise LookupError(f"no alert {alert_id}")
    if not who.strip():
        raise ValueError("who acknowledges must be named")
    if alert.acknowledged_at is None:
        alert.acknowledged_at, alert.acknowledged_by = now, who.strip()[:200]
    return alert
