"""Webhook delivery: a versioned JSON envelope, POSTed with an HMAC signature.

Payload, version 1
==================

The body is one JSON object (UTF-8, ``Content-Type: application/json``)::

    {
      "version": "1",                       # this format; a breaking change bumps it
      "id": "gang_active:NL-WEST:2026-11-28T03:10:00Z:police-nl-west",
                                            # the idempotency key, equal to the
                                            # Idempotency-Key header; the same on every retry
      "kind": "gang_active",                # gang_active | risk_change | digest |
                                            # pipeline_health
      "created_at": "2026-11-28T03:10:04.120Z",  # when the alert was created, ISO-8601 UTC
      "data": { ... }                       # kind-specific content
    }

Receivers must ignore fields they do not know (new optional fields do not change the
version) and should treat a repeated ``id`` as the same delivery: a retry after a timeout
may deliver an alert they already processed.

Headers
=======

* ``X-ATM-Risk-Signature: t=<unix seconds>,v1=<hex>`` where ``<hex>`` is
  HMAC-SHA256(secret, ``"<t>." + body``) over the body bytes *exactly as received* (as
  Stripe does). Receivers check it with :func:`verify` (or its equivalent: recompute, compare
  in constant time, reject when ``t`` is more than 5 minutes from their clock, which bounds
  replays). More than one ``v1=`` may appear during a secret rotation; any match is valid.
* ``Idempotency-Key``: the envelope's ``id``.
* ``Content-Type: application/json``, ``User-Agent: atm-risk/<version>``.

HTTP semantics of one attempt
=============================

* 2xx -> ``SENT``.
* 408 Request Timeout, 425 Too Early, 429 Too Many Requests, any 5xx, timeouts, refused or
  reset connections -> ``TRANSIENT``; a ``Retry-After`` header (seconds or HTTP date) is
  passed on as ``retry_after_s``.
* 3xx -> ``PERMANENT``: redirects are never followed (the signature and the alert would go to
  a host nobody configured); the URL in the routing file needs fixing.
* any other 4xx (400, 401, 403, 404, 410, 413, 422, ...) -> ``PERMANENT``.
* A URL that is not http(s), ``http://`` to a non-loopback host without
  ``allow_plaintext=True``, and a TLS certificate that does not verify raise
  :class:`ChannelConfigError`. https always verifies (system store, or ``ca_file``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import ssl
import uuid
from collections.abc import Mapping
from datetime import UTC, date, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx

from atm_risk import __version__
from atm_risk.alerts.channels.base import (
    ChannelConfigError,
    DeliveryResult,
    Outcome,
    is_loopback_host,
    tls_context,
)

__all__ = [
    "PAYLOAD_VERSION",
    "SIGNATURE_HEADER",
    "USER_AGENT",
    "encode",
    "envelope",
    "post_webhook",
    "sign",
    "verify",
]

PAYLOAD_VERSION = "1"
SIGNATURE_HEADER = "X-ATM-Risk-Signature"
USER_AGENT = f"atm-risk/{__version__}"
DEFAULT_TOLERANCE_S = 300
_TRANSIENT_STATUS = frozenset({408, 425, 429})
_MAX_ERROR_BODY = 1024


def envelope(
    *, kind: str, idempotency_key: str, created_at: datetime, data: Mapping[str, Any]
) -> dict[str, Any]:
    """The version-1 payload for one alert (see the module docstring)."""
    if not kind:
        raise ValueError("kind must not be empty")
    _check_key(idempotency_key)
    if created_at.tzinfo is None:
        raise ValueError("created_at must be timezone-aware")
    return {
        "version": PAYLOAD_VERSION,
        "id": idempotency_key,
        "kind": kind,
        "created_at": _iso_utc(created_at),
        "data": dict(data),
    }


def encode(payload: Mapping[str, Any]) -> bytes:
    """The body bytes: compact, key-sorted JSON, so a retry sends identical bytes.

    Datetimes become ISO-8601 UTC, dates ISO dates, UUIDs strings; NaN and other
    non-JSON values raise ``ValueError``/``TypeError``.
    """
    text = json.dumps(
        payload,
        ensure_ascii=False,
        allow_nan=False,
        sort_keys=True,
        separators=(",", ":"),
        default=_json_default,
    )
    return text.encode("utf-8")


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The ``X-ATM-Risk-Signature`` value: ``t=<timestamp>,v1=<hex HMAC-SHA256>``."""
    if not secret:
        raise ValueError("the signing secret must not be empty")
    if timestamp < 0:
        raise ValueError("timestamp must be Unix seconds")
    return f"t={timestamp},v1={_mac(secret, timestamp, body)}"


def verify(
    secret: bytes,
    header: str,
    body: bytes,
    now: int,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
) -> bool:
    """True when ``header`` signs ``body`` with ``secret`` and its time is within tolerance.

    For receivers (and tests): pass the raw body bytes as received, before any JSON parsing.
    Malformed headers give ``False``, never an exception.
    """
    if not secret:
        return False
    timestamp: int | None = None
    candidates: list[bytes] = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            return False
        if key == "t":
            if timestamp is not None or not value.isascii() or not value.isdigit():
                return False
            timestamp = int(value)
        elif key == "v1":
            candidates.append(value.encode("utf-8", "replace"))
    if timestamp is None or not candidates or abs(now - timestamp) > tolerance_s:
        return False
    expected = _mac(secret, timestamp, body).encode("ascii")
    matched = False
    for candidate in candidates:  # compare every one: no early exit
        matched |= hmac.compare_digest(expected, candidate)
    return matched


def post_webhook(
    url: str,
    payload: Mapping[str, Any],
    *,
    secret: bytes,
    idempotency_key: str,
    timeout_s: float = 5.0,
    now: int,
    ca_file: Path | None = None,
    allow_plaintext: bool = False,
) -> DeliveryResult:
    """POST ``payload`` (normally an :func:`envelope`) to ``url``; classify the outcome.

    ``now`` (Unix seconds, from the injected clock) stamps the signature and dates an HTTP
    ``Retry-After``. ``timeout_s`` bounds connecting, each read and each write. ``ca_file``
    trusts a private CA for https. Plain ``http://`` is accepted for loopback receivers, and
    for others only with ``allow_plaintext=True``. Redirects are not followed. Proxy
    variables and ``.netrc`` from the environment are ignored (``trust_env=False``): nothing
    from the host environment is added to a request to a third party.
    """
    target = _check_url(url, allow_plaintext=allow_plaintext)
    _check_key(idempotency_key)
    if "id" in payload and payload["id"] != idempotency_key:
        raise ValueError("payload['id'] and idempotency_key differ")
    body = encode(payload)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "Idempotency-Key": idempotency_key,
        SIGNATURE_HEADER: sign(secret, now, body),
    }
    verify_with: ssl.SSLContext | bool = tls_context(ca_file) if target.scheme == "https" else False
    where = f"{target.scheme}://{target.host}:{target.port or _default_port(target.scheme)}"
    try:
        with (
            httpx.Client(
                timeout=timeout_s, follow_redirects=False, verify=verify_with, trust_env=False
            ) as client,
            client.stream("POST", target, content=body, headers=headers) as response,
        ):
            return _classify(response, where, now)
    except httpx.TimeoutException as exc:
        return DeliveryResult(Outcome.TRANSIENT, f"{where} timed out ({type(exc).__name__})")
    except httpx.TransportError as exc:
        tls_error = _ssl_error(exc)
        if isinstance(tls_error, ssl.SSLCertVerificationError):
            raise ChannelConfigError(
                f"TLS certificate of {where} does not verify: "
                f"{tls_error.verify_message or tls_error}"
            ) from exc
        if tls_error is not None and not isinstance(
            tls_error, ssl.SSLEOFError | ssl.SSLZeroReturnError | ssl.SSLSyscallError
        ):
            raise ChannelConfigError(f"TLS with {where} failed: {tls_error}") from exc
        return DeliveryResult(
            Outcome.TRANSIENT, f"cannot reach {where}: {type(exc).__name__}: {exc}"
        )


def _classify(response: httpx.Response, where: str, now: int) -> DeliveryResult:
    status = response.status_code
    line = f"HTTP {status} {response.reason_phrase}".rstrip()
    if 200 <= status <= 299:
        return DeliveryResult(Outcome.SENT, f"{where} answered {line}", status)
    if 300 <= status <= 399:
        location = response.headers.get("Location", "?")
        return DeliveryResult(
            Outcome.PERMANENT,
            f"{where} answered {line}, redirect to {location} not followed; fix the URL",
            status,
        )
    detail = f"{where} answered {line}{_body_excerpt(response)}"
    if status in _TRANSIENT_STATUS or 500 <= status <= 599:
        retry_after = _retry_after(response.headers.get("Retry-After"), now)
        return DeliveryResult(Outcome.TRANSIENT, detail, status, retry_after)
    return DeliveryResult(Outcome.PERMANENT, detail, status)


def _body_excerpt(response: httpx.Response) -> str:
    data = b""
    try:
        for chunk in response.iter_bytes():
            data += chunk
            if len(data) >= _MAX_ERROR_BODY:
                break
    except httpx.HTTPError:
        pass
    text = " ".join(data[:_MAX_ERROR_BODY].decode("utf-8", "replace").split())[:200]
    return f": {text}" if text else ""


def _retry_after(value: str | None, now: int) -> float | None:
    """Seconds from ``now`` per RFC 9110 ``Retry-After`` (delay-seconds or HTTP-date)."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000" means UTC for HTTP dates
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


def _check_url(url: str, *, allow_plaintext: bool) -> httpx.URL:
    try:
        target = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise ChannelConfigError(f"invalid webhook URL: {exc}") from exc
    if target.scheme not in ("http", "https") or not target.host:
        raise ChannelConfigError(
            f"webhook URL must be http(s)://host/..., got scheme {target.scheme!r}"
        )
    if target.scheme == "http" and not allow_plaintext and not is_loopback_host(target.host):
        raise ChannelConfigError(
            f"http:// to {target.host} sends alerts unencrypted; use https "
            "(or allow_plaintext=True deliberately)"
        )
    return target


def _check_key(idempotency_key: str) -> None:
    if not idempotency_key or not idempotency_key.isprintable() or not idempotency_key.isascii():
        raise ValueError("idempotency_key must be non-empty printable ASCII")


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


def _mac(secret: bytes, timestamp: int, body: bytes) -> str:
    return hmac.new(secret, f"{timestamp}.".encode("ascii") + body, hashlib.sha256).hexdigest()


def _ssl_error(exc: BaseException) -> ssl.SSLError | None:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _iso_utc(moment: datetime) -> str:
    text = moment.astimezone(UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def _json_default(value: object) -> object:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise TypeError("naive datetime in webhook payload; use timezone-aware UTC")
        return _iso_utc(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
