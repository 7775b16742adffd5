"""Load (issue #10): the API at a fixed rate of ranking requests while an incident burst and
a scoring run happen, on each backend.

One world per backend (benchmarks/loadgen.py): N SIMULATED machines of five simulated banks,
the provinces, one published run, a bank key and an operator key. The API runs as its own
uvicorn process with two workers, the SMTP relay (aiosmtpd) as another
(benchmarks/alert_latency.py). On one timeline:

- GET /api/v1/ranking, pages of 100 at random offsets, bank and operator keys alternating,
  open loop at ``rate`` for ``seconds`` and at least until ``AFTER_S`` after the scoring
  run (latency from the moment each request was due);
- from ``burst_at`` s: POST /api/v1/incidents, SIMULATED attacks on random machines of the
  bank, reported by the bank at ``burst_rate`` per second (the immediate alert path sends
  the gang_active alerts to the relay);
- when the burst is answered: ``atm-risk score`` in its own process over the same database
  (the real scoring run, as the scheduler starts it); the reported attacks change its
  ranking.

Figures per phase (before, during the burst, during the scoring run, after): requests,
errors, p50/p95/p99/max latency. Checks: every ranking page is exactly the slice of the
ranking of the run it names (never a mix of two runs: a page that is not counts as a
partially published ranking); every delivery written reached the relay once; no 5xx.
"""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from benchmarks.alert_latency import _received, relay_env, routing_toml, start_relay
from benchmarks.api_load import ranking_requests
from benchmarks.loadgen import Request, api_process, build, cpu_seconds, open_loop, summary
from sqlalchemy import select

from atm_risk.alerts.models import Delivery, DeliveryStatus
from atm_risk.app import Context
from atm_risk.config import Settings
from atm_risk.risk.models import RiskRun, RunStatus
from atm_risk.risk.service import ranking
from reliability.common import Options, Process, Scenario, part_result, scenario_table, timed

NAME = "API under load: ranking pages during an incident burst and a scoring run"
FULL = {"machines": 50_000, "rate": 200.0, "seconds": 60.0, "incidents": 50, "burst_rate": 10.0}
QUICK = {"machines": 2_000, "rate": 40.0, "seconds": 10.0, "incidents": 5, "burst_rate": 5.0}
BURST_AT_S = 0.2  # of the run's seconds: the burst starts after this share
AFTER_S = 3.0  # load goes on for at least this long after the scoring run
WORKERS = 2
BANK = "simulated-bank-0"
PHASES = ("before", "incident burst", "scoring run", "after")


def run(options: Options) -> dict[str, Any]:
    params = QUICK if options.quick else FULL
    scenarios = []
    for backend in options.backends:
        scenarios.append(timed(lambda b=backend: _scenario(options, b, params)))  # type: ignore[misc]
    figures = {s.backend: s.details.get("figures") for s in scenarios}
    return part_result(scenarios, figures=figures, params=params)


def _digest(pairs: Sequence[tuple[int, str]]) -> str:
    return hashlib.sha256(json.dumps(list(pairs)).encode()).hexdigest()[:16]


def _scenario(options: Options, backend: str, params: dict[str, Any]) -> Scenario:
    work = options.work_dir(f"load-{backend}")
    url = options.databases.new(backend, "load")
    world = build(url, int(params["machines"]), work)
    (work / "routing.toml").write_text(routing_toml(BANK), encoding="utf-8")
    relay, smtp_port, received_log, stop_relay = start_relay(work)
    env = relay_env(work / "routing.toml", smtp_port)
    rate, seconds = float(params["rate"]), float(params["seconds"])
    rng = random.Random(options.seed)
    # planned for up to 3x the time; sent until ``seconds`` have passed and the scoring run
    # has been over for AFTER_S
    gets = ranking_requests(world, int(rate * seconds * 3), seed=options.seed)
    bank_machines = [k for k in range(world.machines) if k % 5 == 0]
    posts = [
        Request(
            "POST",
            "/api/v1/incidents",
            {"Authorization": f"Bearer {world.bank_key}", "Content-Type": "application/json"},
            orjson.dumps(
                {
                    "operator": BANK,
                    "atm_id": f"SIM-{rng.choice(bank_machines):06d}",
                    "method": "explosive_solid",
                    "outcome": "loot",
                    "occurred_at": (datetime.now(UTC) - timedelta(minutes=5)).isoformat(),
                    "notes": "SIMULATED attack (reliability suite, load part)",
                    "simulated": True,
                }
            ),
            tag="incident",
        )
        for _ in range(int(params["incidents"]))
    ]
    pages: list[tuple[int, str, int, int, str]] = []  # run id, tag, offset, total, digest

    def page_ok(request: Request, status: int, body: bytes) -> str | None:
        if status != 200:
            return str(status)
        doc = orjson.loads(body)
        if not doc["items"]:
            return "empty page"
        offset = int(request.target.rsplit("offset=", 1)[1])
        pairs = [(i["rank"], i["atm_id"]) for i in doc["items"]]
        pages.append((doc["run_id"], request.tag, offset, doc["total"], _digest(pairs)))
        return None

    def created(request: Request, status: int, body: bytes) -> str | None:
        return None if status == 201 else str(status)

    marks: dict[str, float] = {}
    scorer_log = work / "score.log"
    scorer_exit: list[int | None] = []
    try:
        with api_process(url, workers=WORKERS, env=env, warm=True) as api:
            # warm up (10 s): connections, and the published run's ranking kept per scope
            open_loop(api.port, ranking_requests(world, 200, seed=0), rate=20.0)
            start = time.perf_counter() + 0.5
            burst_start = start + BURST_AT_S * seconds
            incident_results: list[Any] = []

            def burst_then_score() -> None:
                incident_results.extend(
                    open_loop(
                        api.port,
                        posts,
                        float(params["burst_rate"]),
                        check=created,
                        start=burst_start,
                        timeout_s=60,
                    )
                )
                marks["burst_end"] = time.perf_counter()
                cli = ["-c", "from atm_risk.cli import main; main()", "score"]
                scorer = Process(cli, scorer_log, env=env)
                scorer.env["ATM_RISK_DATABASE_URL"] = url
                scorer.env["ATM_RISK_MODEL_PATH"] = ""
                marks["score_start"] = time.perf_counter()
                scorer.start()
                assert scorer.proc is not None
                try:
                    scorer_exit.append(scorer.proc.wait(timeout=seconds * 3))
                except subprocess.TimeoutExpired:
                    scorer.kill()
                    scorer_exit.append(None)
                marks["score_end"] = time.perf_counter()

            def side_work() -> None:
                try:
                    burst_then_score()
                    end = max(start + seconds, marks["score_end"] + AFTER_S)
                    time.sleep(max(0.0, end - time.perf_counter()))
                finally:
                    stop.set()

            stop = threading.Event()

            side = threading.Thread(target=side_work, name="burst-and-score")
            server_cpu, client_cpu = cpu_seconds(api.process.pid), time.process_time()
            side.start()
            results = open_loop(api.port, gets, rate, check=page_ok, start=start, stop=stop)
            wall = time.perf_counter() - start
            side.join()
            server_cpu = cpu_seconds(api.process.pid) - server_cpu
            client_cpu = time.process_time() - client_cpu
            ctx = Context(settings=Settings(database_url=url, model_path=None))

            # every delivery written reaches the relay once: wait for the last ones while
            # the API (whose sender pool sends them) still runs
            deliveries, received = _settle(ctx, received_log, timeout_s=60)
        consistency = _check_pages(ctx, pages)
        ctx.close()
    finally:
        stop_relay.touch()
        relay.join(timeout=10)

    counts: dict[str, int] = {}
    for mid in received:
        counts[mid] = counts.get(mid, 0) + 1
    # lost: settled (sent, failed or suppressed) and never received; a delivery still
    # waiting for its next attempt is not lost but unsettled (the outbox retries it)
    lost = sum(1 for d in deliveries if d.status not in WAITING and d.message_id not in counts)
    duplicated = sum(n - 1 for n in counts.values() if n > 1)
    failed = sum(1 for d in deliveries if d.status == DeliveryStatus.FAILED)
    unsettled = sum(1 for d in deliveries if d.status in WAITING)

    def rel(key: str) -> float:
        return marks.get(key, start + wall) - start

    edges = [round(t, 1) for t in (BURST_AT_S * seconds, rel("burst_end"), rel("score_end"))]

    def phase(due: float) -> str:
        for name, edge in zip(PHASES, edges, strict=False):
            if due < edge:
                return name
        return PHASES[-1]

    by_phase = {name: summary([r for r in results if phase(r.due) == name]) for name in PHASES}
    all_gets = summary(results)
    server_errors = sum(1 for r in [*results, *incident_results] if r.status >= 500)
    scoring_ok = scorer_exit == [0] and "score_end" in marks
    figures = {
        "rate_per_s": rate,
        "seconds": round(wall, 1),
        "machines": world.machines,
        "simulated": True,
        "workers": WORKERS,
        "achieved_rate_per_s": round(len(results) / wall, 1),
        "ranking": all_gets,
        "phases": by_phase,
        "phase_bounds_s": dict(
            zip(PHASES, zip([0.0, *edges], [*edges, round(wall, 1)], strict=True), strict=True)
        ),
        "incidents": summary(incident_results),
        "scoring_run_s": round(rel("score_end") - rel("score_start"), 1),
        "scoring_exit": scorer_exit[0] if scorer_exit else None,
        "server_cpu_s": round(server_cpu, 1),
        "client_cpu_s": round(client_cpu, 1),
        **consistency,
        "deliveries": len(deliveries),
        "deliveries_failed": failed,
        "deliveries_unsettled": unsettled,
        "messages_received": len(received),
    }
    errors = all_gets["errors"] + summary(incident_results)["errors"]
    return Scenario(
        name=NAME,
        backend=backend,
        survived=errors == 0
        and consistency["pages_inconsistent"] == 0
        and lost == 0
        and duplicated == 0
        and failed == 0
        and unsettled == 0
        and scoring_ok,
        messages_lost=lost,
        messages_duplicated=duplicated,
        rankings_partial=consistency["pages_inconsistent"],
        server_errors=server_errors,
        cases=len(results) + len(incident_results),
        details={"figures": figures, "scorer_log": scorer_log.read_text(errors="replace")[-2000:]},
    )


WAITING = (DeliveryStatus.PENDING, DeliveryStatus.SENDING)


def _settle(ctx: Context, received_log: Any, timeout_s: float) -> tuple[list[Any], list[str]]:
    """(deliveries, Message-IDs received) once every delivery is settled and as many
    messages arrived, or after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        with ctx.sessions() as s:
            deliveries = list(s.execute(select(Delivery.message_id, Delivery.status)).all())
        received = [mid for mid, _ in _received(received_log)]
        settled = not any(d.status in WAITING for d in deliveries)
        if (settled and len(set(received)) >= len(deliveries)) or time.monotonic() > deadline:
            return deliveries, received
        time.sleep(0.2)


def _check_pages(ctx: Context, pages: list[tuple[int, str, int, int, str]]) -> dict[str, Any]:
    """Every page against the ranking of the run it names, read afresh from the database."""
    expected: dict[tuple[int, str, int], tuple[int, str]] = {}
    per_run: dict[int, int] = {}
    with ctx.sessions() as s:
        for run_id in sorted({p[0] for p in pages}):
            run = s.get(RiskRun, run_id)
            per_run[run_id] = sum(1 for p in pages if p[0] == run_id)
            if run is None or run.status != RunStatus.SUCCEEDED:
                continue
            rows = {"operator": ranking(s, run)}
            rows["bank"] = [r for r in rows["operator"] if r.operator_code == BANK]
            for _, tag, offset, _, _ in {p for p in pages if p[0] == run_id}:
                sliced = rows[tag][offset : offset + 100]
                expected[(run_id, tag, offset)] = (
                    len(rows[tag]),
                    _digest([(r.rank, r.atm_id) for r in sliced]),
                )
        runs = sorted(per_run)
        changed = None
        if len(runs) >= 2:
            first, last = (s.get(RiskRun, r) for r in (runs[0], runs[-1]))
            a = [r.atm_id for r in ranking(s, first)]
            b = [r.atm_id for r in ranking(s, last)]
            changed = sum(1 for x, y in zip(a, b, strict=False) if x != y)
    bad = sum(1 for run_id, tag, offset, total, digest in pages
              if expected.get((run_id, tag, offset)) != (total, digest))  # fmt: skip
    return {
        "pages_checked": len(pages),
        "pages_inconsistent": bad,
        "pages_per_run": {str(k): v for k, v in per_run.items()},
        "ranks_changed_between_runs": changed,
    }


def markdown(results: dict[str, Any]) -> str:
    params = results.get("params", {})
    scenarios = results.get("scenarios", [])
    lines = [
        f"{params.get('machines')} SIMULATED machines (five simulated banks) per backend; the "
        f"API as its own uvicorn process with {WORKERS} workers, on 127.0.0.1. GET "
        f"/api/v1/ranking (pages of 100 at random offsets, bank and operator keys alternating) "
        f"at {params.get('rate')} requests/s for at least {params.get('seconds')} s and until "
        f"the scoring run has been over for {AFTER_S} s, open loop: a "
        "request's latency counts from the moment it was due, so queueing is not hidden. "
        f"From {BURST_AT_S:.0%} of the run, {params.get('incidents')} SIMULATED attacks are "
        f"reported by the bank through POST /api/v1/incidents at {params.get('burst_rate')}/s "
        "(the gang_active alerts go to a real SMTP server, aiosmtpd, in its own process); when "
        "they are answered, `atm-risk score` runs over the same database in its own process. "
        "Every page is checked against the ranking of the run it names (read afresh from the "
        "database after the run): a page that is not exactly its slice would be a mix of two "
        "runs and counts as a partially published ranking. The client is one asyncio loop "
        "(benchmarks/loadgen.py); the CPU it and the server used is shown. Timings on this "
        "shared 2-core machine are noisy.",
        "",
        scenario_table(
            scenarios,
            ["server_errors", "rankings_partial", "messages_lost", "messages_duplicated"],
        ),
    ]
    for s in scenarios:
        f = s.get("details", {}).get("figures") or {}
        if not f:
            continue
        lines += [
            "",
            f"### {s['backend']}",
            "",
            f"Achieved {f['achieved_rate_per_s']} requests/s (target {f['rate_per_s']}); "
            f"server CPU {f['server_cpu_s']} s, client CPU {f['client_cpu_s']} s over "
            f"{f['seconds']} s. Scoring run: {f['scoring_run_s']} s (exit "
            f"{f['scoring_exit']}); pages per run id {f['pages_per_run']}, "
            f"{f['ranks_changed_between_runs']} ranks differ between the runs; "
            f"{f['pages_checked']} pages checked, {f['pages_inconsistent']} inconsistent. "
            f"Deliveries {f['deliveries']} ({f['deliveries_failed']} failed, "
            f"{f['deliveries_unsettled']} still waiting a minute after the load), messages "
            f"received {f['messages_received']}.",
            "",
            "| phase | from-to (s) | requests | errors | p50 ms | p95 ms | p99 ms | max ms |",
            "|---|---|---|---|---|---|---|---|",
        ]
        rows = [(name, f["phases"][name]) for name in PHASES] + [
            ("all ranking requests", f["ranking"]),
            ("POST /incidents", f["incidents"]),
        ]
        for name, p in rows:
            span = f["phase_bounds_s"].get(name)
            lines.append(
                f"| {name} | {'-'.join(map(str, span)) if span else ''} | {p.get('requests')} | "
                f"{p.get('errors')} | {p.get('latency_ms_p50', '')} | "
                f"{p.get('latency_ms_p95', '')} | {p.get('latency_ms_p99', '')} | "
                f"{p.get('latency_ms_max', '')} |"
            )
    return "\n".join(lines)
