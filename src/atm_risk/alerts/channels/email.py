"""E-mail delivery over SMTP: one message to one recipient per call, classified for the outbox.

Transport security (``SmtpConfig.security``):

* ``"starttls"`` (default, port 587): plain connect, then STARTTLS **required**. A server that
  does not advertise STARTTLS raises :class:`ChannelConfigError`; we never fall back to
  plain text, because a man in the middle can strip the advertisement.
* ``"tls"`` (port 465): implicit TLS from the first byte (``smtplib.SMTP_SSL``).
* ``"none"``: no encryption. Only for a relay on the loopback interface (a local MTA or a
  test server), where nothing crosses a network. Any other host needs the explicit
  ``allow_plaintext=True``, for the rare internal relay that cannot speak TLS: alerts name
  machines at risk and police regions, so sending them in clear text must be a deliberate,
  visible decision in the configuration. Even then credentials are refused: AUTH happens
  only over TLS, or on loopback.

The TLS context always verifies: ``ssl.create_default_context(cafile=ca_file)`` with
hostname checking on. ``ca_file`` names the CA bundle of a private relay (or a test CA); when
set, it is the trust anchor *instead of* the system store. A certificate that fails
verification raises :class:`ChannelConfigError`.

Classification of one attempt (see :mod:`atm_risk.alerts.channels.base`):

* accepted after DATA -> ``SENT``, ``detail`` is the server's final reply;
* any 4xx reply (greeting, EHLO, STARTTLS, AUTH, MAIL, RCPT, DATA), timeouts, refused or
  reset connections, a server that hangs up -> ``TRANSIENT``;
* any 5xx reply (550 unknown recipient, 554 rejected, 535 bad credentials, ...) ->
  ``PERMANENT``;
* TLS required but not offered, certificate verification failure, a TLS protocol mismatch,
  AUTH configured but not offered -> :class:`ChannelConfigError`.

Sessions are reused: after an accepted message the connection waits (at most
``keepalive_s``, one idle session per sender thread at most) for the next message to the same
relay, as an MTA's connection cache does; every other outcome closes it. A reused session that
the relay has dropped meanwhile is detected before anything is sent, and the message goes over
a new connection in the same call.
"""

from __future__ import annotations

import atexit
import binascii
import copy
import functools
import hashlib
import io
import re
import secrets
import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from email import policy as email_policy
from email.generator import BytesGenerator
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from atm_risk.alerts.channels.base import (
    ChannelConfigError,
    DeliveryResult,
    Outcome,
    is_loopback_host,
    tls_context,
)
from atm_risk.secret_values import check_secret

__all__ = [
    "Attachment",
    "SmtpConfig",
    "build_message",
    "close_idle_sessions",
    "compose",
    "message_id_for",
    "send_email",
]

Attachment = tuple[str, bytes, str]
"""``(filename, content, mime type)``, e.g. ``("ranking.csv", b"...", "text/csv")``."""

_MESSAGE_ID = re.compile(r"<[^<>@\s]+@[^<>@\s]+>")
_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_ADDRESS = re.compile(r"[^@\s<>]+@[^@\s<>]+")
_MIME_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*")
_RESERVED_HEADERS = frozenset(
    {
        "from",
        "to",
        "cc",
        "bcc",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
    }
)


class SmtpConfig(BaseModel):
    """How to reach the SMTP relay. The password never appears in ``repr``/``str``/errors."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    host: str = Field(min_length=1, description="The relay's host name.")
    port: int = Field(ge=1, le=65535, description="587 for STARTTLS, 465 for implicit TLS.")
    security: Literal["starttls", "tls", "none"] = Field(
        "starttls",
        description="starttls (required: a relay without it is a configuration error), tls "
        "(implicit), or none (loopback only unless allow_plaintext).",
    )
    username: str | None = Field(None, description="AUTH user (only over TLS).")
    password: SecretStr | None = Field(
        None,
        description="AUTH password; never logged or shown. No default; empty values and "
        "placeholders are refused.",
    )
    timeout_s: float = Field(default=10.0, gt=0, description="Seconds per SMTP operation.")
    keepalive_s: float = Field(
        default=30.0,
        ge=0,
        description="Keep an SMTP session open this long for the next message (saves the "
        "connect, EHLO, STARTTLS and AUTH of every alert in a burst); 0: one per message.",
    )
    from_address: str = Field(description="Envelope sender (MAIL FROM), where bounces go")
    ca_file: Path | None = Field(
        default=None,
        description="PEM CA bundle trusted instead of the system store (private relay, tests)",
    )
    local_hostname: str | None = Field(default=None, description="Name sent in EHLO")
    allow_plaintext: bool = Field(
        default=False,
        description=(
            "Permit security='none' to a non-loopback host. Off by default: alert content "
            "would cross the network unencrypted. Credentials are never sent that way."
        ),
    )

    @model_validator(mode="after")
    def _check_security(self) -> Self:
        loopback = is_loopback_host(self.host)
        if self.security == "none" and not loopback and not self.allow_plaintext:
            raise ValueError(
                f"security='none' to non-loopback host {self.host!r} sends alerts in clear "
                "text; use 'starttls' or 'tls', or set allow_plaintext=True deliberately"
            )
        if self.password is not None:
            check_secret(self.password.get_secret_value(), "alerts.smtp.password")
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together")
        if self.username is not None and self.security == "none" and not loopback:
            raise ValueError("credentials are only sent over TLS (or to a loopback relay)")
        if self.ca_file is not None and self.security == "none":
            raise ValueError("ca_file has no effect with security='none'")
        if not _ADDRESS.fullmatch(self.from_address):
            raise ValueError("from_address must be a bare address like alerts@example.org")
        return self


def message_id_for(key: str, domain: str) -> str:
    """A deterministic Message-ID for an outbox idempotency key: the same key, the same id.

    A key that is already a valid dot-atom is used as is (``<key@domain>``). Otherwise the
    characters a Message-ID may not contain become ``.`` and a short hash of the original
    key is appended, so two different keys never share an id.
    """
    if not key:
        raise ValueError("key must not be empty")
    right = ".".join(part for part in re.split(r"[^A-Za-z0-9-]+", domain) if part)
    if not right:
        raise ValueError("domain must not be empty")
    if _DOT_ATOM.fullmatch(key):
        return f"<{key}@{right}>"
    readable = ".".join(part for part in re.split(r"[^A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+", key) if part)
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]
    return f"<{readable}.{digest}@{right}>" if readable else f"<{digest}@{right}>"


def build_message(
    *,
    subject: str,
    sender: str,
    to: str | Sequence[str],
    message_id: str,
    text: str,
    html: str | None = None,
    attachments: Sequence[Attachment] = (),
    headers: Mapping[str, str] | None = None,
    date: datetime | None = None,
) -> EmailMessage:
    """Compose a message: text (plus HTML as ``multipart/alternative``), then attachments.

    ``message_id`` is set verbatim (``<left@right>``); the caller keeps it across retries so a
    duplicate is recognisable. ``date`` is the Date header (default: now, UTC); pass the
    injected clock's time. Non-ASCII bodies are quoted-printable so any relay can carry them
    (no 8BITMIME needed). The message is marked ``Auto-Submitted: auto-generated`` (RFC 3834)
    so that vacation responders stay quiet. ``headers`` may add headers but not replace the
    ones built here.
    """
    recipients = [to] if isinstance(to, str) else list(to)
    if not recipients:
        raise ValueError("at least one 'to' address is needed")
    date = _checked(message_id, datetime.now(UTC) if date is None else date)

    message = EmailMessage(policy=email_policy.default)
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Subject"] = subject
    message["Date"] = format_datetime(date.astimezone(UTC))
    message["Message-ID"] = message_id
    message["Auto-Submitted"] = "auto-generated"
    for name, value in (headers or {}).items():
        if name.lower() in _RESERVED_HEADERS or name.lower() == "auto-submitted":
            raise ValueError(f"header {name!r} is set by build_message")
        message[name] = value

    message.set_content(text, subtype="plain", cte=_text_cte(text))
    if html is not None:
        message.add_alternative(html, subtype="html", cte=_text_cte(html))
    for filename, content, mime_type in attachments:
        if not filename:
            raise ValueError("attachment needs a filename")
        if not _MIME_TYPE.fullmatch(mime_type):
            raise ValueError(f"bad MIME type {mime_type!r} for {filename!r}")
        maintype, subtype = mime_type.lower().split("/", 1)
        message.add_attachment(
            bytes(content), maintype=maintype, subtype=subtype, filename=filename
        )
    return message


def compose(
    *,
    subject: str,
    sender: str,
    to: str,
    message_id: str,
    text: str,
    html: str | None = None,
    date: datetime,
) -> bytes | None:
    """The wire form (CRLF line ends) of the message :func:`build_message` makes for the
    same text and HTML without attachments, written directly instead of through the
    ``email`` package's object model, which costs about 2 ms a message (the immediate path
    sends several per reported attack). A receiver's parser reads the same headers and
    the same text and HTML (a test holds both forms to that). None when this case is not
    covered (an address that is not plain ASCII): use :func:`build_message` then."""
    _checked(message_id, date)
    if not (sender.isascii() and to.isascii() and message_id.isascii()):
        return None
    if not (_ADDRESS.fullmatch(sender) and _ADDRESS.fullmatch(to)):
        return None
    head = [
        f"From: {sender}",
        f"To: {to}",
        _subject_header(subject),
        f"Date: {format_datetime(date.astimezone(UTC))}",
        f"Message-ID: {message_id}",
        "Auto-Submitted: auto-generated",
        "MIME-Version: 1.0",
    ]
    if html is None:
        return _crlf("\n".join([*head, *_part("plain", text)]))
    plain, rich = _part("plain", text), _part("html", html)
    boundary = f"===============atm-risk-{secrets.token_hex(12)}=="
    while any(boundary in "\n".join(p) for p in (plain, rich)):
        boundary = f"===============atm-risk-{secrets.token_hex(12)}=="
    return _crlf(
        "\n".join(
            [
                *head,
                f'Content-Type: multipart/alternative; boundary="{boundary}"',
                "",
                f"--{boundary}",
                *plain,
                f"--{boundary}",
                *rich,
                f"--{boundary}--",
                "",
            ]
        )
    )


def _checked(message_id: str, date: datetime) -> datetime:
    """What both ways of writing a message require: a ``<left@right>`` Message-ID and an
    aware Date."""
    if not _MESSAGE_ID.fullmatch(message_id):
        raise ValueError(f"message_id must look like <unique@domain>, got {message_id!r}")
    if date.tzinfo is None:
        raise ValueError("date must be timezone-aware")
    return date


def _subject_header(subject: str) -> str:
    """``Subject:`` folded at 78 characters: ASCII as it is (broken at spaces), anything
    else as RFC 2047 encoded words (UTF-8, base64) of at most 42 bytes each."""
    # a line break in a subject (a reported place name, say) must not start a new header
    words = subject.split()
    if subject.isascii() and "=?" not in subject and all(len(w) <= 60 for w in words):
        lines = ["Subject:"]
        for word in words:
            if len(lines[-1]) + 1 + len(word) > 78:
                lines.append("")
            lines[-1] += f" {word}"
        return "\n".join(lines)
    chunks = [b""]
    for char in " ".join(words):  # whole characters, at most 42 bytes a word
        data = char.encode("utf-8")
        if len(chunks[-1]) + len(data) > 42:
            chunks.append(b"")
        chunks[-1] += data
    encoded = [f"=?utf-8?b?{binascii.b2a_base64(c, newline=False).decode()}?=" for c in chunks]
    return "Subject: " + "\n ".join(encoded)


def _part(subtype: str, body: str) -> list[str]:
    """Headers and body of one text part: 7bit when it is ASCII with short lines (as
    ``set_content`` chooses), quoted-printable otherwise."""
    body = body.replace("\r\n", "\n").replace("\r", "\n")
    if not body.endswith("\n"):
        body += "\n"
    if body.isascii() and max(map(len, body.split("\n"))) <= 78:
        cte, encoded = "7bit", body
    else:
        encoded = binascii.b2a_qp(body.encode("utf-8"), istext=True).decode("ascii")
        cte = "quoted-printable"
    return [
        f'Content-Type: text/{subtype}; charset="utf-8"',
        f"Content-Transfer-Encoding: {cte}",
        "",
        encoded,  # ends with its line break; the one before a boundary belongs to it
    ]


def _crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode("ascii")


def _text_cte(body: str) -> str | None:
    # policy.default would pick 8bit for non-ASCII text, which needs 8BITMIME on every hop.
    return None if body.isascii() else "quoted-printable"


def send_email(message: EmailMessage | bytes, recipient: str, config: SmtpConfig) -> DeliveryResult:
    """Hand ``message`` (or its wire form from :func:`compose`) to the relay for one
    envelope ``recipient``; classify the outcome.

    Raises :class:`ChannelConfigError` for misconfiguration (see the module docstring);
    every other failure is a :class:`DeliveryResult`.
    """
    if not _ADDRESS.fullmatch(recipient):
        return DeliveryResult(Outcome.PERMANENT, f"invalid recipient address {recipient!r}")
    reused = _SESSIONS.take(config)
    if reused is not None:
        outcome = _send(reused, message, recipient, config)
        if outcome is not None:
            return outcome
        # the relay dropped the idle session before taking anything: a new connection
    outcome = _send(None, message, recipient, config)
    assert outcome is not None  # only a reused session can come back empty-handed
    return outcome


def _send(
    reused: smtplib.SMTP | None,
    message: EmailMessage | bytes,
    recipient: str,
    config: SmtpConfig,
) -> DeliveryResult | None:
    """One attempt over ``reused`` (an idle session) or a new connection. None: the reused
    session was found dead before the relay accepted anything (the caller tries anew)."""
    context = tls_context(config.ca_file) if config.security != "none" else None
    international = not (recipient.isascii() and config.from_address.isascii())
    where = f"{config.host}:{config.port}"
    smtp: smtplib.SMTP | None = reused
    polite = reused is not None  # send QUIT on the way out (only in a sane session state)
    keep = False  # hand the session back for the next message
    try:
        if smtp is None:
            smtp = _connect(config, context, where)
            polite = True
        tls_active = isinstance(smtp.sock, ssl.SSLSocket)
        mail_options: list[str] = []
        if international:
            if not smtp.has_extn("smtputf8"):
                return DeliveryResult(
                    Outcome.PERMANENT, f"{where} cannot take non-ASCII addresses (no SMTPUTF8)"
                )
            mail_options = ["SMTPUTF8", "BODY=8BITMIME"]
        try:
            code, reply = smtp.mail(config.from_address, mail_options)
        except (smtplib.SMTPServerDisconnected, OSError):
            if reused is None:
                raise
            polite = False
            return None
        if code == 421 and reused is not None:
            return None  # the relay closes idle sessions this way
        if code != 250:
            return _by_code(code, reply, "sender refused")
        code, reply = smtp.rcpt(recipient)
        if code not in (250, 251):
            return _by_code(code, reply, f"recipient {recipient} refused")
        wire = message if isinstance(message, bytes) else _flatten(message, utf8=international)
        code, reply = smtp.data(wire)
        if code != 250:
            return _by_code(code, reply, "message refused")
        keep = config.keepalive_s > 0
        tls_note = "TLS" if tls_active else "plain"
        return DeliveryResult(
            Outcome.SENT, f"accepted by {where} ({tls_note}): {code} {_text(reply)}", code
        )
    except ChannelConfigError:
        polite = False
        raise
    except ssl.SSLCertVerificationError as exc:
        polite = False
        raise ChannelConfigError(
            f"TLS certificate of {where} does not verify: {exc.verify_message or exc}"
        ) from exc
    except (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError) as exc:
        polite = False
        return DeliveryResult(Outcome.TRANSIENT, f"TLS connection to {where} dropped: {exc}")
    except ssl.SSLError as exc:
        polite = False
        raise ChannelConfigError(
            f"TLS with {where} failed ({exc.reason or exc}); is security={config.security!r} "
            "right for this port?"
        ) from exc
    except smtplib.SMTPServerDisconnected as exc:
        polite = False
        return DeliveryResult(Outcome.TRANSIENT, f"{where} disconnected: {exc}")
    except smtplib.SMTPResponseException as exc:
        # Covers greeting (SMTPConnectError), HELO, STARTTLS, AUTH (535 -> permanent) and
        # DATA (354 expected) replies.
        return _by_code(exc.smtp_code, exc.smtp_error, type(exc).__name__)
    except smtplib.SMTPNotSupportedError as exc:
        raise ChannelConfigError(f"{where}: {exc}") from exc
    except smtplib.SMTPException as exc:  # e.g. "No suitable authentication method found."
        raise ChannelConfigError(f"{where}: {exc}") from exc
    except TimeoutError as exc:
        polite = False
        return DeliveryResult(Outcome.TRANSIENT, f"{where} timed out: {exc or 'timeout'}")
    except OSError as exc:  # refused, reset, unreachable, DNS
        polite = False
        return DeliveryResult(
            Outcome.TRANSIENT, f"cannot talk to {where}: {type(exc).__name__}: {exc}"
        )
    finally:
        if smtp is not None:
            if keep:
                _SESSIONS.give(config, smtp)
            else:
                _close(smtp, polite=polite)


def _connect(config: SmtpConfig, context: ssl.SSLContext | None, where: str) -> smtplib.SMTP:
    """A new session: connect, EHLO, STARTTLS (required when configured), AUTH."""
    local_hostname = config.local_hostname or _default_local_hostname()
    if config.security == "tls":
        assert context is not None
        smtp: smtplib.SMTP = smtplib.SMTP_SSL(
            config.host,
            config.port,
            local_hostname=local_hostname,
            timeout=config.timeout_s,
            context=context,
        )
    else:
        smtp = smtplib.SMTP(
            config.host, config.port, local_hostname=local_hostname, timeout=config.timeout_s
        )
    try:
        smtp.ehlo_or_helo_if_needed()
        if config.security == "starttls":
            assert context is not None
            if not smtp.has_extn("starttls"):
                raise ChannelConfigError(
                    f"{where} does not offer STARTTLS but security='starttls' requires it; "
                    "refusing to send in clear text"
                )
            try:
                smtp.starttls(context=context)
            except BaseException:
                smtp.close()  # a failed handshake leaves no usable session
                raise
            smtp.ehlo_or_helo_if_needed()
        tls_active = isinstance(smtp.sock, ssl.SSLSocket)
        if config.username is not None and config.password is not None:
            if not tls_active and not (config.security == "none" and is_loopback_host(config.host)):
                raise ChannelConfigError("refusing to send credentials without TLS")
            smtp.login(config.username, config.password.get_secret_value())
    except ChannelConfigError:
        smtp.close()
        raise
    except BaseException:
        _close(smtp, polite=smtp.sock is not None)
        raise
    return smtp


class _IdleSessions:
    """Open SMTP sessions waiting for the next message, per relay configuration."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: dict[SmtpConfig, list[tuple[smtplib.SMTP, float]]] = {}

    def take(self, config: SmtpConfig) -> smtplib.SMTP | None:
        if config.keepalive_s <= 0:
            return None
        stale: list[smtplib.SMTP] = []
        found = None
        now = time.monotonic()
        with self._lock:
            for key, sessions in list(self._idle.items()):
                fresh = [(s, t) for s, t in sessions if now - t < key.keepalive_s]
                stale.extend(s for s, t in sessions if now - t >= key.keepalive_s)
                if fresh:
                    self._idle[key] = fresh
                else:
                    del self._idle[key]
            waiting = self._idle.get(config)
            if waiting:
                found = waiting.pop()[0]
        for smtp in stale:
            _close(smtp, polite=True)
        return found

    def give(self, config: SmtpConfig, smtp: smtplib.SMTP) -> None:
        with self._lock:
            sessions = self._idle.setdefault(config, [])
            if len(sessions) < _MAX_IDLE:
                sessions.append((smtp, time.monotonic()))
                return
        _close(smtp, polite=True)

    def close_all(self, *, polite: bool = True) -> None:
        with self._lock:
            sessions = [s for group in self._idle.values() for s, _ in group]
            self._idle.clear()
        for smtp in sessions:
            _close(smtp, polite=polite)


_MAX_IDLE = 16
_SESSIONS = _IdleSessions()
close_idle_sessions = _SESSIONS.close_all
# at exit, just close the sockets: a QUIT to a relay that went away could wait the timeout
atexit.register(_SESSIONS.close_all, polite=False)


def _by_code(code: int, reply: bytes | str, what: str) -> DeliveryResult:
    detail = f"{what}: {code} {_text(reply)}"
    if 500 <= code <= 599:
        return DeliveryResult(Outcome.PERMANENT, detail, code)
    # 4xx, and anything unexpected (smtplib reports an unparseable reply as -1).
    return DeliveryResult(Outcome.TRANSIENT, detail, code if code > 0 else None)


def _text(reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
    return " ".join(text.split())[:500]


def _flatten(message: EmailMessage, *, utf8: bool) -> bytes:
    """The wire form, CRLF line ends, without Bcc (as ``smtplib.send_message`` does)."""
    if "Bcc" in message or "Resent-Bcc" in message:
        message = copy.copy(message)
        del message["Bcc"]
        del message["Resent-Bcc"]
    buffer = io.BytesIO()
    policy = email_policy.SMTPUTF8 if utf8 else email_policy.SMTP
    BytesGenerator(buffer, policy=policy).flatten(message)
    return buffer.getvalue()


def _close(smtp: smtplib.SMTP, *, polite: bool) -> None:
    try:
        if polite and smtp.sock is not None:
            smtp.quit()  # closes too; a failure here does not change the outcome
    except (smtplib.SMTPException, OSError):
        pass
    finally:
        smtp.close()


@functools.cache
def _default_local_hostname() -> str:
    # smtplib would call socket.getfqdn() (a DNS round trip) on every connection.
    return socket.getfqdn() or "localhost"
