"""A full disk gives a clear one-line error (not a traceback): the message is built from the
real errors SQLite and the OS raise when they run out of space."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from sqlalchemy import create_engine, event, text
from sqlalchemy.exc import OperationalError

from atm_risk.cli_common import no_space_message


def test_sqlite_full_is_named_and_says_nothing_partial_was_written(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'small.sqlite3'}")

    @event.listens_for(engine, "connect")
    def _small(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        dbapi_connection.execute("PRAGMA max_page_count = 8")  # SQLITE_FULL beyond 8 pages

    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (x TEXT)"))

    def fill() -> None:
        with engine.begin() as conn:
            for _ in range(100):
                conn.execute(text("INSERT INTO t VALUES (:x)"), {"x": "x" * 4000})

    with pytest.raises(OperationalError) as caught:
        fill()
    engine.dispose()
    message = no_space_message(caught.value)
    assert message is not None
    assert "database or disk is full" in message
    assert "nothing partial" in message
    assert "\n" not in message


def test_enospc_from_a_file_write_and_its_wrapping_error() -> None:
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as exc:
            raise RuntimeError("writing the ranking failed") from exc
    except RuntimeError as wrapped:
        message = no_space_message(wrapped)
    assert message is not None
    assert "out of disk space" in message


def test_other_errors_are_left_alone() -> None:
    assert no_space_message(OperationalError("SELECT 1", {}, Exception("no such table: t"))) is None
    assert no_space_message(OSError(errno.EACCES, "Permission denied")) is None
