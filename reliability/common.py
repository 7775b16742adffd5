"""What every part of the reliability suite shares: the options, throw-away databases on
SQLite and PostgreSQL, a child-process helper and the scenario record.

Interface of a part (``reliability/<part>.py``)::

    def run(options: Options) -> dict      # JSON-able; see ``part_result``
    def markdown(results: dict) -> str     # its section of docs/RELIABILITY.md

A part's result is ``{"scenarios": [Scenario.as_dict(), ...], "figures": {...}}`` (plus any
free keys). The runner sums the counters of ``SUMMED`` over every scenario of every part;
``figures`` is shown as it is (the load part puts its latency percentiles there).
Databases a part creates with ``options.databases.new(...)`` are reconciled after the whole
suite and dropped at the end.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # tests/ helpers (smtp_server, api_server, two_banks)
    sys.path.insert(0, str(ROOT))

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
BACKENDS = ("sqlite", "postgresql")

# Counters summed by the runner over every scenario; the goal of each is 0.
SUMMED = (
    "messages_lost",
    "rankings_partial",
    "crashes",
    "server_errors",
    "tenant_leaks",
    "valid_rows_lost",
    "secrets_leaked",
    "unreconciled",
)
# Counters summed too, without a goal: how much was tried, and messages delivered twice.
# Delivery is at least once: a process killed after the relay took a message but before
# the outcome was written sends it again after the lease, with the same Message-ID (or
# webhook idempotency key), so the recipient's mail system or receiver can drop it.
COUNTED = ("cases", "messages_duplicated")


class Databases:
    """Throw-away databases: SQLite files under ``work`` and PostgreSQL databases created on
    the server of ``postgres_url`` (like tests/conftest.py does) and dropped by ``drop_all``."""

    def __init__(self, postgres_url: str, work: Path) -> None:
        self.postgres_url = make_url(postgres_url)
        self.work = work
        self.created: list[tuple[str, str, str]] = []  # (backend, url, label)
        # what reconciliation should know of a database: {"routing": Path, ...}
        self.info: dict[str, dict[str, Any]] = {}
        self._admin: Engine | None = None

    def admin(self) -> Engine:
        if self._admin is None:
            self._admin = create_engine(
                self.postgres_url, isolation_level="AUTOCOMMIT", pool_pre_ping=True
            )
        return self._admin

    def check_postgres(self) -> str | None:
        """None when the server answers, else why not."""
        try:
            with self.admin().connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:
            return f"PostgreSQL not reachable at {self.postgres_url!r} ({type(exc).__name__})"
        return None

    def new(self, backend: str, label: str = "", *, migrate: bool = True) -> str:
        """The URL of a new, empty database (migrated to head unless ``migrate=False``)."""
        tag = uuid.uuid4().hex[:12]
        if backend == "sqlite":
            safe = re.sub(r"[^\w.-]+", "_", label) or "db"
            path = self.work / "db" / f"{safe}-{tag}.sqlite3"
            path.parent.mkdir(parents=True, exist_ok=True)
            url = f"sqlite:///{path}"
        elif backend == "postgresql":
            name = f"atm_risk_rel_{tag}"
            with self.admin().connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            url = self.postgres_url.set(database=name).render_as_string(hide_password=False)
        else:
            raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
        self.created.append((backend, url, label))
        if migrate:
            from atm_risk.db import make_engine
            from atm_risk.migrate import upgrade

            engine = make_engine(url)
            try:
                upgrade(engine)
            finally:
                engine.dispose()
        return url

    def describe(self, url: str, **info: Any) -> None:
        """Record facts about a database for reconciliation (``routing=`` the routing file
        its alerts were routed with)."""
        self.info.setdefault(url, {}).update(info)

    def drop_all(self) -> None:
        for backend, url, _ in self.created:
            if backend == "postgresql":
                name = make_url(url).database
                with self.admin().connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self.created.clear()
        if self._admin is not None:
            self._admin.dispose()
            self._admin = None


@dataclass
class Options:
    backends: list[str] = field(default_factory=lambda: list(BACKENDS))
    postgres_url: str = DEFAULT_PG_URL
    quick: bool = False
    out_dir: Path = ROOT / "out" / "reliability"
    seed: int = 20261128
    databases: Databases = field(init=False)

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.databases = Databases(self.postgres_url, self.out_dir)

    def work_dir(self, name: str) -> Path:
        """A fresh directory under out_dir for one part or scenario."""
        path = self.out_dir / name
        path.mkdir(parents=True, exist_ok=True)
        return path


@dataclass
class Scenario:
    """One scenario's outcome. Counters default to 0; ``details`` holds anything else."""

    name: str
    backend: str  # "sqlite", "postgresql" or "-" when no database is involved
    survived: bool
    messages_lost: int = 0
    messages_duplicated: int = 0
    rankings_partial: int = 0
    cases: int = 0
    crashes: int = 0
    server_errors: int = 0
    tenant_leaks: int = 0
    valid_rows_lost: int = 0
    secrets_leaked: int = 0
    unreconciled: int = 0
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["seconds"] = round(self.seconds, 2)
        return out


def part_result(scenarios: Iterable[Scenario | Mapping[str, Any]], **extra: Any) -> dict[str, Any]:
    """The dict a part's ``run`` returns."""
    rows = [s.as_dict() if isinstance(s, Scenario) else dict(s) for s in scenarios]
    return {"scenarios": rows, **extra}


def scenario_table(scenarios: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """A markdown table of scenarios: name, backend, survived and the given counters."""
    head = ["scenario", "backend", "survived", *columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in scenarios:
        cells = [str(s["name"]), str(s["backend"]), "yes" if s["survived"] else "**no**"]
        cells += [str(s.get(c, "")) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def timed(fn: Callable[[], Scenario]) -> Scenario:
    """Run ``fn`` and set the scenario's seconds."""
    start = time.monotonic()
    scenario = fn()
    scenario.seconds = time.monotonic() - start
    return scenario


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Process:
    """A child process (``python`` + args by default) with its output in a log file.

    ``own_group``: the process leads a process group of its own, and a SIGKILL after a
    failed ``stop`` goes to the whole group (servers with worker processes, e.g. uvicorn).
    """

    def __init__(
        self,
        args: Sequence[str],
        log: Path,
        *,
        env: Mapping[str, str] | None = None,
        python: bool = True,
        cwd: Path = ROOT,
        own_group: bool = False,
    ) -> None:
        self.args = [sys.executable, *args] if python else list(args)
        self.log = log
        self.env = {**os.environ, **(env or {})}
        self.cwd = cwd
        self.own_group = own_group
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.args,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=self.own_group,
            )
        return self

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_until(self, ready: Callable[[], bool], timeout: float = 60, what: str = "") -> None:
        """Poll ``ready`` until true; raise with the log's tail when the process dies or the
        time runs out."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if ready():
                    return
            except Exception:
                pass
            if not self.alive():
                raise RuntimeError(f"{self.args[1:3]} exited before {what}:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.args[1:3]}: no {what} in {timeout} s:\n{self.tail()}")
            time.sleep(0.1)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)

    def stop(self, timeout: float = 20) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                if self.own_group:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                else:
                    self.proc.kill()
                self.proc.wait(timeout=30)
        return self.proc.returncode

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""

    def tail(self, n: int = 30) -> str:
        return "\n".join(self.output().splitlines()[-n:])

    def __enter__(self) -> Process:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class World:
    """The two-bank world of tests/two_banks.py in one database: bank A (Utrecht and
    Groningen), bank B (Utrecht), the provinces, a published run, an attack on bank B's
    machine, and keys (bank_a, bank_b, police of Utrecht, operator, revoked)."""

    url: str
    settings: Any
    clock: Any
    engine: Engine
    sessions: Any
    keys: dict[str, str]

    def app(self) -> Any:
        from atm_risk.api.app import create_app

        return create_app(self.settings, clock=self.clock)

    def close(self) -> None:
        self.engine.dispose()


def api_world(url: str, work: Path, **settings: Any) -> World:
    from datetime import UTC, datetime, timedelta

    from tests import two_banks

    from atm_risk.clock import FrozenClock
    from atm_risk.config import Settings
    from atm_risk.db import make_engine, session_factory
    from atm_risk.tenancy.keys import create_key, revoke

    work.mkdir(parents=True, exist_ok=True)

    def write(name: str, content: str | bytes) -> Path:
        path = work / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        return path

    # an hour ago, so that a server on the system clock sees it as the recent past
    clock = FrozenClock(datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1))
    config = Settings(database_url=url, model_path=None, **settings)
    engine = make_engine(url)
    sessions = session_factory(engine)
    two_banks.load(sessions, clock, write, motorway=False)
    two_banks.attack_on_bank_b(sessions, config, clock)
    keys = two_banks.keys(sessions, clock.now(), "bank_a", "bank_b", "police", "operator")
    with sessions.begin() as s:
        keys["revoked"], row = create_key(s, role="operator", now=clock.now())
        revoke(s, row.prefix, clock.now())
    return World(url, config, clock, engine, sessions, keys)
