"""Load on the ranking endpoint: p50/p99 latency and errors at a fixed request rate.

Builds a database with N SIMULATED machines (default 50,000, spread over the Netherlands,
five simulated banks; operator names start with "SIMULATED"), publishes a scoring run, starts
the API as its own process (uvicorn, like production) on 127.0.0.1 and sends GET
/api/v1/ranking (pages of 100 at random offsets; half with a bank key, half with an
operator key) at a fixed rate after 40 warm-up requests, open loop: each request's
latency counts from the moment it was due, so queueing is not hidden. The client is one
asyncio loop on raw keep-alive HTTP/1.1 connections (benchmarks/loadgen.py); the CPU used by
the client and by the server during the measured seconds is reported. Loopback only.
Prints one line per phase and, last, a JSON object.

    python benchmarks/api_load.py [--machines 50000] [--rate 100] [--seconds 30]
                                  [--database URL] [--workers 1]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.loadgen import (  # noqa: E402
    BANKS,
    Request,
    World,
    api_process,
    build,
    cpu_seconds,
    open_loop,
    summary,
)


def ranking_requests(world: World, total: int, seed: int = 1) -> list[Request]:
    """Pages of 100 at random offsets within a bank's machines, bank and operator keys
    alternating."""
    rng = random.Random(seed)
    out = []
    for k in range(total):
        key = world.bank_key if k % 2 == 0 else world.ops_key
        offset = rng.randrange(0, world.machines // BANKS - 100)
        headers = {"Authorization": f"Bearer {key}"}
        tag = "bank" if k % 2 == 0 else "operator"
        out.append(Request("GET", f"/api/v1/ranking?limit=100&offset={offset}", headers, tag=tag))
    return out


def ranking_ok(request: Request, status: int, body: bytes) -> str | None:
    """An error unless the answer is a 200 with a non-empty page."""
    if status != 200:
        return str(status)
    if not json.loads(body)["items"]:
        return "empty page"
    return None


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
    world = build(url, args.machines, work)
    backend = url.split("://")[0]
    print(f"{args.machines} SIMULATED machines ingested and scored in {world.setup_s:.1f} s")
    with api_process(url, workers=args.workers, warm=True) as api:
        # warm up: every worker process opens its connections and keeps the published run's
        # ranking per scope (filled in the background in a few seconds after the first
        # request; a server in service is warm, its first seconds are not measured; the
        # cost of a new run is measured by the reliability suite's load part)
        open_loop(api.port, ranking_requests(world, 200, seed=0), rate=20.0)
        requests = ranking_requests(world, int(args.rate * args.seconds))
        server_cpu, client_cpu = cpu_seconds(api.process.pid), time.process_time()
        wall = time.perf_counter()
        results = open_loop(api.port, requests, args.rate, check=ranking_ok)
        wall = time.perf_counter() - wall
        server_cpu = cpu_seconds(api.process.pid) - server_cpu
        client_cpu = time.process_time() - client_cpu
    figures = summary(results)
    print(
        json.dumps(
            {
                "machines": args.machines,
                "simulated": True,
                "database": backend,
                "workers": args.workers,
                "target_rate_per_s": args.rate,
                "achieved_rate_per_s": round(len(results) / wall, 1),
                **figures,
                "server_cpu_s": round(server_cpu, 1),
                "client_cpu_s": round(client_cpu, 1),
                "wall_s": round(wall, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
