"""A real SMTP server on loopback for tests: aiosmtpd in a thread, recording what it accepts.

Typical use::

    tls = ThrowawayTls.create(tmp_path)                  # trustme CA + server certificate
    with SmtpTestServer(mode="starttls", tls=tls, auth=("alerts", "s3cret")) as server:
        result = send_email(message, "r@example.org", server.smtp_config())
        [received] = server.wait_for(1)
        assert received.tls and received.rcpt_tos == ("r@example.org",)

Modes: ``"plain"`` (no TLS), ``"starttls"`` (offers STARTTLS; with ``require_starttls``,
the default, MAIL before STARTTLS gets 530), ``"implicit"`` (TLS from the first byte).
``auth=(user, password)`` makes AUTH PLAIN/LOGIN mandatory before MAIL (530 otherwise) and
answers 535 to wrong credentials; AUTH is only offered after TLS unless
``auth_require_tls=False``.

Behaviour that may change while the server runs (plain attributes, read per command):

* ``rcpt_reply`` -- answer every RCPT with this (e.g. ``"451 4.3.0 try later"``);
  ``rcpt_replies[address]`` does it for one address only;
* ``data_reply`` -- answer every DATA with this instead of accepting;
  ``queue_data_replies(*replies)`` answers the next DATA commands with these, in order;
* ``delay_s`` -- wait this long before answering DATA (a slow relay). A client that gives
  up meanwhile does not get its message recorded.

``stop()`` closes the listener and drops open connections (like a crashed relay);
``start()`` listens again on the same port, keeping everything recorded so far.
Arrival times come from ``clock`` (default: the wall clock, UTC), so tests can assert
"recipient R got this between t1 and t2" with an injected clock.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from atm_risk.alerts.channels.email import SmtpConfig

__all__ = ["FileTls", "ReceivedMessage", "Rejection", "SmtpTestServer", "ThrowawayTls", "utc_now"]

SmtpMode = Literal["plain", "starttls", "implicit"]
_STOP_TIMEOUT_S = 5.0


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class ThrowawayTls:
    """A throw-away CA (written to ``ca_file``) and a server certificate it signed.

    The certificate is valid for ``localhost``, ``127.0.0.1`` and ``::1``, so a client that
    verifies hostnames (as ours always do) connects to ``127.0.0.1`` with
    ``ca_file=tls.ca_file``.
    """

    ca: trustme.CA
    cert: trustme.LeafCert
    ca_file: Path

    @classmethod
    def create(cls, directory: Path, *identities: str, name: str = "test-ca.pem") -> ThrowawayTls:
        ca = trustme.CA()
        cert = ca.issue_cert(*(identities or ("localhost", "127.0.0.1", "::1")))
        directory.mkdir(parents=True, exist_ok=True)
        ca_file = directory / name
        ca.cert_pem.write_to_path(str(ca_file))
        return cls(ca=ca, cert=cert, ca_file=ca_file)

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.cert.configure_cert(context)
        return context


@dataclass(frozen=True)
class FileTls:
    """A server certificate and key from PEM files (e.g. made by ``deploy/smtp-certs.sh``)
    and the CA file that signed it; usable wherever a :class:`ThrowawayTls` is."""

    cert_file: Path
    key_file: Path
    ca_file: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


@dataclass(frozen=True)
class ReceivedMessage:
    """One message the server accepted (250 after DATA).

    ``raw`` is the DATA exactly as received (CRLF line ends, dot-unstuffed); ``message`` is
    it parsed with ``email.policy.default`` after CRLF -> LF, as a mailbox would store it.
    """

    mail_from: str
    rcpt_tos: tuple[str, ...]
    raw: bytes
    message: EmailMessage
    received_at: datetime
    tls: bool
    auth_login: str | None
    peer: Any

    @property
    def message_id(self) -> str | None:
        value = self.message["Message-ID"]
        return None if value is None else str(value)

    @property
    def subject(self) -> str | None:
        value = self.message["Subject"]
        return None if value is None else str(value)


@dataclass(frozen=True)
class Rejection:
    """A command the server refused on purpose (configured reply)."""

    stage: Literal["MAIL", "RCPT", "DATA"]
    address: str
    reply: str
    at: datetime


class SmtpTestServer:
    """aiosmtpd on ``host`` (default 127.0.0.1), a free port, recording accepted messages."""

    def __init__(
        self,
        *,
        mode: SmtpMode = "plain",
        tls: ThrowawayTls | FileTls | None = None,
        require_starttls: bool = True,
        auth: tuple[str, str] | None = None,
        auth_require_tls: bool = True,
        clock: Callable[[], datetime] = utc_now,
        host: str = "127.0.0.1",
        port: int = 0,
        hostname: str = "smtp.test",
    ) -> None:
        if mode != "plain" and tls is None:
            raise ValueError(f"mode={mode!r} needs tls=ThrowawayTls.create(...)")
        self.mode: SmtpMode = mode
        self.tls = tls
        self.require_starttls = require_starttls
        self.auth = auth
        self.auth_require_tls = auth_require_tls
        self.clock = clock
        self.host = host
        self.port = port
        self.hostname = hostname
        # Behaviour, changeable at any time.
        self.rcpt_reply: str | None = None
        self.rcpt_replies: dict[str, str] = {}
        self.data_reply: str | None = None
        self.delay_s: float = 0.0
        self._data_queue: list[str] = []
        # Records.
        self._cond = threading.Condition()
        self._messages: list[ReceivedMessage] = []
        self._rejections: list[Rejection] = []
        self._controller: _Controller | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Self:
        """Listen (again). The first start picks a free port; later starts reuse it."""
        if self._controller is not None:
            raise RuntimeError("already running")
        server_context = self.tls.server_context() if self.tls is not None else None
        kwargs: dict[str, Any] = {
            "server_hostname": self.hostname,
            "authenticator": self._authenticate,
            # aiosmtpd only counts STARTTLS as TLS; under implicit TLS everything is encrypted.
            "auth_require_tls": self.auth_require_tls and self.mode != "implicit",
        }
        if self.mode == "starttls":
            kwargs["tls_context"] = server_context
            kwargs["require_starttls"] = self.require_starttls
        controller = _Controller(
            _Handler(self),
            hostname=self.host,
            port=self.port,
            ssl_context=server_context if self.mode == "implicit" else None,
            ready_timeout=5.0,
            **kwargs,
        )
        try:
            controller.start()
        except BaseException:
            controller.abandon()
            raise
        self.port = controller.port
        self._controller = controller
        return self

    def stop(self) -> None:
        """Stop listening and drop open connections; a no-op when already stopped."""
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.shutdown()

    def restart(self) -> Self:
        self.stop()
        return self.start()

    @property
    def running(self) -> bool:
        return self._controller is not None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- configuration helpers -------------------------------------------------------------

    @property
    def ca_file(self) -> Path:
        if self.tls is None:
            raise RuntimeError("this server has no TLS")
        return self.tls.ca_file

    def smtp_config(self, **overrides: Any) -> SmtpConfig:
        """An :class:`SmtpConfig` that reaches this server as configured (2 s timeout)."""
        if self.port == 0:
            raise RuntimeError("start the server first")
        values: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "security": {"plain": "none", "starttls": "starttls", "implicit": "tls"}[self.mode],
            "from_address": "alerts@atm-risk.test",
            "timeout_s": 2.0,
            "local_hostname": "client.test",
        }
        if self.tls is not None and self.mode != "plain":
            values["ca_file"] = self.tls.ca_file
        if self.auth is not None:
            values["username"], values["password"] = self.auth
        values.update(overrides)
        return SmtpConfig(**values)

    def queue_data_replies(self, *replies: str) -> None:
        """Answer the next ``len(replies)`` DATA commands with these replies, in order."""
        with self._cond:
            self._data_queue.extend(replies)

    # -- records ---------------------------------------------------------------------------

    @property
    def messages(self) -> list[ReceivedMessage]:
        with self._cond:
            return list(self._messages)

    @property
    def rejections(self) -> list[Rejection]:
        with self._cond:
            return list(self._rejections)

    def messages_for(self, recipient: str) -> list[ReceivedMessage]:
        return [m for m in self.messages if recipient in m.rcpt_tos]

    def wait_for(self, count: int, timeout: float = 2.0) -> list[ReceivedMessage]:
        """Block until at least ``count`` messages are recorded; then return them all."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._messages) >= count, timeout):
                raise AssertionError(
                    f"expected {count} message(s) within {timeout} s, got {len(self._messages)}"
                )
            return list(self._messages)

    def clear(self) -> None:
        with self._cond:
            self._messages.clear()
            self._rejections.clear()

    # -- called from the server thread -----------------------------------------------------

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if (
            self.auth is not None
            and isinstance(data, LoginPassword)
            and (data.login, data.password) == tuple(v.encode() for v in self.auth)
        ):
            return AuthResult(success=True, auth_data=data)
        return AuthResult(success=False, handled=False)

    def _reject(self, stage: Literal["MAIL", "RCPT", "DATA"], address: str, reply: str) -> str:
        with self._cond:
            self._rejections.append(Rejection(stage, address, reply, self.clock()))
        return reply

    def _next_data_reply(self) -> str | None:
        with self._cond:
            if self._data_queue:
                return self._data_queue.pop(0)
        return self.data_reply

    def _record(self, message: ReceivedMessage) -> int:
        with self._cond:
            self._messages.append(message)
            self._cond.notify_all()
            return len(self._messages)


class _Handler:
    def __init__(self, owner: SmtpTestServer) -> None:
        self.owner = owner

    async def handle_MAIL(  # noqa: N802 (aiosmtpd hook name)
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if self.owner.auth is not None and not session.authenticated:
            return self.owner._reject("MAIL", address, "530 5.7.0 Authentication required")
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(  # noqa: N802
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        reply = self.owner.rcpt_replies.get(address) or self.owner.rcpt_reply
        if reply is not None:
            return self.owner._reject("RCPT", address, reply)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(  # noqa: N802
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        if self.owner.delay_s > 0:
            await asyncio.sleep(self.owner.delay_s)  # cancelled if the client hangs up
        reply = self.owner._next_data_reply()
        if reply is not None:
            return self.owner._reject("DATA", str(envelope.mail_from), reply)
        raw = envelope.original_content or b""
        transport = server.transport
        auth = session.auth_data
        number = self.owner._record(
            ReceivedMessage(
                mail_from=str(envelope.mail_from),
                rcpt_tos=tuple(envelope.rcpt_tos),
                raw=raw,
                message=_parse(raw),
                received_at=self.owner.clock(),
                tls=transport is not None and transport.get_extra_info("ssl_object") is not None,
                auth_login=auth.login.decode() if isinstance(auth, LoginPassword) else None,
                peer=session.peer,
            )
        )
        return f"250 2.0.0 OK queued as test-{number}"


def _parse(raw: bytes) -> EmailMessage:
    # As a mail store would: CRLF on the wire, LF in the parsed text parts.
    parsed = BytesParser(policy=policy.default).parsebytes(raw.replace(b"\r\n", b"\n"))
    assert isinstance(parsed, EmailMessage)
    return parsed


class _Controller(Controller):
    """A Controller that learns its port when bound to 0 and stops without leaking."""

    def __init__(self, handler: _Handler, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._sessions: weakref.WeakSet[SMTP] = weakref.WeakSet()

    def factory(self) -> SMTP:
        smtp: SMTP = super().factory()  # type: ignore[no-untyped-call]
        self._sessions.add(smtp)
        return smtp

    def _trigger_server(self) -> None:
        assert isinstance(self.server, asyncio.Server)
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()  # type: ignore[no-untyped-call]

    def shutdown(self) -> None:
        if self._thread is not None and self.loop.is_running():
            asyncio.run_coroutine_threadsafe(self._drain(), self.loop).result(_STOP_TIMEOUT_S)
        self.stop(no_assert=True)

    def abandon(self) -> None:
        """After a failed start: make sure the thread ended and the loop is closed."""
        thread = self._thread
        if thread is not None and self.loop.is_running():
            self.shutdown()
        elif thread is not None:
            thread.join(_STOP_TIMEOUT_S)
        if not self.loop.is_running() and not self.loop.is_closed():
            self.loop.close()

    async def _drain(self) -> None:
        """Close the listener, abort every connection, finish every task, on the loop."""
        assert self.server is not None
        self.server.close()
        for smtp in list(self._sessions):
            for transport in (smtp._original_transport, smtp.transport):
                if isinstance(transport, asyncio.Transport) and not transport.is_closing():
                    transport.abort()
        await asyncio.sleep(0)  # let connection_lost() run
        current = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
