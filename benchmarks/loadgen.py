"""Open-loop HTTP/1.1 load on loopback, shared by benchmarks/api_load.py and the reliability
suite's load part (reliability/load.py).

- ``build``: a database of N SIMULATED machines (five simulated banks), scored once, with a
  bank key and an operator key.
- ``api_process``: the API as its own uvicorn process (like production), on 127.0.0.1.
- ``open_loop``: sends planned requests at a fixed rate from one asyncio loop over raw
  keep-alive HTTP/1.1 connections (a light client, so that it does not starve a server on
  the same cores). Open loop: a request's latency counts from the moment it was *due*, so a
  slow server's queueing is never hidden by the client waiting for it.
- ``cpu_seconds``: user+system CPU of a process and its children, from /proc (Linux).
- ``summary``: percentiles and errors of a list of results.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.api_server import free_port  # noqa: E402

BANKS = 5
PROVINCES = ROOT / "data/nl_admin_cbs/provincies_2022.geojson"


@dataclass(frozen=True)
class World:
    url: str
    machines: int
    bank_key: str  # SIMULATED Bank 0
    ops_key: str
    setup_s: float


def simulated_atms_csv(machines: int, path: Path) -> Path:
    """N SIMULATED machines spread over the Netherlands, ``BANKS`` simulated operators."""
    rng = np.random.default_rng(0)
    lat = rng.uniform(50.8, 53.4, machines)
    lon = rng.uniform(3.6, 7.1, machines)
    rows = ["atm_id,operator,lat,lon,site_type,country"]
    for k in range(machines):
        rows.append(f"SIM-{k:06d},SIMULATED Bank {k % BANKS},{lat[k]:.5f},{lon[k]:.5f},shop,NL")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def build(url: str, machines: int, work: Path) -> World:
    """Migrate ``url``, ingest the simulated machines and the provinces (police regions,
    alert routing), publish one scoring run, make a bank and an operator key."""
    from atm_risk.app import Context
    from atm_risk.areas.service import ingest_area
    from atm_risk.config import Settings
    from atm_risk.db import transaction
    from atm_risk.ingest.run import ingest_atms
    from atm_risk.migrate import upgrade
    from atm_risk.risk.service import run_scoring
    from atm_risk.tenancy.keys import create_key

    path = simulated_atms_csv(machines, work / "simulated_atms.csv")
    ctx = Context(settings=Settings(database_url=url, model_path=None))
    upgrade(ctx.engine)
    t = time.perf_counter()
    ingest_atms(ctx.sessions, path=path, clock=ctx.clock)
    ingest_area(ctx.sessions, name="nl_provinces", path=PROVINCES, clock=ctx.clock)
    run_scoring(ctx.sessions, settings=ctx.settings, clock=ctx.clock)
    setup_s = time.perf_counter() - t
    with transaction(ctx.sessions) as session:
        bank, _ = create_key(session, role="bank", tenant="simulated-bank-0", now=ctx.clock.now())
        ops, _ = create_key(session, role="operator", now=ctx.clock.now())
    ctx.close()
    return World(url, machines, bank, ops, setup_s)


@dataclass
class ApiProcess:
    process: subprocess.Popen[bytes]
    port: int

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextmanager
def api_process(
    url: str, *, workers: int = 1, env: dict[str, str] | None = None, warm: bool = False
) -> Iterator[ApiProcess]:
    """``uvicorn atm_risk.api.asgi:app`` on a free loopback port until the block ends; with
    ``warm``, once 10 answers of /healthz in a row (new connections, spread over the workers)
    say the immediate alert path is warm."""
    port = free_port()
    environ = {**os.environ, "ATM_RISK_DATABASE_URL": url, "ATM_RISK_MODEL_PATH": ""}
    command = [sys.executable, "-m", "uvicorn", "atm_risk.api.asgi:app", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--workers", str(workers), "--log-level", "warning"]
    process = subprocess.Popen(command, env=environ | (env or {}))
    api = ApiProcess(process, port)
    try:
        deadline, ready = time.monotonic() + 180, 0
        while ready < (10 if warm else 1):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the API did not start" + (" warm" if warm else ""))
            try:
                answer = httpx.get(f"{api.base}/healthz", timeout=5)
                up = answer.status_code == 200 and (not warm or answer.json().get("warm"))
                ready = ready + 1 if up else 0
            except httpx.HTTPError:
                ready = 0
            time.sleep(0.05)
        yield api
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its live descendants (uvicorn workers)."""
    tick = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        parents[int(entry)] = int(fields[1])
        times[int(entry)] = (int(fields[11]) + int(fields[12])) / tick
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        total += times.get(p, 0.0)
        todo += [child for child, parent in parents.items() if parent == p]
    return total


@dataclass(frozen=True)
class Request:
    method: str
    target: str  # path and query
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    tag: str = ""


@dataclass
class Result:
    request: Request
    due: float  # seconds after the start of the run
    latency_s: float  # from ``due`` to the last byte of the response
    status: int
    error: str | None  # a transport error or what ``check`` found wrong (it sees the body)


Check = Callable[[Request, int, bytes], str | None]


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.used = time.monotonic()

    async def send(self, request: Request, host: str) -> tuple[int, bytes, bool]:
        head = [f"{request.method} {request.target} HTTP/1.1", f"Host: {host}"]
        head += [f"{k}: {v}" for k, v in request.headers.items()]
        if request.body or request.method in ("POST", "PUT", "PATCH"):
            head.append(f"Content-Length: {len(request.body)}")
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + request.body)
        lines = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            body = await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                parts.append(await self.reader.readexactly(size + 2))
                if size == 0:
                    break
            body = b"".join(p[:-2] for p in parts)
        else:
            body = await self.reader.read()
        keep = headers.get("connection", "").lower() != "close"
        return status, body, keep

    def close(self) -> None:
        self.writer.close()


async def _open_loop(
    port: int,
    requests: Sequence[Request],
    rate: float,
    check: Check | None,
    timeout_s: float,
    start: float,
    stop: threading.Event | None,
) -> list[Result]:
    host = f"127.0.0.1:{port}"
    idle: list[_Connection] = []
    results: list[Result | None] = [None] * len(requests)

    def reuse() -> _Connection | None:
        # uvicorn closes a connection idle for 5 s: take only recently used ones
        while idle:
            conn = idle.pop()
            if time.monotonic() - conn.used < 2.0:
                return conn
            conn.close()
        return None

    async def one(k: int, due: float) -> None:
        request = requests[k]
        status, body, error = 0, b"", None
        conn = reuse()
        try:
            async with asyncio.timeout(timeout_s):
                if conn is not None:
                    try:
                        status, body, keep = await conn.send(request, host)
                    except asyncio.IncompleteReadError as exc:
                        if exc.partial:  # the server closed it mid-answer: an error
                            raise
                        conn.close()  # closed while idle: as any client, retry once anew
                        conn = None
                if conn is None:
                    conn = _Connection(*await asyncio.open_connection("127.0.0.1", port))
                    status, body, keep = await conn.send(request, host)
            if keep:
                conn.used = time.monotonic()
                idle.append(conn)
            else:
                conn.close()
            error = check(request, status, body) if check else None
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError,
                ValueError) as exc:  # fmt: skip
            error = type(exc).__name__
            if conn is not None:
                conn.close()
        done = time.perf_counter()
        results[k] = Result(request, due - start, done - due, status, error)

    tasks = []
    for k in range(len(requests)):
        if stop is not None and stop.is_set():
            break
        due = start + k / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(k, due)))
    await asyncio.gather(*tasks)
    for conn in idle:
        conn.close()
    return [r for r in results if r is not None]


def open_loop(
    port: int,
    requests: Sequence[Request],
    rate: float,
    *,
    check: Check | None = None,
    timeout_s: float = 10.0,
    start: float | None = None,
    stop: threading.Event | None = None,
) -> list[Result]:
    """Send ``requests[k]`` at ``start + k / rate`` (perf_counter seconds; default: now +
    0.2 s), each on an idle keep-alive connection or a new one, until ``stop`` is set; return
    one result for each request sent."""
    try:
        import uvloop

        runner: Callable[..., list[Result]] = uvloop.run
    except ImportError:
        runner = asyncio.run
    begin = start if start is not None else time.perf_counter() + 0.2
    return runner(_open_loop(port, requests, rate, check, timeout_s, begin, stop))


def summary(results: Sequence[Result]) -> dict[str, Any]:
    """Latency percentiles (ms, from the due time) and the number of errors."""
    if not results:
        return {"requests": 0, "errors": 0}
    ms = np.array([r.latency_s for r in results]) * 1000
    kinds: dict[str, int] = {}
    for r in results:
        if r.error:
            kinds[r.error] = kinds.get(r.error, 0) + 1
    return {
        "requests": len(results),
        "errors": sum(kinds.values()),
        "error_kinds": kinds,
        "latency_ms_p50": round(float(np.percentile(ms, 50)), 1),
        "latency_ms_p95": round(float(np.percentile(ms, 95)), 1),
        "latency_ms_p99": round(float(np.percentile(ms, 99)), 1),
        "latency_ms_max": round(float(ms.max()), 1),
    }
