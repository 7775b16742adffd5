"""Latency from an incident report to the message accepted by the SMTP server.

Starts a real SMTP server (aiosmtpd) on 127.0.0.1, a fresh database (SQLite file by default,
or --database URL), three routed receivers (police of the region, the bank, operators) and
reports N incidents, C at a time, through the immediate path (`report_incident`, which
commits the incident, its gang_active alert and the deliveries in one transaction and then
sends at once). Every incident is SIMULATED (labelled so in the database and the messages).

Prints one line per phase and, last, a JSON object: p50/p95/p99/max latency over every
routed message, and the counts of messages lost (a delivery row with no message received)
and duplicated (one Message-ID received twice).

    python benchmarks/alert_latency.py [--incidents 200] [--concurrency 20] [--database URL]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from sqlalchemy import select  # noqa: E402
from tests.smtp_server import SmtpTestServer  # noqa: E402

from atm_risk.alerts.models import Delivery  # noqa: E402
from atm_risk.alerts.service import report_incident  # noqa: E402
from atm_risk.app import Context  # noqa: E402
from atm_risk.areas.service import ingest_area  # noqa: E402
from atm_risk.clock import SystemClock  # noqa: E402
from atm_risk.config import Settings  # noqa: E402
from atm_risk.ingest.run import ingest_atms  # noqa: E402
from atm_risk.migrate import upgrade  # noqa: E402

ROUTING = """
version = 1
[[receivers]]
name = "bank"
role = "bank"
operator = "bank"
email = ["security@bank.example"]
[[receivers]]
name = "police-utrecht"
role = "police"
regions = ["Utrecht"]
email = ["rtic@police.example"]
[[receivers]]
name = "ops"
role = "operator"
email = ["ops@atm-risk.example"]
[[routes]]
kinds = ["gang_active", "pipeline_health"]
receivers = ["bank", "police-utrecht", "ops"]
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--incidents", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--database", default=None, help="SQLAlchemy URL (default: SQLite)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="atm-risk-latency-"))
    url = args.database or f"sqlite:///{work / 'bench.sqlite3'}"
    rng = random.Random(0)
    atms = ["atm_id,operator,lat,lon,site_type,country"]
    for k in range(200):
        atms.append(
            f"B{k},Bank,{52.0 + rng.random() * 0.2:.5f},{5.0 + rng.random() * 0.3:.5f},shop,NL"
        )
    (work / "atms.csv").write_text("\n".join(atms) + "\n", encoding="utf-8")
    (work / "routing.toml").write_text(ROUTING, encoding="utf-8")
    with SmtpTestServer() as smtp:
        settings = Settings(
            database_url=url,
            model_path=None,
            alerts={"routing_file": work / "routing.toml", "smtp": smtp.smtp_config(timeout_s=10)},
        )
        ctx = Context(settings=settings, clock=SystemClock())
        upgrade(ctx.engine)
        ingest_atms(ctx.sessions, path=work / "atms.csv", clock=ctx.clock)
        ingest_area(
            ctx.sessions,
            name="nl_provinces",
            path=ROOT / "data/nl_admin_cbs/provincies_2022.geojson",
            clock=ctx.clock,
        )
        print(
            f"database {url.split('://')[0]}, {args.incidents} SIMULATED incidents, "
            f"{args.concurrency} at a time, SMTP on 127.0.0.1:{smtp.port}"
        )
        started: dict[int, float] = {}

        def one(k: int) -> None:
            when = datetime.now(UTC) - timedelta(minutes=1)
            t0 = time.time()
            result = report_incident(
                ctx.sessions,
                settings,
                ctx.clock,
                {
                    "incident_id": f"BENCH-{k}",
                    "occurred_at": when.isoformat(),
                    "lat": 52.0 + (k % 20) * 0.01,
                    "lon": 5.0 + (k // 20) * 0.03,
                    "geocode_precision": "exact",
                    "method": "explosive_solid",
                    "simulated": True,
                },
            )
            for delivery_id in result.deliveries:
                started[delivery_id] = t0

        wall = time.perf_counter()
        with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
            list(pool.map(one, range(args.incidents)))
        wall = time.perf_counter() - wall
        smtp.wait_for(len(started), timeout=30)
        with ctx.sessions() as session:
            rows = session.scalars(select(Delivery)).all()
            by_mid = {r.message_id: r for r in rows}
        received: dict[str, int] = {}
        latencies = []
        for message in smtp.messages:
            mid = message.message_id or ""
            received[mid] = received.get(mid, 0) + 1
            row = by_mid.get(mid)
            if row is not None and row.id in started and received[mid] == 1:
                latencies.append(message.received_at.timestamp() - started[row.id])
        lost = sum(1 for r in rows if r.message_id not in received)
        duplicated = sum(n - 1 for n in received.values() if n > 1)
        ctx.close()
    ms = np.array(latencies) * 1000
    summary = {
        "database": url.split("://")[0],
        "incidents": args.incidents,
        "concurrency": args.concurrency,
        "deliveries": len(rows),
        "messages_received": sum(received.values()),
        "latency_ms_p50": round(float(np.percentile(ms, 50)), 1) if len(ms) else None,
        "latency_ms_p95": round(float(np.percentile(ms, 95)), 1) if len(ms) else None,
        "latency_ms_p99": round(float(np.percentile(ms, 99)), 1) if len(ms) else None,
        "latency_ms_max": round(float(ms.max()), 1) if len(ms) else None,
        "lost": lost,
        "duplicated": duplicated,
        "wall_s": round(wall, 2),
        "simulated": True,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
