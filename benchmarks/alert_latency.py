"""Latency from an incident report to the message accepted by the SMTP server.

Starts a real SMTP server (aiosmtpd on 127.0.0.1, in its own process, like a relay on another
machine) that accepts every message and logs its Message-ID and the time of its 250 reply
(it does not parse the MIME, as an MTA queueing the message would not), a fresh database
(SQLite file by default, or --database URL), three routed receivers (police of the region,
the bank, operators) and reports N incidents, C at a time, through the immediate path
(`report_incident`, which commits the incident, its gang_active alert and the deliveries in
one transaction and then sends at once). Every incident is SIMULATED (labelled so in the
database and the messages).

With ``--api N`` the incidents go through the production path instead: ``POST
/api/v1/incidents`` to the API served by uvicorn with N worker processes (as deployed), from
C client threads; a message's latency then counts from the moment its report was sent.

Prints one line per phase and, last, a JSON object: p50/p95/p99/max latency over every
routed message, the counts of messages lost (a delivery row with no message received) and
duplicated (one Message-ID received twice), and (in process) the reporting process's CPU
time per incident, which sets the latency of a burst: C reports at once on one interpreter
take about C x that CPU each (Little's law).

    python benchmarks/alert_latency.py [--incidents 200] [--concurrency 20] [--database URL]
                                       [--one-region] [--api WORKERS]
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import multiprocessing as mp
import os
import random
import re
import socket
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GELDMAAT = ROOT / "data/geldmaat_atm_locations_nl/geldmaat_locations.csv.gz"
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
from benchmarks.loadgen import api_process  # noqa: E402
from sqlalchemy import select  # noqa: E402

from atm_risk.alerts.channels import SmtpConfig  # noqa: E402
from atm_risk.alerts.models import Delivery  # noqa: E402
from atm_risk.alerts.service import report_incident, warm  # noqa: E402
from atm_risk.app import Context  # noqa: E402
from atm_risk.areas.service import ingest_area  # noqa: E402
from atm_risk.clock import SystemClock  # noqa: E402
from atm_risk.config import Settings  # noqa: E402
from atm_risk.db import transaction  # noqa: E402
from atm_risk.incidents.models import Incident  # noqa: E402
from atm_risk.ingest.run import ingest_atms  # noqa: E402
from atm_risk.migrate import upgrade  # noqa: E402
from atm_risk.tenancy.keys import create_key  # noqa: E402

PROVINCES = (
    "Groningen",
    "Fryslân",
    "Drenthe",
    "Overijssel",
    "Flevoland",
    "Gelderland",
    "Utrecht",
    "Noord-Holland",
    "Zuid-Holland",
    "Zeeland",
    "Noord-Brabant",
    "Limburg",
)


def routing_toml(operator: str) -> str:
    """Police of every Dutch province, the bank, the operators."""
    parts = ["version = 1"]
    names = []
    for k, province in enumerate(PROVINCES):
        names.append(f"police-{k}")
        parts.append(
            f'[[receivers]]\nname = "police-{k}"\nrole = "police"\n'
            f'regions = ["{province}"]\nemail = ["rtic-{k}@police.example"]'
        )
    parts.append(
        f'[[receivers]]\nname = "bank"\nrole = "bank"\noperator = "{operator}"\n'
        'email = ["security@bank.example"]'
    )
    parts.append('[[receivers]]\nname = "ops"\nrole = "operator"\nemail = ["ops@atm-risk.example"]')
    receivers = ", ".join(f'"{n}"' for n in [*names, "bank", "ops"])
    parts.append(
        f'[[routes]]\nkinds = ["gang_active", "pipeline_health"]\nreceivers = [{receivers}]'
    )
    return "\n\n".join(parts) + "\n"


_MESSAGE_ID = re.compile(rb"^Message-ID:[ \t]*(<[^>\r\n]+>)", re.IGNORECASE | re.MULTILINE)


class _RelayHandler:
    """What an MTA does on DATA, minus the queue file: take the message and answer 250.
    Only the Message-ID header is read (no MIME parsing), so the relay spends about as
    little CPU per message as a real one and competes little with the reporters for the
    machine's cores. The acceptance time is taken as the 250 is given."""

    def __init__(self, log) -> None:
        self.log = log

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 (aiosmtpd)
        raw = envelope.original_content or b""
        head = raw[: raw.find(b"\r\n\r\n") + 2]
        found = _MESSAGE_ID.search(head)
        mid = found.group(1).decode("ascii", "replace") if found else "-"
        self.log.write(f"{mid}\t{time.time()}\n")
        return "250 2.0.0 OK queued"


def smtp_relay(port_file: Path, log_file: Path, stop_file: Path) -> None:
    """Child process: a real SMTP server (aiosmtpd on loopback, like a relay, not sharing
    the reporters' GIL) that logs every accepted message as "Message-ID<TAB>unix time of
    acceptance"."""
    from aiosmtpd.controller import Controller

    with log_file.open("a", encoding="utf-8", buffering=1) as log:
        with socket.socket() as probe:  # a free port (aiosmtpd's Controller needs one)
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        controller = Controller(_RelayHandler(log), hostname="127.0.0.1", port=port)
        controller.start()
        try:
            port_file.write_text(str(port), encoding="utf-8")
            while not stop_file.exists():
                time.sleep(0.05)
        finally:
            controller.stop()


def start_relay(work: Path) -> tuple[mp.Process, int, Path, Path]:
    port_file, log_file, stop_file = work / "port", work / "received.tsv", work / "stop"
    for stale in (port_file, log_file, stop_file):  # of an earlier run in the same folder
        stale.unlink(missing_ok=True)
    proc = mp.get_context("spawn").Process(
        target=smtp_relay, args=(port_file, log_file, stop_file), daemon=True
    )
    proc.start()
    for _ in range(200):
        if port_file.exists() and port_file.read_text():
            return proc, int(port_file.read_text()), log_file, stop_file
        time.sleep(0.05)
    raise RuntimeError("the SMTP relay did not start")


def relay_env(routing: Path, port: int) -> dict[str, str]:
    """Environment of a process that routes alerts with ``routing`` to the relay on ``port``."""
    return {
        "ATM_RISK_ALERTS__ROUTING_FILE": str(routing),
        "ATM_RISK_ALERTS__SMTP__HOST": "127.0.0.1",
        "ATM_RISK_ALERTS__SMTP__PORT": str(port),
        "ATM_RISK_ALERTS__SMTP__SECURITY": "none",
        "ATM_RISK_ALERTS__SMTP__FROM_ADDRESS": "a@b.example",
    }


def _received(log_file: Path) -> list[tuple[str, float]]:
    if not log_file.exists():
        return []
    rows = [line.split("\t") for line in log_file.read_text(encoding="utf-8").splitlines()]
    return [(mid, float(at)) for mid, at in rows]


def attack(site: tuple[float, float]) -> dict:
    """A SIMULATED explosive attack a minute ago at ``site`` (lat, lon)."""
    return {
        "occurred_at": (datetime.now(UTC) - timedelta(minutes=1)).isoformat(),
        "lat": site[0],
        "lon": site[1],
        "method": "explosive_solid",
        "simulated": True,
    }


def report_in_process(ctx: Context, settings: Settings, sites: list, n: int, c: int) -> dict:
    """Report through ``report_incident`` from C threads of this process; returns the start
    time of every delivery the reports wrote."""
    warm(ctx.sessions, settings, ctx.clock)  # as a server does at start (API lifespan)
    started: dict[int, float] = {}

    def one(k: int) -> None:
        t0 = time.time()
        result = report_incident(
            ctx.sessions,
            settings,
            ctx.clock,
            {"incident_id": f"BENCH-{k}", "geocode_precision": "exact", **attack(sites[k])},
        )
        for delivery_id in result.deliveries:
            started[delivery_id] = t0

    cpu = time.process_time()
    with ThreadPoolExecutor(max_workers=c) as pool:
        list(pool.map(one, range(n)))
    CPU_MS_PER_INCIDENT.append((time.process_time() - cpu) * 1000 / n)
    return started


CPU_MS_PER_INCIDENT: list[float] = []  # of this process while reporting in process


def report_through_api(
    ctx: Context, url: str, work: Path, port: int, sites: list, n: int, c: int, workers: int
) -> dict:
    """Report through POST /api/v1/incidents to uvicorn with ``workers`` processes."""
    with transaction(ctx.sessions) as session:
        key, _ = create_key(session, role="operator", now=ctx.clock.now(), label="benchmark")
    env = relay_env(work / "routing.toml", port)
    headers = {"Authorization": f"Bearer {key}"}
    # up, and warm: every worker builds the immediate path's caches at start
    with api_process(url, workers=workers, env=env, warm=True) as api:
        sent: dict[str, tuple[float, int | None]] = {}
        local = __import__("threading").local()

        def one(k: int) -> None:
            if not hasattr(local, "client"):
                local.client = httpx.Client(base_url=api.base, headers=headers, timeout=60)
            t0 = time.time()
            response = local.client.post(
                "/api/v1/incidents",
                json={"outcome": "loot", **attack(sites[k])},
            )
            response.raise_for_status()
            body = response.json()
            sent[body["incident"]["id"].split("/", 1)[1]] = (t0, body["alert_id"])

        with ThreadPoolExecutor(max_workers=c) as pool:
            list(pool.map(one, range(n)))
    # a report's deliveries: its alert's rows written in its transaction (same timestamp)
    started: dict[int, float] = {}
    with ctx.sessions() as session:
        created = dict(
            session.execute(
                select(Incident.incident_id, Incident.created_at).where(
                    Incident.incident_id.in_(list(sent))
                )
            ).all()
        )
        for delivery in session.scalars(select(Delivery)):
            for incident_id, (t0, alert_id) in sent.items():
                if delivery.alert_id == alert_id and delivery.created_at == created[incident_id]:
                    started[delivery.id] = t0
    return started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--incidents", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--database", default=None, help="SQLAlchemy URL (default: SQLite)")
    parser.add_argument(
        "--one-region",
        action="store_true",
        help="worst case: all incidents in one province (one spree, one alert to update)",
    )
    parser.add_argument(
        "--api",
        type=int,
        default=0,
        metavar="WORKERS",
        help="report through POST /api/v1/incidents to uvicorn with this many workers",
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="atm-risk-latency-"))
    url = args.database or f"sqlite:///{work / 'bench.sqlite3'}"
    rng = random.Random(0)
    if args.one_region:
        # worst case: every incident in one province, i.e. one spree, one alert row to update
        atms = ["atm_id,operator,lat,lon,site_type,country"]
        for k in range(200):
            atms.append(
                f"B{k},Bank,{52.0 + rng.random() * 0.2:.5f},{5.0 + rng.random() * 0.3:.5f},shop,NL"
            )
        atm_file, profile, operator = work / "atms.csv", "canonical", "bank"
        atm_file.write_text("\n".join(atms) + "\n", encoding="utf-8")
        sites = [(52.0 + (k % 20) * 0.01, 5.0 + (k // 20) * 0.03) for k in range(args.incidents)]
    else:
        # attacks at real machines anywhere in the Netherlands (the shipped Geldmaat list)
        atm_file, profile, operator = GELDMAAT, "geldmaat", "geldmaat"
        with gzip.open(GELDMAAT, "rt", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        picks = [rows[rng.randrange(len(rows))] for _ in range(args.incidents)]
        sites = [(float(r["latitude"]), float(r["longitude"])) for r in picks]
    (work / "routing.toml").write_text(routing_toml(operator), encoding="utf-8")
    relay, port, log_file, stop_file = start_relay(work)
    try:
        smtp = SmtpConfig(host="127.0.0.1", port=port, security="none", from_address="a@b.example")
        settings = Settings(
            database_url=url,
            model_path=None,
            alerts={"routing_file": work / "routing.toml", "smtp": smtp},
        )
        ctx = Context(settings=settings, clock=SystemClock())
        upgrade(ctx.engine)
        ingest_atms(ctx.sessions, path=atm_file, profile=profile, clock=ctx.clock)
        ingest_area(
            ctx.sessions,
            name="nl_provinces",
            path=ROOT / "data/nl_admin_cbs/provincies_2022.geojson",
            clock=ctx.clock,
        )
        path = f"the API ({args.api} uvicorn workers)" if args.api else "report_incident"
        print(
            f"database {url.split('://')[0]}, {args.incidents} SIMULATED incidents through "
            f"{path}, {args.concurrency} at a time, SMTP relay (own process) on 127.0.0.1:{port}"
        )
        wall = time.perf_counter()
        if args.api:
            started = report_through_api(
                ctx, url, work, port, sites, args.incidents, args.concurrency, args.api
            )
        else:
            started = report_in_process(ctx, settings, sites, args.incidents, args.concurrency)
        wall = time.perf_counter() - wall
        with ctx.sessions() as session:
            expected = len(session.scalars(select(Delivery.id)).all())
        deadline = time.time() + 30
        while time.time() < deadline and len(_received(log_file)) < expected:
            time.sleep(0.1)
        with ctx.sessions() as session:
            rows = session.scalars(select(Delivery)).all()
            by_mid = {r.message_id: r for r in rows}
        received: dict[str, int] = {}
        latencies = []
        for mid, at in _received(log_file):
            received[mid] = received.get(mid, 0) + 1
            row = by_mid.get(mid)
            if row is not None and row.id in started and received[mid] == 1:
                latencies.append(at - started[row.id])
        lost = sum(1 for r in rows if r.message_id not in received)
        duplicated = sum(n - 1 for n in received.values() if n > 1)
        unattributed = sum(1 for r in rows if r.id not in started)
        ctx.close()
    finally:
        stop_file.touch()
        relay.join(timeout=10)
    ms = np.array(latencies) * 1000
    if os.environ.get("LATENCY_TRACE"):
        order = sorted((started[r.id], r.id) for r in rows if r.id in started)
        at = dict(_received(log_file))
        t_first = order[0][0]
        for t0, pk in order:
            mid = next(r.message_id for r in rows if r.id == pk)
            print(f"start +{(t0 - t_first) * 1e3:7.0f} ms  latency {(at[mid] - t0) * 1e3:7.0f} ms")
    summary = {
        "database": url.split("://")[0],
        "path": f"api:{args.api}_workers" if args.api else "in_process",
        "incidents": args.incidents,
        "scenario": "one_region" if args.one_region else "netherlands",
        "concurrency": args.concurrency,
        "deliveries": len(rows),
        "messages_received": sum(received.values()),
        "latency_ms_p50": round(float(np.percentile(ms, 50)), 1) if len(ms) else None,
        "latency_ms_p95": round(float(np.percentile(ms, 95)), 1) if len(ms) else None,
        "latency_ms_p99": round(float(np.percentile(ms, 99)), 1) if len(ms) else None,
        "latency_ms_max": round(float(ms.max()), 1) if len(ms) else None,
        "lost": lost,
        "duplicated": duplicated,
        "unattributed": unattributed,
        "wall_s": round(wall, 2),
        # CPU of the reporting process per incident (in process only): the cost that sets
        # how many reports a core can take (Little's law: latency ~ concurrency x cost)
        "process_cpu_ms_per_incident": round(CPU_MS_PER_INCIDENT[0], 1)
        if CPU_MS_PER_INCIDENT
        else None,
        "simulated": True,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
