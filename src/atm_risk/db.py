"""Engine, sessions and the declarative base shared by every domain's ORM models."""

from __future__ import annotations

import enum
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
        # 100 ms): short writers of one process queue on this lock instead (transaction()).
        setattr(engine, _WRITE_LOCK, threading.RLock())
        return engine
    # Enough connections for the immediate alert path (reports and sender threads).
    options = {"pool_pre_ping": True, "pool_size": 10, "max_overflow": 30, **kwargs}
    return create_engine(url, **options)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(sessions: sessionmaker[Session], *, short: bool = False) -> Iterator[Session]:
    """One unit of work: commit when the block ends normally, roll back on any error.

    ``short``: a brief write (the alert path). On SQLite it holds the engine's in-process
    write lock, so that concurrent short writers of one process queue in order instead of
    polling the database file lock; long units (a scoring run) do not take it."""
    lock = getattr(sessions.kw.get("bind"), _WRITE_LOCK, None) if short else None
    with lock or nullcontext(), sessions() as session, session.begin():
        yield session


ShortText = String(200)
