"""A real HTTP(S) receiver on loopback for webhook tests: records requests, answers as told.

Typical use::

    with HttpReceiver(replies=[503, Reply(200)]) as receiver:
        post_webhook(receiver.url("/hook"), ...)     # gets 503
        post_webhook(receiver.url("/hook"), ...)     # gets 200
        [first, second] = receiver.wait_for(2)
        assert verify(secret, first.header("X-ATM-Risk-Signature"), first.body, now)

Replies are consumed in order (``replies=`` at construction, ``respond(...)`` later); when
none is queued the ``default`` answers (200). A :class:`Reply` can delay the answer
(``delay_s``) and carry headers such as ``Retry-After`` or ``Location``; a bare ``int`` is
``Reply(status)``. Requests are recorded when their body has arrived, with the time from
``clock``, before any delay. ``tls=ThrowawayTls`` serves HTTPS with a throw-away certificate
(trust it with ``receiver.ca_file``). ``stop()`` interrupts delays and closes every
connection; ``start()`` listens again on the same port.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from tests.smtp_server import ThrowawayTls, utc_now

__all__ = ["HttpReceiver", "ReceivedRequest", "Reply"]


@dataclass(frozen=True)
class Reply:
    status: int = 200
    delay_s: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass(frozen=True)
class ReceivedRequest:
    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    received_at: datetime
    tls: bool

    def header(self, name: str) -> str | None:
        """The first header of that name (case-insensitive), or None."""
        lowered = name.lower()
        for key, value in self.headers:
            if key.lower() == lowered:
                return value
        return None


class HttpReceiver:
    """A threaded ``http.server`` on ``host`` (default 127.0.0.1) and a free port."""

    def __init__(
        self,
        *,
        replies: Sequence[Reply | int] = (),
        default: Reply | int = 200,
        clock: Callable[[], datetime] = utc_now,
        tls: ThrowawayTls | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.default = _reply(default)
        self.clock = clock
        self.tls = tls
        self.host = host
        self.port = port
        self._cond = threading.Condition()
        self._queue: list[Reply] = [_reply(r) for r in replies]
        self._requests: list[ReceivedRequest] = []
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Self:
        if self._server is not None:
            raise RuntimeError("already running")
        self._stopping.clear()
        server = _Server((self.host, self.port), _Handler, owner=self)
        try:
            if self.tls is not None:
                context = self.tls.server_context()
                # Handshake in the handler thread (first read), not in accept().
                server.socket = context.wrap_socket(
                    server.socket, server_side=True, do_handshake_on_connect=False
                )
            self.port = server.server_address[1]
            thread = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
            )
            thread.start()
        except BaseException:
            server.server_close()
            raise
        self._server, self._thread = server, thread
        return self

    def stop(self) -> None:
        """Stop listening, interrupt delayed replies, wait for every handler thread."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None or thread is None:
            return
        self._stopping.set()
        server.shutdown()
        thread.join()
        server.server_close()  # joins the handler threads (block_on_close)

    def restart(self) -> Self:
        self.stop()
        return self.start()

    @property
    def running(self) -> bool:
        return self._server is not None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- configuration ---------------------------------------------------------------------

    def url(self, path: str = "/hook") -> str:
        if self.port == 0:
            raise RuntimeError("start the receiver first")
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://{self.host}:{self.port}{path}"

    @property
    def ca_file(self) -> Path:
        if self.tls is None:
            raise RuntimeError("this receiver has no TLS")
        return self.tls.ca_file

    def respond(self, *replies: Reply | int) -> None:
        """Queue replies for the next requests, in order."""
        with self._cond:
            self._queue.extend(_reply(r) for r in replies)

    # -- records ---------------------------------------------------------------------------

    @property
    def requests(self) -> list[ReceivedRequest]:
        with self._cond:
            return list(self._requests)

    def wait_for(self, count: int, timeout: float = 2.0) -> list[ReceivedRequest]:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._requests) >= count, timeout):
                raise AssertionError(
                    f"expected {count} request(s) within {timeout} s, got {len(self._requests)}"
                )
            return list(self._requests)

    def clear(self) -> None:
        with self._cond:
            self._requests.clear()

    # -- called from handler threads -------------------------------------------------------

    def _record(self, request: ReceivedRequest) -> Reply:
        with self._cond:
            self._requests.append(request)
            self._cond.notify_all()
            return self._queue.pop(0) if self._queue else self.default


def _reply(value: Reply | int) -> Reply:
    return value if isinstance(value, Reply) else Reply(status=value)


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # tracked, so server_close() can join them
    block_on_close = True

    def __init__(self, address: tuple[str, int], handler: Any, *, owner: HttpReceiver) -> None:
        self.owner = owner
        super().__init__(address, handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that time out or fail the TLS handshake are part of the tests.
        pass


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = 5.0  # a silent client cannot hold a handler thread for long

    def _handle(self) -> None:
        owner = self.server.owner
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        reply = owner._record(
            ReceivedRequest(
                method=self.command,
                path=self.path,
                headers=tuple(self.headers.items()),
                body=body,
                received_at=owner.clock(),
                tls=isinstance(self.connection, ssl.SSLSocket),
            )
        )
        if reply.delay_s > 0 and owner._stopping.wait(reply.delay_s):
            return  # stopping: drop the connection without an answer
        try:
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply.body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(reply.body)
        except OSError:
            pass  # the client gave up (timeout test)

    do_POST = _handle  # noqa: N815
    do_PUT = _handle  # noqa: N815
    do_GET = _handle  # noqa: N815

    def log_message(self, format: str, *args: Any) -> None:
        pass
