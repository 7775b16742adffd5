"""Load on the ranking endpoint: p50/p99 latency and errors at a fixed request rate.

Builds a database with N SIMULATED machines (default 50,000, spread over the Netherlands,
five simulated banks; operator names start with "SIMULATED"), publishes a scoring run, starts
the API as its own process (uvicorn, like production) on 127.0.0.1 and sends GET
/api/v1/ranking (pages of 100 at random offsets; half with a bank key, half with an
operator key) at a fixed rate after 40 warm-up requests, open loop: each request's
latency counts from the moment it was due, so queueing is not hidden. Loopback only.
Prints one line per phase and, last, a JSON object.

    python benchmarks/api_load.py [--machines 50000] [--rate 100] [--seconds 30]
                                  [--database URL] [--workers 1]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import numpy as np  # noqa: E402

from atm_risk.app import Context  # noqa: E402
from atm_risk.config import Settings  # noqa: E402
from atm_risk.db import transaction  # noqa: E402
from atm_risk.ingest.run import ingest_atms  # noqa: E402
from atm_risk.migrate import upgrade  # noqa: E402
from atm_risk.risk.service import run_scoring  # noqa: E402
from atm_risk.tenancy.keys import create_key  # noqa: E402

BANKS = 5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def build(url: str, machines: int, work: Path) -> tuple[str, str, float]:
    rng = np.random.default_rng(0)
    lat = rng.uniform(50.8, 53.4, machines)
    lon = rng.uniform(3.6, 7.1, machines)
    rows = ["atm_id,operator,lat,lon,site_type,country"]
    for k in range(machines):
        rows.append(f"SIM-{k:06d},SIMULATED Bank {k % BANKS},{lat[k]:.5f},{lon[k]:.5f},shop,NL")
    path = work / "simulated_atms.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    ctx = Context(settings=Settings(database_url=url, model_path=None))
    upgrade(ctx.engine)
    t = time.perf_counter()
    ingest_atms(ctx.sessions, path=path, clock=ctx.clock)
    run_scoring(ctx.sessions, settings=ctx.settings, clock=ctx.clock)
    setup_s = time.perf_counter() - t
    with transaction(ctx.sessions) as session:
        bank, _ = create_key(session, role="bank", tenant="simulated-bank-0", now=ctx.clock.now())
        ops, _ = create_key(session, role="operator", now=ctx.clock.now())
    ctx.close()
    return bank, ops, setup_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--machines", type=int, default=50_000)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--database", default=None)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="atm-risk-load-"))
    url = args.database or f"sqlite:///{work / 'load.sqlite3'}"
    bank_key, ops_key, setup_s = build(url, args.machines, work)
    print(
        f"{args.machines} SIMULATED machines ingested and scored in {setup_s:.1f} s ({url.split('://')[0]})"
    )
    port = free_port()
    env = {**os.environ, "ATM_RISK_DATABASE_URL": url, "ATM_RISK_MODEL_PATH": ""}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "atm_risk.api.asgi:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(args.workers),
            "--log-level",
            "warning",
        ],
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise RuntimeError("the API did not start")
        # warm up: every worker process opens its connections and caches the published
        # run's counts (a server in service is warm; its first seconds are not measured)
        with httpx.Client(base_url=base, timeout=30) as warm:
            for k in range(40):
                warm.get(
                    "/api/v1/ranking",
                    params={"limit": 100, "offset": k},
                    headers={"Authorization": f"Bearer {(bank_key, ops_key)[k % 2]}"},
                )
        total = int(args.rate * args.seconds)
        local = threading.local()
        rng = random.Random(1)
        plan = [
            (bank_key if k % 2 == 0 else ops_key, rng.randrange(0, args.machines // BANKS - 100))
            for k in range(total)
        ]
        latencies: list[float] = [0.0] * total
        errors: list[str] = []
        t0 = time.perf_counter() + 0.5

        def one(k: int) -> None:
            due = t0 + k / args.rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            client = getattr(local, "client", None)
            if client is None:
                client = local.client = httpx.Client(base_url=base, timeout=10)
            key, offset = plan[k]
            try:
                r = client.get(
                    "/api/v1/ranking",
                    params={"limit": 100, "offset": offset},
                    headers={"Authorization": f"Bearer {key}"},
                )
                if r.status_code != 200 or len(r.json()["items"]) == 0:
                    errors.append(f"{r.status_code}")
            except httpx.HTTPError as exc:
                errors.append(type(exc).__name__)
            latencies[k] = time.perf_counter() - due

        wall = time.perf_counter()
        with ThreadPoolExecutor(max_workers=64) as pool:
            list(pool.map(one, range(total)))
        wall = time.perf_counter() - wall
    finally:
        server.terminate()
        server.wait(timeout=20)
    ms = np.array(latencies) * 1000
    print(
        json.dumps(
            {
                "machines": args.machines,
                "simulated": True,
                "database": url.split("://")[0],
                "workers": args.workers,
                "requests": total,
                "target_rate_per_s": args.rate,
                "achieved_rate_per_s": round(total / wall, 1),
                "latency_ms_p50": round(float(np.percentile(ms, 50)), 1),
                "latency_ms_p99": round(float(np.percentile(ms, 99)), 1),
                "latency_ms_max": round(float(ms.max()), 1),
                "errors": len(errors),
            }
        )
    )


if __name__ == "__main__":
    main()
