"""Shared fixtures: one migrated database per backend, emptied after every test.

Every test that takes ``sessions`` (or ``database_url``) runs on SQLite and on PostgreSQL.
PostgreSQL is ``ATM_RISK_TEST_POSTGRES_URL`` (default: the local server's ``test`` database);
each test session works in a database of its own that it creates there and drops after.
When no server answers, or it has no PostGIS, the PostgreSQL tests are skipped with the
reason, except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from atm_risk.clock import FrozenClock
from atm_risk.db import make_engine, session_factory
from atm_risk.migrate import upgrade
from atm_risk.store import metadata

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data"


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def unavailable(missing: str, what: str) -> NoReturn:
    """Skip saying what is missing; under ``CI=true`` fail instead (``what`` must run)."""
    if _in_ci():
        pytest.fail(f"{missing}; under CI=true the {what} must run")
    pytest.skip(missing)


class PostgresServer:
    """Creates and drops throw-away databases on the test server."""

    def __init__(self, url: str) -> None:
        self.url = make_url(url)
        self.admin = create_engine(self.url, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
        self.created: list[str] = []

    def create_database(self) -> str:
        name = f"atm_risk_test_{uuid.uuid4().hex[:12]}"
        with self.admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        self.created.append(name)
        return self.url.set(database=name).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        with self.admin.connect() as conn:
            for name in self.created:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self.admin.dispose()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    url = os.environ.get("ATM_RISK_TEST_POSTGRES_URL", DEFAULT_PG_URL)
    server = PostgresServer(url)
    try:
        with server.admin.connect() as conn:
            postgis = conn.scalar(
                text("SELECT 1 FROM pg_available_extensions WHERE name = 'postgis'")
            )
    except Exception as exc:
        server.admin.dispose()
        unavailable(
            f"PostgreSQL not reachable at {make_url(url)!r} ({type(exc).__name__}); "
            "set ATM_RISK_TEST_POSTGRES_URL to run these tests",
            "PostgreSQL tests",
        )
    if not postgis:
        server.admin.dispose()
        unavailable(
            f"PostGIS is not installed on the PostgreSQL server at {make_url(url)!r}; "
            "Debian: apt-get install postgresql-15-postgis-3",
            "PostgreSQL tests",
        )
    yield server
    server.drop_all()


def _new_database_url(
    backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> str:
    if backend == "sqlite":
        path = tmp_path_factory.mktemp("db") / "atm-risk.sqlite3"
        return f"sqlite:///{path}"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.create_database()


BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def migrated_url(
    backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A migrated database of this backend, shared by the session (emptied per test)."""
    url = _new_database_url(backend, request, tmp_path_factory)
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    return url


@pytest.fixture
def empty_database_url(
    backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """A database of this backend with no schema at all."""
    return _new_database_url(backend, request, tmp_path_factory)


@pytest.fixture
def engine(migrated_url: str) -> Iterator[Engine]:
    """An engine on the session's migrated database; every row is deleted after the test."""
    engine = make_engine(migrated_url)
    yield engine
    with engine.begin() as conn:
        for table in reversed(metadata.sorted_tables):
            conn.execute(table.delete())
    engine.dispose()


@pytest.fixture
def database_url(migrated_url: str, engine: Engine) -> str:
    """The URL of the migrated database (emptied after the test), for CLI and processes."""
    return migrated_url


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return session_factory(engine)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(datetime(2026, 11, 28, 12, 0, tzinfo=UTC))


@pytest.fixture
def write(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Write a text (or bytes) file under tmp_path and return its path."""

    def _write(name: str, content: str | bytes) -> Path:
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        return path

    return _write
