"""Engine, sessions and the declarative base shared by every domain's ORM models."""

from __future__ import annotations

import enum
import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, Engine, MetaData, String, create_engine, event
from sqlalchemy import Enum as SAEnum
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

# Stable constraint names so that Alembic migrations are the same on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend.

    Naive datetimes are refused on the way in (a naive time is a bug, not a convention);
    values read back from SQLite, which keeps no zone, are marked UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: store timezone-aware UTC times")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def str_enum(enum_cls: type[enum.Enum], name: str) -> SAEnum:
    """A portable enum column: VARCHAR plus a CHECK constraint, values (not names) stored."""
    return SAEnum(
        enum_cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=32,
        values_callable=lambda e: [m.value for m in e],
        validate_strings=True,
    )


_WRITE_LOCK = "_atm_risk_write_lock"


class WriterQueue:
    """The short writers of one SQLite file, in order: threads of this process queue on a
    lock, and processes on an advisory lock of a file next to the database (``flock``), so
    that a writer waits exactly until the previous one is done instead of polling SQLite's
    file lock with back-off sleeps (of up to 100 ms: the tail latency of two API workers).
    Re-entrant in a thread; one per database file and process (:func:`writer_queue`), as
    two open descriptions of one lock file would block each other within a process."""

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._fd: int | None = None
        self._threads = threading.RLock()
        self._depth = threading.local()

    def _after_fork(self) -> None:
        """In a forked child: its own lock file description and thread lock (the parent's
        could be held by a thread that does not exist here)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._threads = threading.RLock()
        self._depth = threading.local()

    def __enter__(self) -> WriterQueue:
        self._threads.acquire()
        depth = getattr(self._depth, "n", 0)
        self._depth.n = depth + 1
        if depth == 0 and self._path is not None:
            try:
                if self._fd is None:
                    self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
                fcntl.flock(self._fd, fcntl.LOCK_EX)
            except OSError:
                pass  # no lock file possible (read-only folder): SQLite's own lock remains
        return self

    def __exit__(self, *exc: object) -> None:
        self._depth.n -= 1
        try:
            if self._depth.n == 0 and self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._threads.release()


_QUEUES: dict[str | None, WriterQueue] = {}
_QUEUES_LOCK = threading.Lock()


def writer_queue(database: str | None) -> WriterQueue:
    """The :class:`WriterQueue` of a SQLite file in this process (None: in memory, threads
    only); its lock file is ``<database>.writers``."""
    key = str(Path(database).resolve()) if database else None
    with _QUEUES_LOCK:
        if key is None:
            return WriterQueue(None)  # each in-memory database is its own
        if key not in _QUEUES:
            _QUEUES[key] = WriterQueue(Path(f"{key}.writers"))
        return _QUEUES[key]


def _reset_queues_after_fork() -> None:
    for queue in _QUEUES.values():
        queue._after_fork()


os.register_at_fork(after_in_child=_reset_queues_after_fork)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def make_engine(database_url: str, **kwargs: Any) -> Engine:
    """Create an engine; for a SQLite file, create its folder and switch on WAL and FKs."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        pool = (
            {"pool_size": 10, "max_overflow": 30}
            if url.database not in (None, "", ":memory:")
            else {}
        )
        engine = create_engine(url, **{**pool, **kwargs})
        event.listen(engine, "connect", _sqlite_pragmas)
        # SQLite has one writer at a time and makes waiting writers poll (sleeps of up to
        # 100 ms): short writers queue on this instead (transaction()).
        file = url.database if url.database not in (None, "", ":memory:") else None
        setattr(engine, _WRITE_LOCK, writer_queue(file))
        return engine
    # Enough connections for the immediate alert path (reports and sender threads).
    options = {"pool_pre_ping": True, "pool_size": 10, "max_overflow": 30, **kwargs}
    return create_engine(url, **options)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(sessions: sessionmaker[Session], *, short: bool = False) -> Iterator[Session]:
    """One unit of work: commit when the block ends normally, roll back on any error.

    ``short``: a brief write (the alert path). On SQLite it queues on the engine's
    :class:`WriterQueue`, so that concurrent short writers (of this process and of others
    on the same file) take turns instead of polling the database file lock; long units (a
    scoring run) do not take it."""
    lock = getattr(sessions.kw.get("bind"), _WRITE_LOCK, None) if short else None
    with lock or nullcontext(), sessions() as session, session.begin():
        yield session


ShortText = String(200)
