"""What every delivery channel returns: the outcome of one attempt to hand over one message.

The outbox decides what to do next from :class:`Outcome` alone:

* ``SENT`` -- the receiving system accepted the message (SMTP 250 after DATA, HTTP 2xx).
  The outbox marks the delivery done and never sends it again.
* ``TRANSIENT`` -- it may work later (timeouts, refused or reset connections, SMTP 4xx,
  HTTP 408/425/429/5xx). Retry with backoff, honouring ``retry_after_s`` when given.
* ``PERMANENT`` -- the receiver said no for good (SMTP 5xx such as 550 unknown recipient or
  535 bad credentials, HTTP 4xx other than the transient ones). Do not retry.

Misconfiguration is not an outcome but an exception, :class:`ChannelConfigError`: TLS
required but not offered, a certificate that does not verify against the configured trust
anchors, credentials that would travel in clear text. Retrying cannot fix it and a silent
downgrade would be worse; it is for the operator to fix the configuration.
"""

from __future__ import annotations

import enum
import functools
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ChannelConfigError", "DeliveryResult", "Outcome", "is_loopback_host", "tls_context"]


class Outcome(enum.StrEnum):
    SENT = "sent"
    TRANSIENT = "transient"
    PERMANENT = "permanent"


@dataclass(frozen=True)
class DeliveryResult:
    """One attempt's result.

    ``detail`` is a one-line human-readable account for the delivery log (the server's reply
    or the error); it never contains credentials. ``code`` is the SMTP reply code or HTTP
    status when the receiver answered. ``retry_after_s`` is the receiver's own hint (HTTP
    ``Retry-After``), in seconds from the attempt, for transient results only.
    """

    outcome: Outcome
    detail: str
    code: int | None = None
    retry_after_s: float | None = None


class ChannelConfigError(Exception):
    """The channel is misconfigured (e.g. TLS required but not offered); retrying won't help."""


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and loopback IP literals (127.0.0.0/8, ::1)."""
    name = host.strip().strip("[]").rstrip(".").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def tls_context(ca_file: Path | None = None) -> ssl.SSLContext:
    """A verifying client TLS context: certificate chain and hostname are always checked.

    ``ca_file`` (PEM) replaces the system trust store, for a private relay or receiver and for
    tests with a throw-away CA; ``None`` uses the system store. Contexts are cached and
    rebuilt when the file changes. An unreadable or invalid file raises
    :class:`ChannelConfigError`.
    """
    if ca_file is None:
        return _cached_context(None, 0, 0)
    try:
        stat = ca_file.stat()
    except OSError as exc:
        raise ChannelConfigError(f"CA file {ca_file} is not readable: {exc}") from exc
    return _cached_context(str(ca_file), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=16)
def _cached_context(ca_file: str | None, mtime_ns: int, size: int) -> ssl.SSLContext:
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        raise ChannelConfigError(f"cannot load CA file {ca_file}: {exc}") from exc
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    return context
