"""The FastAPI application: ``create_app(settings)``. It never starts a scheduler.

Every request to /api/v1 is audited (who, which tenant, what, the status) in the
``audit_log`` table, in its own short transaction after the response is computed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import insert, select
from sqlalchemy.exc import DataError, SQLAlchemyError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from atm_risk import __version__
from atm_risk.alerts.service import warm as warm_immediate_path
from atm_risk.api import web
from atm_risk.api.cache import RunCache
from atm_risk.api.deps import BadKeyLimiter, KeyCache
from atm_risk.api.routes import router
from atm_risk.app import Context
from atm_risk.clock import Clock
from atm_risk.config import Settings, load_settings
from atm_risk.db import transaction
from atm_risk.risk.models import RiskRun, RunStatus
from atm_risk.tenancy.models import AuditEntry

log = logging.getLogger(__name__)


def _warm(ctx: Context, settings: Settings, done: threading.Event) -> None:
    try:
        warm_immediate_path(ctx.sessions, settings, ctx.clock)
    except Exception:  # an optimisation only: the first report builds them instead
        log.warning("could not warm the alert caches", exc_info=True)
    finally:
        done.set()


def create_app(settings: Settings | None = None, *, clock: Clock | None = None) -> FastAPI:
    settings = settings or load_settings()
    ctx = Context(settings=settings, clock=clock) if clock else Context(settings=settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        audit_log.start()
        # the immediate path's caches, so the first reported attack does not build them;
        # in the background: the API answers meanwhile (a report then builds what it needs)
        warm_up = threading.Thread(
            target=_warm, args=(ctx, settings, warmed), name="atm-risk-warm-up", daemon=True
        )
        warm_up.start()
        yield
        audit_log.stop()
        # a shutdown during the warm-up: its session ends before the engine is disposed
        # (a connection still checked out then would be dropped unclosed)
        warm_up.join(timeout=60)
        ctx.close()

    app = FastAPI(
        lifespan=lifespan,
        title="atm-risk",
        version=__version__,
        description="Which cash machines are most likely to be attacked next; decisions and "
        "alerts for banks (their own machines), police (their regions) and operators. "
        "Authenticate with `Authorization: Bearer <key>` (`atm-risk keys create`).",
    )
    app.state.ctx = ctx
    app.state.bad_keys = BadKeyLimiter()
    app.state.keys = KeyCache()
    app.state.run_cache = RunCache()
    audit_log = AuditWriter(ctx)
    warmed = threading.Event()
    app.state.audit = audit_log
    app.include_router(router)
    web.install(app)  # the map, the report form, their data endpoints, /static

    @app.get("/healthz", summary="Liveness, and the time of the last successful scoring run")
    def healthz() -> dict[str, Any]:
        with ctx.sessions() as s:
            run = s.scalar(
                select(RiskRun)
                .where(RiskRun.status == RunStatus.SUCCEEDED)
                .order_by(RiskRun.finished_at.desc(), RiskRun.id.desc())
                .limit(1)
            )
        return {
            "status": "ok",
            "version": __version__,
            "warm": warmed.is_set(),  # the immediate path's caches are built
            "last_successful_run": None
            if run is None
            else {
                "id": run.id,
                "as_of": run.as_of.isoformat(),
                "finished_at": run.finished_at.isoformat() if run.finished_at else None,
            },
        }

    @app.exception_handler(DataError)
    async def bad_value(request: Request, exc: DataError) -> JSONResponse:
        # a value the database cannot hold (a NUL character, a number out of range): the
        # caller's input, so 422, never 500; nothing of the database error is echoed
        return JSONResponse(
            status_code=422,
            content={"detail": [{"loc": ["request"], "msg": "a value is not acceptable"}]},
        )

    app.add_middleware(BodyLimitMiddleware, max_bytes=MAX_BODY_BYTES)
    app.add_middleware(AuditMiddleware, audit_log=audit_log)  # outermost: audits the 413s
    return app


MAX_BODY_BYTES = 1_000_000  # the largest request the API takes (an incident is a few kB)


class BodyLimitMiddleware:
    """Pure ASGI middleware: a request body over ``max_bytes`` answers 413 without being
    read further (declared by Content-Length or counted while streaming), so memory stays
    bounded whatever a client sends. Bodies under the limit are read here and replayed."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large(send)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await self._too_large(send)
                return
            if not message.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, send: Send) -> None:
        await JSONResponse(
            status_code=413,
            content={"detail": f"the request body is larger than {self.max_bytes} bytes"},
            headers={"Connection": "close"},
        )({"type": "http"}, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


class AuditMiddleware:
    """Pure ASGI middleware: after each /api/ request, queue who asked what and the status
    (the principal is what the auth dependency left in the request state)."""

    def __init__(self, app: ASGIApp, audit_log: AuditWriter) -> None:
        self.app, self.audit_log = app, audit_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/api/"):
            await self.app(scope, receive, send)
            return
        status = 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
            principal = scope.get("state", {}).get("scope")
            self.audit_log.add(scope["method"], scope["path"], status, principal, query)


def _clean(text: str) -> str:
    """Text the database can store (PostgreSQL refuses NUL characters)."""
    return text.replace("\x00", "\\x00")


class AuditWriter:
    """Audit entries are queued by the request and written in batches by one thread (every
    ``interval_s``, and on shutdown), so that reads do not wait for a commit each. A crash
    can lose at most the last interval's entries; the scheduler and SMTP paths are not
    involved."""

    def __init__(self, ctx: Context, interval_s: float = 0.2) -> None:
        self.ctx, self.interval_s = ctx, interval_s
        self._queue: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, method: str, path: str, status: int, scope: Any, query: dict[str, str]) -> None:
        entry = {
            "at": self.ctx.clock.now(),
            "key_prefix": getattr(scope, "key_prefix", None),
            "role": getattr(scope, "role", None),
            "operator_code": getattr(scope, "operator_code", None),
            "method": _clean(method)[:8],
            "path": _clean(path)[:500],
            "status": status,
            "detail": {_clean(k)[:50]: _clean(v)[:200] for k, v in list(query.items())[:20]},
        }
        with self._lock:
            self._queue.append(entry)
        if self._thread is None:  # not started (no lifespan): write now
            self.flush()

    def flush(self) -> None:
        with self._lock:
            batch, self._queue = self._queue, []
        if not batch:
            return
        try:
            with transaction(self.ctx.sessions, short=True) as s:
                s.execute(insert(AuditEntry), batch)  # one executemany, no ORM objects
        except SQLAlchemyError:
            # keep the entries for the next flush (the database may be restarting)
            with self._lock:
                self._queue[:0] = batch[-10_000:]

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="atm-risk-audit", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.flush()
            except Exception:
                continue

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.flush()
