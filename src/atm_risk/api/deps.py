"""What every request needs: the process context, a session, the principal (from the bearer
key) and the one scope helper every query goes through; the audit trail; bad-key limits."""

from __future__ import annotations

import hashlib
import threading
import time
from collections import defaultdict, deque
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import Select, false, select
from sqlalchemy.orm import Session

from atm_risk.app import Context
from atm_risk.atms.models import Atm
from atm_risk.regions import machine_regions
from atm_risk.tenancy.keys import Scope, resolve

BAD_KEYS_PER_MINUTE = 20
KEY_CACHE_S = 5.0  # a revoked key stops working within this time


async def context(request: Request) -> Context:
    # async: no blocking work, so it costs no hop to the thread pool
    ctx = request.app.state.ctx
    assert isinstance(ctx, Context)
    return ctx


def session(ctx: Annotated[Context, Depends(context)]) -> Iterator[Session]:
    with ctx.sessions() as s:
        yield s


class KeyCache:
    """Resolved keys for ``ttl_s`` seconds (a revocation takes effect within that time),
    keyed by the key's SHA-256, so that a request does not cost two key queries."""

    def __init__(self, ttl_s: float = KEY_CACHE_S) -> None:
        self.ttl_s = ttl_s
        self._found: dict[str, tuple[float, Scope]] = {}
        self._lock = threading.Lock()

    def cached(self, key: str) -> Scope | None:
        """The scope of ``key`` if resolved less than ``ttl_s`` ago (no database)."""
        digest = hashlib.sha256(key.encode()).hexdigest()
        with self._lock:
            hit = self._found.get(digest)
        if hit is not None and time.monotonic() - hit[0] < self.ttl_s:
            return hit[1]
        return None

    def get(self, key: str, db: Session) -> Scope | None:
        hit = self.cached(key)
        if hit is not None:
            return hit
        digest = hashlib.sha256(key.encode()).hexdigest()
        now = time.monotonic()
        found = resolve(db, key)
        with self._lock:
            if found is None:
                self._found.pop(digest, None)
                return None
            if len(self._found) > 10_000:
                self._found.clear()
            self._found[digest] = (now, found[1])
        return found[1]


class BadKeyLimiter:
    """Refuses (429) a client that sent too many bad keys in the last minute."""

    def __init__(self, per_minute: int = BAD_KEYS_PER_MINUTE) -> None:
        self.per_minute = per_minute
        self._seen: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def _recent(self, client: str, now: float) -> deque[float]:
        q = self._seen[client]
        while q and q[0] < now - 60:
            q.popleft()
        return q

    def check(self, client: str) -> None:
        with self._lock:
            if len(self._recent(client, time.monotonic())) >= self.per_minute:
                raise HTTPException(429, "too many bad keys; wait a minute", {"Retry-After": "60"})

    def failed(self, client: str) -> None:
        with self._lock:
            self._recent(client, time.monotonic()).append(time.monotonic())


async def principal(request: Request) -> Scope:
    """The caller's scope from ``Authorization: Bearer KEY``; 401 without a valid key.
    Async: a key resolved in the last seconds costs no hop to the thread pool (the database
    is read there only when the key cache has no answer)."""
    limiter: BadKeyLimiter = request.app.state.bad_keys
    client = request.client.host if request.client else "unknown"
    limiter.check(client)
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise HTTPException(401, "send Authorization: Bearer <key>", {"WWW-Authenticate": "Bearer"})
    keys: KeyCache = request.app.state.keys
    scope = keys.cached(key.strip())
    if scope is None:
        scope = await run_in_threadpool(_resolve, keys, key.strip(), request.app.state.ctx)
    if scope is None:
        limiter.failed(client)
        raise HTTPException(401, "unknown or revoked key", {"WWW-Authenticate": "Bearer"})
    request.state.scope = scope
    return scope


def _resolve(keys: KeyCache, key: str, ctx: Context) -> Scope | None:
    with ctx.sessions() as db:
        return keys.get(key, db)


Principal = Annotated[Scope, Depends(principal)]
DB = Annotated[Session, Depends(session)]
Ctx = Annotated[Context, Depends(context)]


def not_found(what: str = "not found") -> HTTPException:
    return HTTPException(404, what)


def scope_atms(query: Select[Any], scope: Scope, db: Session, ctx: Context) -> Select[Any]:
    """THE scoping helper: restrict any query that joins ``Atm`` to what ``scope`` may see."""
    if scope.role == "operator":
        return query
    if scope.role == "bank":
        if scope.operator_id is None:
            return query.where(false())
        return query.where(Atm.operator_id == scope.operator_id)
    regions = machine_regions(db, ctx.settings)
    allowed = [pk for pk, region in regions.items() if scope.sees_region(region)]
    return query.where(Atm.id.in_(allowed)) if allowed else query.where(false())


def machine_visible(db: Session, ctx: Context, scope: Scope, atm: Atm) -> bool:
    if scope.role == "operator":
        return True
    if scope.role == "bank":
        return atm.operator_id == scope.operator_id
    return scope.sees_region(machine_regions(db, ctx.settings).get(atm.id))


def visible_atm_ids(db: Session, ctx: Context, scope: Scope) -> set[int] | None:
    """The machine ids the scope may see (None: all)."""
    if scope.role == "operator":
        return None
    return set(db.scalars(scope_atms(select(Atm.id), scope, db, ctx)))
