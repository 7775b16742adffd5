"""Delivery channels: hand one alert message to one receiver and say how it went.

* :mod:`.email` -- SMTP (STARTTLS, implicit TLS, AUTH) via ``send_email``.
* :mod:`.webhook` -- signed JSON POSTs via ``post_webhook``.

Both return a :class:`DeliveryResult` whose :class:`Outcome` tells the outbox whether the
message is delivered, worth retrying, or refused for good, and raise
:class:`ChannelConfigError` for misconfiguration (see :mod:`.base`).
"""

from atm_risk.alerts.channels.base import (
    ChannelConfigError,
    DeliveryResult,
    Outcome,
    is_loopback_host,
    tls_context,
)
from atm_risk.alerts.channels.email import (
    Attachment,
    SmtpConfig,
    build_message,
    compose,
    message_id_for,
    send_email,
)
from atm_risk.alerts.channels.webhook import envelope, post_webhook, sign, verify

__all__ = [
    "Attachment",
    "ChannelConfigError",
    "DeliveryResult",
    "Outcome",
    "SmtpConfig",
    "build_message",
    "compose",
    "envelope",
    "is_loopback_host",
    "message_id_for",
    "post_webhook",
    "send_email",
    "sign",
    "tls_context",
    "verify",
]
