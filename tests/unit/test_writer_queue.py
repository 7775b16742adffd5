"""Short SQLite writers take turns across threads and processes (db.WriterQueue)."""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path

from atm_risk.db import writer_queue


def _hold(database: str, started: mp.synchronize.Event, seconds: float) -> None:
    with writer_queue(database):
        started.set()
        time.sleep(seconds)


def test_a_writer_of_another_process_waits_until_the_first_is_done(tmp_path: Path) -> None:
    database = str(tmp_path / "a.sqlite3")
    ctx = mp.get_context("spawn")
    started = ctx.Event()
    holder = ctx.Process(target=_hold, args=(database, started, 0.6))
    holder.start()
    try:
        assert started.wait(30)
        t0 = time.monotonic()
        with writer_queue(database):
            waited = time.monotonic() - t0
    finally:
        holder.join(30)
    assert 0.3 < waited < 5  # queued behind the other process, and let in once it was done
    assert Path(f"{Path(database).resolve()}.writers").exists()


def test_one_queue_per_file_and_reentrant_in_a_thread(tmp_path: Path) -> None:
    database = str(tmp_path / "b.sqlite3")
    queue = writer_queue(database)
    assert writer_queue(str(tmp_path / "." / "b.sqlite3")) is queue
    with queue, writer_queue(database):  # nested: no self-deadlock
        pass
    assert writer_queue(None) is not writer_queue(None)  # in-memory: each its own
