"""Faults (issue #10): each one injected during real work, on SQLite and on PostgreSQL.

Every scenario gets a fresh migrated database (``options.databases.new``) holding the shipped
Geldmaat machines, the compiled news incidents and the Dutch provinces; a routing file that
sends ``gang_active`` to the bank, the police of the region and the operators, and
``pipeline_health`` to the operators; a real SMTP server (tests/smtp_server.py, aiosmtpd on
127.0.0.1) and, where needed, a real webhook receiver (tests/http_receiver.py); and real
``atm-risk scheduler`` / ``atm-risk serve`` processes started from the console script with a
settings file (short retry backoff and claim lease, so that a run takes seconds, not hours).
Attacks are reported by the driver through ``report_incident`` -- the immediate path the API
runs -- or through the API process itself (the API scenarios).

Counted at the end of each scenario, from the database and from what the receivers got:

* ``messages_lost``: a routed recipient of an alert version (the operators, the bank, the
  police of the alert's region, the operators' webhook) or any other delivery row whose
  message never arrived at the real receiver -- unless the delivery is ``failed`` and a
  ``pipeline_health`` message naming it reached the operators (not lost silently). A stored
  report that produced no alert counts its recipients as lost;
* ``messages_duplicated``: the same Message-ID (per recipient) or webhook idempotency key
  received more than once (delivery is at least once by design; receivers can drop these);
* ``rankings_partial``: a run ``succeeded`` without all its scores, scores of a run that did
  not succeed, or a visible ranking (read while the scenario ran) that was incomplete.

A scenario survives when it behaves as specified: nothing lost, no partial ranking, every
delivery in a final state by the end, the processes recovered, plus the scenario's own checks
(listed in ``details.checks``). Run alone: ``.venv/bin/python -m reliability.faults``.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import logging
import os
import random
import re
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from benchmarks.scheduler_faults import (
    GELDMAAT,
    NEWS,
    count,
    jobs_toml,
    scoring_victim,
    settle,
    visible_ranking_ok,
)
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url
from tests.http_receiver import HttpReceiver
from tests.smtp_server import SmtpTestServer, ThrowawayTls

from atm_risk.alerts.channels import verify
from atm_risk.alerts.models import Alert, AlertKind, Channel, Delivery, DeliveryStatus
from atm_risk.alerts.service import report_incident
from atm_risk.app import Context
from atm_risk.areas.service import ingest_area
from atm_risk.config import load_settings
from atm_risk.incidents.models import Incident
from atm_risk.ingest.run import ingest_atms, ingest_incidents
from atm_risk.risk.models import RiskRun, RiskScore, RunStatus
from atm_risk.scheduler.models import JobRun, JobRunStatus
from atm_risk.tenancy.keys import create_key
from reliability.common import (
    ROOT,
    Options,
    Process,
    Scenario,
    free_port,
    part_result,
    scenario_table,
    timed,
)

PROVINCES = ROOT / "data/nl_admin_cbs/provincies_2022.geojson"
ATM_RISK = str(Path(sys.executable).with_name("atm-risk"))
OPS = "oncall@atm-risk.example"
BANK = "security-desk@geldmaat.example"
POLICE = {
    "police-midden": (["Utrecht", "Flevoland", "Gelderland"], "rtic-midden@politie.example"),
    "police-rest": (
        [
            "Drenthe",
            "Friesland",
            "Groningen",
            "Limburg",
            "Noord-Brabant",
            "Noord-Holland",
            "Overijssel",
            "Zeeland",
            "Zuid-Holland",
        ],
        "rtic@politie.example",
    ),
}
WORLD_ATMS = 1500  # a scoring run takes about a second: long enough to be killed in
HOOK_SECRET = secrets.token_hex(16)  # the loopback receiver's, new every run
FINAL = {DeliveryStatus.SENT, DeliveryStatus.FAILED, DeliveryStatus.SUPPRESSED}
_HEALTH_LINE = re.compile(r"delivery (\d+) \(")


# --------------------------------------------------------------------------- the test bed


def police_address(region: str | None) -> str | None:
    for regions, address in POLICE.values():
        if region in regions:
            return address
    return None


def routing_toml(hook_url: str | None) -> str:
    police = "".join(
        f'\n[[receivers]]\nname = "{name}"\nrole = "police"\nregions = {json.dumps(regions)}\n'
        f'email = ["{address}"]\n'
        for name, (regions, address) in POLICE.items()
    )
    hooks = (
        f'webhooks = [{{ url = "{hook_url}", secret_env = "ATM_RISK_RELIABILITY_HOOK_SECRET" }}]'
        if hook_url
        else ""
    )
    return f"""version = 1

[[receivers]]
name = "geldmaat-security"
role = "bank"
operator = "geldmaat"
email = ["{BANK}"]
{police}
[[receivers]]
name = "operators"
role = "operator"
email = ["{OPS}"]
{hooks}

[[routes]]
kinds = ["gang_active"]
receivers = ["police-midden", "police-rest", "geldmaat-security", "operators"]

[[routes]]
kinds = ["pipeline_health"]
receivers = ["operators"]
"""


@dataclass
class Bed:
    """One scenario's world: database, receivers, settings file, processes."""

    options: Options
    name: str
    backend: str
    smtp: SmtpTestServer
    webhook: bool = False
    smtp_security: str = "none"
    ca_file: Path | None = None
    timeout_s: float = 2.0
    lease_s: float = 4.0
    score_every: int | None = None
    outbox_every: int = 1
    work: Path = field(init=False)
    url: str = field(init=False)
    hook: HttpReceiver | None = field(init=False, default=None)
    ctx: Context = field(init=False)
    env: dict[str, str] = field(init=False)
    points: list[tuple[float, float]] = field(init=False)
    processes: list[Process] = field(init=False, default_factory=list)
    report_errors: list[str] = field(init=False, default_factory=list)
    reported: int = field(init=False, default=0)
    partial_seen: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.work = fresh_dir(self.options, f"faults/{self.name}-{self.backend}")
        self.url = self.options.databases.new(self.backend, f"faults-{self.name}")
        atms = self.work / "atms.csv"
        self.points = write_world_atms(atms, 400 if self.options.quick else WORLD_ATMS)
        ctx = Context(settings=load_settings(None, database_url=self.url, model_path=None))
        try:
            ingest_atms(ctx.sessions, path=atms, profile="geldmaat", clock=ctx.clock)
            ingest_incidents(ctx.sessions, path=NEWS, profile="news", clock=ctx.clock)
            ingest_area(ctx.sessions, name="nl_provinces", path=PROVINCES, clock=ctx.clock)
        finally:
            ctx.close()
        if self.webhook:
            self.hook = HttpReceiver()
            self.hook.start()
        routing = self.work / "routing.toml"
        routing.write_text(routing_toml(self.hook.url("/atm-risk") if self.hook else None))
        config = self.work / "settings.toml"
        config.write_text(self.settings_toml(routing), encoding="utf-8")
        jobs = self.work / "jobs"
        jobs.mkdir(exist_ok=True)
        (jobs / "faults.toml").write_text(jobs_toml(self.score_every, self.outbox_every))
        self.env = {
            "ATM_RISK_CONFIG": str(config),
            "ATM_RISK_JOBS_DIR": str(jobs),
            "ATM_RISK_RELIABILITY_HOOK_SECRET": HOOK_SECRET,
        }
        os.environ["ATM_RISK_RELIABILITY_HOOK_SECRET"] = HOOK_SECRET  # the driver's sends
        self.ctx = Context(settings=load_settings(config))
        # reconciliation (after the suite) recomputes every recipient from this routing
        self.options.databases.describe(
            self.url, routing=routing, routed_after=self.ctx.clock.now()
        )

    def settings_toml(self, routing: Path) -> str:
        ca = f'ca_file = "{self.ca_file}"\n' if self.ca_file else ""
        return f"""database_url = "{self.url}"
model_path = ""

[alerts]
routing_file = "{routing}"
message_domain = "reliability.atm-risk.test"
retry_base_s = 0.5
retry_max_s = 2.0
max_attempts = 40
claim_lease_s = {self.lease_s}

[alerts.smtp]
host = "127.0.0.1"
port = {self.smtp.port}
security = "{self.smtp_security}"
from_address = "alerts@atm-risk.test"
timeout_s = {self.timeout_s}
local_hostname = "atm-risk.test"
{ca}"""

    # -- processes ---------------------------------------------------------------------

    def process(self, *args: str, label: str) -> Process:
        log = self.work / f"{label}-{len(self.processes)}.log"
        proc = Process([ATM_RISK, *args], log, env=self.env, python=False)
        self.processes.append(proc)
        return proc

    def scheduler(self, *, wait: bool = True) -> Process:
        """A started ``atm-risk scheduler``; ``wait``: until it has installed its jobs (else
        the work starts meanwhile: the outbox takes over whatever is due once it is up)."""
        proc = self.process("scheduler", label="scheduler").start()
        if wait:
            scheduler_ready(proc)
        return proc

    def api(self, port: int) -> Process:
        """A started ``atm-risk serve`` answering /healthz."""
        proc = self.process("serve", "--port", str(port), label="api").start()
        proc.wait_until(
            lambda: httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200,
            90,
            "/healthz",
        )
        return proc

    # -- work ----------------------------------------------------------------------------

    def report(self, *, send: bool = True) -> bool:
        """Report an attack at a machine's place, as the API does; False when refused."""
        lat, lon = self.points[self.reported % len(self.points)]
        self.reported += 1
        now = self.ctx.clock.now()
        fields = {
            "incident_id": f"{self.name}-{self.backend}-{self.reported}",
            "lat": lat,
            "lon": lon,
            "method": "explosive_solid",
            "geocode_precision": "exact",
            "occurred_at": (now - timedelta(minutes=5)).isoformat(),
        }
        try:
            report_incident(self.ctx.sessions, self.ctx.settings, self.ctx.clock, fields, send=send)
        except Exception as exc:  # the caller (an API client) got an error: not silent
            self.report_errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")
            return False
        return True

    def reports(self, n: int, spacing_s: float = 0.0, *, send: bool = True) -> None:
        for _ in range(n):
            self.report(send=send)
            if spacing_s:
                time.sleep(spacing_s)

    def schedulers_ready(self) -> None:
        for proc in self.processes:
            if proc.alive() and "scheduler" in proc.args:
                scheduler_ready(proc)

    def retrying(self, seconds: float) -> None:
        """Let the fault last ``seconds`` more once the schedulers are up (their outbox runs
        retry against it meanwhile)."""
        self.schedulers_ready()
        time.sleep(seconds)

    def watch_ranking(self) -> None:
        """Read the visible ranking once (as readers do) and remember an incomplete one."""
        try:
            if not visible_ranking_ok(self.ctx):
                self.partial_seen += 1
        except Exception:  # the database is away (a fault): nothing visible, nothing partial
            pass

    def delivery_states(self) -> Counter[str]:
        with self.ctx.sessions() as s:
            return Counter(str(v) for v in s.scalars(select(Delivery.status)))

    def settle(self, timeout: float = 60.0) -> bool:
        """Wait until every delivery is in a final state (sent, failed, suppressed)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                states = self.delivery_states()
            except Exception:
                states = Counter({"unknown": 1})
            if set(states) <= {str(s) for s in FINAL}:  # none at all: final too
                return True
            time.sleep(0.25)
        return False

    def close(self) -> None:
        for proc in self.processes:
            proc.stop()
        self.smtp.stop()
        if self.hook is not None:
            self.hook.stop()
        self.ctx.close()


def fresh_dir(options: Options, name: str) -> Path:
    """The scenario's folder (logs, settings, input files), emptied first."""
    shutil.rmtree(options.out_dir / name, ignore_errors=True)
    return options.work_dir(name)


def scheduler_ready(proc: Process) -> None:
    proc.wait_until(lambda: f"pid {proc.pid}: " in proc.output(), 90, "its jobs")


def write_world_atms(path: Path, n: int = WORLD_ATMS) -> list[tuple[float, float]]:
    """``n`` machines of the shipped Geldmaat list (a fixed random sample); returns attack
    places (40 of those machines, spread over the country)."""
    with gzip.open(GELDMAAT, "rt", encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    header, body = rows[0], random.Random(7).sample(rows[1:], min(n, len(rows) - 1))
    with path.open("w", encoding="utf-8", newline="") as out:
        csv.writer(out).writerows([header, *body])
    lat, lon = header.index("latitude"), header.index("longitude")
    picks = random.Random(10).sample(body, 40)
    return [(float(r[lat]), float(r[lon])) for r in picks]


# --------------------------------------------------------------------------- counting


def tally(bed: Bed, *, settled: bool) -> dict[str, Any]:
    """Lost, duplicated and partial, from the database and the receivers' records."""
    smtp_got = Counter(
        (_unfold(m.message_id), rcpt) for m in bed.smtp.messages for rcpt in m.rcpt_tos
    )
    hook_requests = bed.hook.requests if bed.hook else []
    hook_got = Counter(r.header("Idempotency-Key") for r in hook_requests)
    now = int(time.time())
    bad_signatures = sum(
        1
        for r in hook_requests
        if not verify(HOOK_SECRET.encode(), r.header("X-ATM-Risk-Signature") or "", r.body, now)
    )
    reported_failures = {
        int(n)
        for m in bed.smtp.messages
        if OPS in m.rcpt_tos and "pipeline health" in (m.subject or "")
        for n in _HEALTH_LINE.findall(m.message.get_body(("plain",)).get_content())
    }
    with bed.ctx.sessions() as s:
        deliveries = list(s.scalars(select(Delivery).order_by(Delivery.id)))
        alerts = {a.id: a for a in s.scalars(select(Alert))}
        reports = list(s.scalars(select(Incident.id).where(Incident.feed == "reports")))
        runs = list(s.scalars(select(RiskRun)))
        scores = dict(
            s.execute(select(RiskScore.run_id, func.count()).group_by(RiskScore.run_id)).all()
        )

    def arrived(d: Delivery) -> bool:
        if d.channel == Channel.EMAIL:
            return smtp_got[(_unfold(d.message_id), d.address)] > 0
        return hook_got[d.idempotency_key] > 0

    def accounted(d: Delivery) -> bool:
        return arrived(d) or (d.status == DeliveryStatus.FAILED and d.id in reported_failures)

    def expected(alert: Alert) -> set[str]:
        found = {OPS, *([bed.hook.url("/atm-risk")] if bed.hook else [])}
        if "geldmaat" in alert.operator_codes:
            found.add(BANK)
        if (police := police_address(alert.region)) is not None:
            found.add(police)
        return found

    by_version: dict[tuple[int, int, str], list[Delivery]] = {}
    for d in deliveries:
        by_version.setdefault((d.alert_id, d.alert_version, d.address), []).append(d)
    gang = [a for a in alerts.values() if a.kind == AlertKind.GANG_ACTIVE]
    alerted = {i["pk"] for a in gang for i in a.payload.get("incidents", [])}
    lost = 3 * sum(1 for pk in reports if pk not in alerted)  # ops, bank, police at least
    for a in gang:
        for version in range(1, a.version + 1):
            for address in expected(a):
                if not any(accounted(d) for d in by_version.get((a.id, version, address), [])):
                    lost += 1
    lost += sum(
        1
        for d in deliveries
        if alerts[d.alert_id].kind != AlertKind.GANG_ACTIVE
        and d.status != DeliveryStatus.SUPPRESSED
        and not accounted(d)
    )
    partial = bed.partial_seen + sum(
        1
        for r in runs
        if (r.status == RunStatus.SUCCEEDED and scores.get(r.id, 0) != r.n_scored)
        or (r.status != RunStatus.SUCCEEDED and scores.get(r.id, 0))
    )
    statuses = Counter(str(d.status) for d in deliveries)
    return {
        "messages_lost": lost,
        "messages_duplicated": sum(n - 1 for n in smtp_got.values() if n > 1)
        + sum(n - 1 for n in hook_got.values() if n > 1),
        "rankings_partial": partial,
        "details": {
            "reports_made": bed.reported,
            "reports_refused": len(bed.report_errors),
            "report_errors": sorted(set(bed.report_errors))[:5],
            "reports_stored": len(reports),
            "alerts": dict(Counter(str(a.kind) for a in alerts.values())),
            "deliveries": dict(sorted(statuses.items())),
            "attempts": sum(d.attempts for d in deliveries),
            "mails_received": sum(smtp_got.values()),
            "mails_in_clear": sum(1 for m in bed.smtp.messages if not m.tls),
            "webhooks_received": len(hook_requests),
            "webhook_bad_signatures": bad_signatures,
            "failures_reported_to_operators": len(reported_failures),
            "risk_runs": dict(Counter(str(r.status) for r in runs)),
            "settled": settled,
        },
    }


def _unfold(message_id: str | None) -> str:
    """A Message-ID as sent (a long header is folded over lines on the way)."""
    return "".join((message_id or "").split())


def finish(
    bed: Bed, checks: dict[str, bool], extra: dict[str, Any] | None = None, settle_s: float = 60
) -> Scenario:
    """Wait for the outbox to settle, stop the processes, count, and judge."""
    bed.schedulers_ready()
    settled = bed.settle(settle_s)
    stopped = [(p, p.stop()) for p in bed.processes if p.alive()]
    counts = tally(bed, settled=settled)
    details = counts.pop("details")
    checks = {
        **checks,
        "every delivery final": settled,
        "processes stopped cleanly on SIGTERM": all(clean_stop(p, c) for p, c in stopped),
        "no webhook with a bad signature": details["webhook_bad_signatures"] == 0,
    }
    details.update(extra or {})
    details["checks"] = checks
    survived = (
        all(checks.values()) and counts["messages_lost"] == 0 and counts["rankings_partial"] == 0
    )
    return Scenario(
        name=bed.name, backend=bed.backend, survived=survived, **counts, details=details
    )


def clean_stop(proc: Process, code: int | None) -> bool:
    """Exit 0 after SIGTERM; uvicorn (``serve``) shuts down gracefully, then re-raises the
    signal, so it exits by SIGTERM after logging that it finished."""
    if code == 0:
        return True
    return (
        "serve" in proc.args
        and code == -signal.SIGTERM
        and "Finished server process" in proc.output()
    )


def wait_for(condition: Callable[[], bool], timeout: float, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return True
        except Exception:
            pass
        time.sleep(step)
    return False


@contextmanager
def bed_of(options: Options, name: str, backend: str, **kwargs: Any) -> Iterator[Bed]:
    smtp = kwargs.pop("smtp", None) or SmtpTestServer()
    if not smtp.running:
        smtp.start()
    bed = Bed(options, name, backend, smtp, **kwargs)
    try:
        yield bed
    finally:
        bed.close()


def size(options: Options) -> int:
    """Reports per scenario."""
    return 4 if options.quick else 8


# --------------------------------------------------------------------------- SMTP and webhook


def smtp_down_then_up(options: Options, backend: str) -> Scenario:
    """The relay is down during a burst of reports, then comes back."""
    with bed_of(options, "smtp_down_then_up", backend) as bed:
        scheduler = bed.scheduler(wait=False)
        bed.smtp.stop()
        bed.reports(size(options), 0.2)
        bed.retrying(2.0)  # the scheduler retries against the closed port meanwhile
        down_attempts = sum(1 for _ in bed.smtp.messages)
        bed.smtp.start()
        return finish(
            bed,
            {
                "nothing arrived while down": down_attempts == 0,
                "scheduler alive": scheduler.alive(),
            },
        )


def smtp_slow(options: Options, backend: str) -> Scenario:
    """The relay answers DATA after 3 s (the client gives up after 2 s), then after 1 s."""
    with bed_of(options, "smtp_slow", backend, timeout_s=2.0) as bed:
        scheduler = bed.scheduler(wait=False)
        bed.smtp.delay_s = 3.0
        bed.reports(size(options) // 2, 0.1)
        bed.retrying(2.0)
        bed.smtp.delay_s = 1.0  # slow but within the client's timeout
        bed.reports(size(options) // 2, 0.1)
        return finish(
            bed, {"scheduler alive": scheduler.alive()}, {"delays_s": [3.0, 1.0], "timeout_s": 2.0}
        )


def smtp_4xx_then_accept(options: Options, backend: str) -> Scenario:
    """RCPT answered 451 for a while, then DATA answered 452 a few times, then accepted."""
    with bed_of(options, "smtp_4xx_then_accept", backend) as bed:
        scheduler = bed.scheduler(wait=False)
        bed.smtp.rcpt_reply = "451 4.3.0 Try again later"
        bed.reports(size(options), 0.1)
        bed.retrying(1.5)
        bed.smtp.queue_data_replies(*["452 4.3.1 Insufficient system storage"] * 5)
        bed.smtp.rcpt_reply = None
        result = finish(bed, {"scheduler alive": scheduler.alive()})
        result.details["refused_with_4xx"] = len(bed.smtp.rejections)
        result.details["checks"]["the relay refused with 4xx"] = len(bed.smtp.rejections) > 0
        result.survived = result.survived and len(bed.smtp.rejections) > 0
        return result


def smtp_5xx_permanent(options: Options, backend: str) -> Scenario:
    """The bank's mailbox answers 550: its deliveries fail for good and the operators are told
    by a pipeline_health message naming each failed delivery."""
    with bed_of(options, "smtp_5xx_permanent", backend) as bed:
        scheduler = bed.scheduler(wait=False)
        bed.smtp.rcpt_replies[BANK] = "550 5.1.1 Mailbox unavailable"
        bed.reports(size(options), 0.1)
        result = finish(bed, {"scheduler alive": scheduler.alive()})
        with bed.ctx.sessions() as s:
            failed = s.scalar(
                select(func.count())
                .select_from(Delivery)
                .where(Delivery.status == DeliveryStatus.FAILED, Delivery.address == BANK)
            )
        ok = bool(failed) and result.details["failures_reported_to_operators"] >= (failed or 0)
        result.details["checks"]["failed deliveries named to the operators"] = ok
        result.survived = result.survived and ok
        return result


def smtp_tls_broken(options: Options, backend: str) -> Scenario:
    """STARTTLS is required. First the relay presents a certificate of an unknown CA, then it
    stops offering STARTTLS (a stripping man in the middle); both must be recorded as
    configuration errors with nothing sent in clear text. Then the relay is fixed."""
    tls_dir = fresh_dir(options, f"faults/tls-{backend}")  # beside the scenario folder
    good = ThrowawayTls.create(tls_dir, name="good-ca.pem")
    rogue = ThrowawayTls.create(tls_dir, name="rogue-ca.pem")
    smtp = SmtpTestServer(mode="starttls", tls=rogue)
    smtp.start()
    with bed_of(
        options,
        "smtp_tls_broken",
        backend,
        smtp=smtp,
        smtp_security="starttls",
        ca_file=good.ca_file,
    ) as bed:
        scheduler = bed.scheduler(wait=False)
        n = size(options)
        bed.reports(n // 2, 0.1)
        bed.retrying(1.5)
        bed.smtp.stop()
        bed.smtp.mode = "plain"  # no STARTTLS offered at all
        bed.smtp.start()
        bed.reports(n - n // 2, 0.1)
        bed.retrying(1.5)
        in_clear = len(bed.smtp.messages)
        bed.smtp.stop()
        bed.smtp.mode, bed.smtp.tls = "starttls", good
        bed.smtp.start()
        result = finish(bed, {"scheduler alive": scheduler.alive()})
        with bed.ctx.sessions() as s:
            histories = list(s.scalars(select(Delivery.history)))
        config_errors = sum(
            1 for h in histories for a in h if str(a.get("detail", "")).startswith("configuration")
        )
        result.details["configuration_errors_recorded"] = config_errors
        checks = {
            "configuration errors recorded": config_errors > 0,
            "nothing accepted while TLS was broken": in_clear == 0,
            "every message arrived over TLS": result.details["mails_in_clear"] == 0,
        }
        result.details["checks"].update(checks)
        result.survived = result.survived and all(checks.values())
        return result


def webhook_down_then_up(options: Options, backend: str) -> Scenario:
    """The operators' webhook receiver is down during a burst, then comes back."""
    with bed_of(options, "webhook_down_then_up", backend, webhook=True) as bed:
        scheduler = bed.scheduler(wait=False)
        assert bed.hook is not None
        bed.hook.stop()
        bed.reports(size(options), 0.2)
        bed.retrying(2.0)
        bed.hook.start()
        return finish(bed, {"scheduler alive": scheduler.alive()})


# --------------------------------------------------------------------------- database faults


def db_connection_lost(options: Options, backend: str) -> Scenario:
    """PostgreSQL: every connection of the application to its database is terminated three
    times (pg_terminate_backend) during a burst of reports and deliveries. SQLite has no
    server connection to lose: a connection outside the application holds the database's
    write lock (BEGIN EXCLUSIVE) for 4 s during the burst instead, so every writer waits.
    The claim lease is 10 s here: a stall longer than the lease (60 s by default) lets a
    second dispatcher resend a message whose outcome the first could not record yet."""
    with bed_of(options, "db_connection_lost", backend, lease_s=10.0) as bed:
        scheduler = bed.scheduler()
        bed.smtp.delay_s = 0.2
        n = size(options)
        done = threading.Event()
        terminated: list[int] = []

        def fault() -> None:
            if backend == "postgresql":
                database = make_url(bed.url).database
                for _ in range(2 if options.quick else 3):
                    time.sleep(0.8)
                    with options.databases.admin().connect() as conn:
                        terminated.append(
                            len(
                                conn.execute(
                                    text(
                                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                        "WHERE datname = :db AND pid <> pg_backend_pid()"
                                    ),
                                    {"db": database},
                                ).all()
                            )
                        )
            else:
                time.sleep(0.8)
                path = make_url(bed.url).database
                conn = sqlite3.connect(str(path), timeout=30, isolation_level=None)
                try:
                    conn.execute("BEGIN EXCLUSIVE")
                    terminated.append(1)
                    time.sleep(2.0 if options.quick else 4.0)
                    conn.execute("ROLLBACK")
                finally:
                    conn.close()
            done.set()

        thread = threading.Thread(target=fault, daemon=True)
        thread.start()
        while not done.is_set():
            bed.report()
            time.sleep(0.15)
        thread.join()
        bed.reports(max(2, n // 3), 0.1)  # after the fault: the system works again
        after = bed.report_errors[:]
        recovered = bed.report()  # one more: must be accepted
        result = finish(
            bed,
            {
                "scheduler alive": scheduler.alive(),
                "reports accepted after the fault": recovered,
                "fault injected": bool(terminated) and (backend == "sqlite" or sum(terminated) > 0),
            },
            {"connections_terminated": terminated, "errors_during_fault": len(after)},
        )
        return result


def pg_cluster(url: str) -> tuple[str, str] | None:
    """(version, name) of the local cluster listening on the URL's port, if any."""
    try:
        lines = subprocess.run(
            ["pg_lsclusters", "--no-header"], capture_output=True, text=True, check=True
        ).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return None
    port = str(make_url(url).port or 5432)
    for line in lines:
        parts = line.split()
        if len(parts) >= 3 and parts[2] == port:
            return parts[0], parts[1]
    return None


def postgres_restart(options: Options, backend: str) -> Scenario:
    """The PostgreSQL server restarts (pg_ctlcluster ... restart) in the middle of a scoring
    run, with reports and deliveries going on."""
    cluster = pg_cluster(options.postgres_url)
    with bed_of(options, "postgres_restart", backend, score_every=3) as bed:
        if cluster is None:
            return Scenario(
                name=bed.name,
                backend=backend,
                survived=False,
                details={"error": "no local cluster found with pg_lsclusters"},
            )
        scheduler = bed.scheduler()
        bed.reports(3, 0.1)
        caught = wait_for(lambda: running_risk_runs(bed) > 0, 30)
        started = time.monotonic()
        restart = subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", cluster[0], cluster[1], "restart"],
            capture_output=True,
            text=True,
        )
        restart_s = time.monotonic() - started
        bed.reports(size(options), 0.2)
        ran_after = new_run_succeeded(bed, 40)
        for _ in range(20):
            bed.watch_ranking()
        accepted = bed.report()
        return finish(
            bed,
            {
                "restarted during a scoring run": caught and restart.returncode == 0,
                "scheduler alive": scheduler.alive(),
                "a scoring run succeeded after the restart": ran_after,
                "reports accepted after the restart": accepted,
            },
            {
                "restart_s": round(restart_s, 1),
                "restart_output": restart.stderr[-300:],
                "scheduler": count(bed.ctx, 0, 0, 0),
            },
        )


def rows_where(bed: Bed, model: Any, condition: Any) -> int:
    """How many rows of ``model`` meet ``condition`` (raises while the database is away)."""
    with bed.ctx.sessions() as s:
        return int(s.scalar(select(func.count()).select_from(model).where(condition)) or 0)


def running_risk_runs(bed: Bed) -> int:
    return rows_where(bed, RiskRun, RiskRun.status == RunStatus.RUNNING)


def succeeded_runs(bed: Bed) -> int:
    """Scoring runs published so far (raises while the database is away)."""
    return rows_where(bed, RiskRun, RiskRun.status == RunStatus.SUCCEEDED)


def new_run_succeeded(
    bed: Bed, timeout: float, meanwhile: Callable[[], None] | None = None
) -> bool:
    """Whether a scoring run succeeds within ``timeout`` s from now (counted from the first
    answer of the database, which may be away when this starts)."""
    deadline = time.monotonic() + timeout
    before: int | None = None
    while time.monotonic() < deadline:
        if meanwhile is not None:
            meanwhile()
        try:
            n = succeeded_runs(bed)
        except Exception:
            n = None
        if n is not None and before is None:
            before = n
        elif n is not None and before is not None and n > before:
            return True
        time.sleep(0.2)
    return False


# --------------------------------------------------------------------------- process kills


def kills(options: Options, process: str = "scheduler") -> int:
    """SIGKILLs per scenario: two of a scheduler, one of the API (its restart costs most)."""
    return 1 if options.quick or process == "api" else 2


def scheduler_kill_scoring(options: Options, backend: str) -> Scenario:
    """SIGKILL the scheduler in the middle of a scoring run (its run row committed as running,
    scores not yet), restart it; the heartbeat marks the run abandoned and re-runs it. The
    next kill waits until that re-run is over (a killed run is re-run once, by policy)."""
    with bed_of(options, "scheduler_kill_scoring", backend, score_every=3) as bed:
        proc = bed.scheduler()
        killed = 0
        deadline = time.monotonic() + 60
        while killed < kills(options) and time.monotonic() < deadline:
            pid = proc.pid
            assert pid is not None
            if not recovery_pending(bed) and scoring_victim(bed.ctx, {pid: proc}) is not None:
                proc.kill()
                killed += 1
                time.sleep(0.5)
                proc = bed.scheduler()
            bed.watch_ranking()
            time.sleep(0.01)
        live = {p.pid for p in bed.processes if p.alive() and p.pid is not None}
        settle(bed.ctx, live, timeout=40)
        ran_after = new_run_succeeded(bed, 30)
        wait_for(lambda: not recovery_pending(bed), 60, 0.2)  # the re-runs finish
        runs = count(bed.ctx, killed, 0, killed)
        return finish(
            bed,
            {
                "killed mid-scoring": killed == kills(options),
                "killed runs recovered": runs["missed_runs_recovered"] >= killed
                and runs["left_abandoned"] == 0,
                "no run executed twice": runs["duplicate_runs"] == 0,
                "scoring goes on": ran_after,
            },
            {"kills": killed, "scheduler": runs},
        )


def recovery_pending(bed: Bed) -> bool:
    """A killed score run waits for its re-run, or is being re-run."""
    with bed.ctx.sessions() as s:
        return bool(
            s.scalar(
                select(func.count())
                .select_from(JobRun)
                .where(
                    JobRun.job == "score",
                    (JobRun.status == JobRunStatus.ABANDONED)
                    | ((JobRun.status == JobRunStatus.RUNNING) & JobRun.recovered_at.is_not(None)),
                )
            )
        )


def sending_claims(bed: Bed) -> int:
    return rows_where(bed, Delivery, Delivery.status == DeliveryStatus.SENDING)


def scheduler_kill_delivery(options: Options, backend: str) -> Scenario:
    """SIGKILL the scheduler while its outbox job is sending (the relay takes 2 s per message),
    restart it; the claims' leases expire and the deliveries are sent by the new process. A
    message the relay had received whole before the kill is sent again (at least once)."""
    with bed_of(options, "scheduler_kill_delivery", backend) as bed:
        proc = bed.scheduler()
        bed.smtp.delay_s = 2.0
        bed.reports(size(options) // 2, send=False)  # in the outbox, for the scheduler
        killed = 0
        deadline = time.monotonic() + 60
        while killed < kills(options) and time.monotonic() < deadline:
            pid = proc.pid
            if sending_claims(bed) and outbox_running_in(bed, pid):
                proc.kill()
                killed += 1
                time.sleep(0.5)
                proc = bed.scheduler()
                if killed < kills(options):
                    bed.reports(size(options) // 2, send=False)
            time.sleep(0.02)
        bed.smtp.delay_s = 0.0
        return finish(
            bed,
            {"killed while sending": killed == kills(options), "scheduler alive": proc.alive()},
            {"kills": killed},
        )


def outbox_running_in(bed: Bed, pid: int | None) -> bool:
    with bed.ctx.sessions() as s:
        return bool(
            s.scalar(
                select(func.count())
                .select_from(JobRun)
                .where(
                    JobRun.job == "outbox", JobRun.status == JobRunStatus.RUNNING, JobRun.pid == pid
                )
            )
        )


def operator_key(bed: Bed) -> str:
    with bed.ctx.sessions.begin() as s:
        key, _ = create_key(s, role="operator", now=bed.ctx.clock.now(), label="reliability")
    return key


def api_ranking_ok(port: int, key: str, bed: Bed) -> bool | None:
    """The API's ranking is complete (its total equals its run's n_scored); None when the
    API does not answer (killed) or no run is published yet."""
    try:
        r = httpx.get(
            f"http://127.0.0.1:{port}/api/v1/ranking",
            params={"limit": 1},
            headers={"Authorization": f"Bearer {key}"},
            timeout=10,
        )
    except httpx.HTTPError:
        return None
    if r.status_code == 404:
        return None
    doc = r.json()
    with bed.ctx.sessions() as s:
        run = s.get(RiskRun, doc["run_id"])
        return (
            run is not None and run.status == RunStatus.SUCCEEDED and doc["total"] == run.n_scored
        )


def api_kill_scoring(options: Options, backend: str) -> Scenario:
    """SIGKILL the API while a scoring run is in progress (the scheduler scores every 3 s and
    clients read the ranking through the API all along), restart it."""
    with bed_of(options, "api_kill_scoring", backend, score_every=3) as bed:
        scheduler = bed.scheduler(wait=False)  # starts while the API does
        port = free_port()
        key = operator_key(bed)
        api = bed.api(port)
        bed.schedulers_ready()
        killed = reads = 0
        deadline = time.monotonic() + 60
        while killed < kills(options, "api") and time.monotonic() < deadline:
            ok = api_ranking_ok(port, key, bed)
            reads += ok is not None
            bed.partial_seen += ok is False
            if running_risk_runs(bed):
                api.kill()
                killed += 1
                time.sleep(0.5)
                api = bed.api(port)
            time.sleep(0.02)

        def read_ranking() -> None:  # through the API while the next run is published
            nonlocal reads
            ok = api_ranking_ok(port, key, bed)
            bed.partial_seen += ok is False
            reads += ok is not None

        new_run_succeeded(bed, 30, read_ranking)
        final = api_ranking_ok(port, key, bed)
        bed.partial_seen += final is False
        return finish(
            bed,
            {
                "killed during scoring": killed == kills(options, "api"),
                "API answers after restart with a complete ranking": final is True,
                "scheduler alive": scheduler.alive(),
            },
            {"kills": killed, "ranking_reads": reads},
        )


def api_kill_delivery(options: Options, backend: str) -> Scenario:
    """SIGKILL the API while it sends the messages of an attack reported to it (the relay
    takes 2 s per message), restart it; the scheduler's outbox takes the claims over after
    their lease. A message the relay had received whole before the kill is kept by the relay
    and sent again after the lease (at least once): a duplicate with the same Message-ID."""
    with bed_of(options, "api_kill_delivery", backend) as bed:
        scheduler = bed.scheduler(wait=False)  # starts while the API does
        port = free_port()
        key = operator_key(bed)
        api = bed.api(port)
        bed.schedulers_ready()
        bed.smtp.delay_s = 2.0
        killed = 0
        answers: list[int | str] = []
        for k in range(kills(options, "api")):
            lat, lon = bed.points[k]

            def post(lat: float = lat, lon: float = lon) -> None:
                try:
                    r = httpx.post(
                        f"http://127.0.0.1:{port}/api/v1/incidents",
                        json={"lat": lat, "lon": lon, "method": "explosive_solid"},
                        headers={"Authorization": f"Bearer {key}"},
                        timeout=30,
                    )
                    answers.append(r.status_code)
                except httpx.HTTPError as exc:
                    answers.append(type(exc).__name__)

            thread = threading.Thread(target=post, daemon=True)
            thread.start()
            if wait_for(lambda t=thread: sending_claims(bed) > 0 and t.is_alive(), 30):
                time.sleep(0.5)  # the API is inside the relay's DATA wait
                api.kill()
                killed += 1
            thread.join(timeout=30)
            api = bed.api(port)
        bed.smtp.delay_s = 0.0
        return finish(
            bed,
            {
                "killed while sending": killed == kills(options, "api"),
                "API answers after restart": api.alive(),
                "scheduler alive": scheduler.alive(),
            },
            {"kills": killed, "client_saw": answers},
        )


# --------------------------------------------------------------------------- full disk


@contextmanager
def small_disk(megabytes: int) -> Iterator[Path]:
    """A tmpfs of this size (needs root); unmounted afterwards."""
    where = Path(tempfile.mkdtemp(prefix="atm-risk-fulldisk-"))
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        where.rmdir()
        raise PermissionError(f"cannot mount a tmpfs: {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)
        with suppress(OSError):
            where.rmdir()


def fill(folder: Path) -> Path:
    """Write a file until the filesystem is full."""
    path = folder / "filler.bin"
    chunk = b"\0" * 65536
    with suppress(OSError), path.open("wb") as fh:
        while True:
            fh.write(chunk)
            fh.flush()
    return path


def disk_full(options: Options, backend: str) -> Scenario:
    """The SQLite file's filesystem fills up during a scoring run, then during an ingest: each
    must fail with a clear error and publish nothing partial; after space is freed both
    succeed."""
    name = "disk_full"
    work = fresh_dir(options, f"faults/{name}-{backend}")
    source = options.databases.new("sqlite", f"faults-{name}")
    atms = work / "atms.csv"
    write_world_atms(atms)
    ctx = Context(settings=load_settings(None, database_url=source, model_path=None))
    try:
        ingest_atms(ctx.sessions, path=atms, profile="geldmaat", clock=ctx.clock)
        ingest_incidents(ctx.sessions, path=NEWS, profile="news", clock=ctx.clock)
        with ctx.engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        ctx.close()
    more = work / "more-atms.csv"
    more.write_text(
        "atm_id,operator,lat,lon,site_type,country\n"
        + "".join(f"NEW-{k},NewBank,52.{k:04d},5.{k:04d},shop,NL\n" for k in range(1, 2001)),
        encoding="utf-8",
    )
    src_path = Path(make_url(source).database or "")
    megabytes = int(src_path.stat().st_size / 1e6) + 24
    try:
        disk = small_disk(megabytes)
        root = disk.__enter__()
    except PermissionError as exc:
        return Scenario(name=name, backend=backend, survived=False, details={"error": str(exc)})
    try:
        db = root / "atm-risk.sqlite3"
        shutil.copyfile(src_path, db)
        url = f"sqlite:///{db}"
        env = {"ATM_RISK_DATABASE_URL": url, "ATM_RISK_MODEL_PATH": ""}
        out: dict[str, Any] = {"filesystem_mb": megabytes}

        def cli(*args: str, label: str) -> Process:
            return Process([ATM_RISK, *args], work / f"{label}.log", env=env, python=False)

        def runs() -> list[tuple[str, int, int]]:
            conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
            try:
                return conn.execute(
                    "SELECT r.status, r.n_scored, (SELECT count(*) FROM risk_scores s "
                    "WHERE s.run_id = r.id) FROM risk_runs r"
                ).fetchall()
            finally:
                conn.close()

        # 1. scoring while the disk fills up (again if the run beat the filler)
        filled_during_run = False
        filler = root / "filler.bin"
        for attempt in range(3):
            score = cli("score", label=f"score-full-{attempt}").start()
            if wait_for(lambda: any(s == "running" for s, _, _ in runs()), 60, 0.005):
                filler = fill(root)
            score_code = score.proc.wait(timeout=120) if score.proc else None
            if score_code != 0 and filler.exists():
                filled_during_run = True
                break
            filler.unlink(missing_ok=True)
        score_error = score.tail(5)
        partial_after_score = partial_runs(runs())
        published_failed = [r for r in runs() if r[0] == "succeeded"]
        # 2. ingest while the disk is full
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            atms_before = conn.execute("SELECT count(*) FROM atms").fetchone()[0]
        ingest = cli("ingest", "atms", str(more), label="ingest-full").start()
        ingest_code = ingest.proc.wait(timeout=120) if ingest.proc else None
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            atms_full = conn.execute("SELECT count(*) FROM atms").fetchone()[0]
        ingest_error = ingest.tail(5)
        # 3. space freed: both succeed
        filler.unlink(missing_ok=True)
        rescore = cli("score", label="score-freed").start()
        reingest = cli("ingest", "atms", str(more), label="ingest-freed").start()  # meanwhile
        rescore_code = rescore.proc.wait(timeout=120) if rescore.proc else None
        reingest_code = reingest.proc.wait(timeout=120) if reingest.proc else None
        final_runs = runs()
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            atms_after = conn.execute("SELECT count(*) FROM atms").fetchone()[0]
        partial = partial_after_score + partial_runs(final_runs)
        clear = re.compile(r"^error: out of disk space", re.M)
        checks = {
            "disk filled during the scoring run": filled_during_run,
            "scoring failed": score_code not in (0, None),
            "scoring error is clear": bool(clear.search(score_error))
            and "Traceback" not in score.output(),
            "no run published while full": not published_failed,
            "ingest failed": ingest_code not in (0, None),
            "ingest error is clear": bool(clear.search(ingest_error))
            and "Traceback" not in ingest.output(),
            "ingest wrote nothing while full": atms_full == atms_before,
            "scoring succeeds after freeing space": rescore_code == 0
            and any(s == "succeeded" for s, _, _ in final_runs),
            "ingest succeeds after freeing space": reingest_code == 0
            and atms_after == atms_before + 2000,
        }
        out.update(
            {
                "score_error": score_error[-300:],
                "ingest_error": ingest_error[-300:],
                "runs": [list(r) for r in final_runs],
                "checks": checks,
            }
        )
        return Scenario(
            name=name,
            backend=backend,
            survived=all(checks.values()) and partial == 0,
            rankings_partial=partial,
            details=out,
        )
    finally:
        disk.__exit__(None, None, None)


def partial_runs(rows: list[tuple[str, int, int]]) -> int:
    return sum(
        1
        for status, n_scored, n in rows
        if (status == "succeeded" and n != n_scored) or (status != "succeeded" and n)
    )


# --------------------------------------------------------------------------- the part

SCENARIOS: dict[str, Callable[[Options, str], Scenario]] = {
    "smtp_down_then_up": smtp_down_then_up,
    "smtp_slow": smtp_slow,
    "smtp_4xx_then_accept": smtp_4xx_then_accept,
    "smtp_5xx_permanent": smtp_5xx_permanent,
    "smtp_tls_broken": smtp_tls_broken,
    "webhook_down_then_up": webhook_down_then_up,
    "db_connection_lost": db_connection_lost,
    "postgres_restart": postgres_restart,
    "scheduler_kill_scoring": scheduler_kill_scoring,
    "scheduler_kill_delivery": scheduler_kill_delivery,
    "api_kill_scoring": api_kill_scoring,
    "api_kill_delivery": api_kill_delivery,
    "disk_full": disk_full,
}
ONLY_ON = {"postgres_restart": "postgresql", "disk_full": "sqlite"}
# The quick run (tests): no server restart -- it would break whatever else uses the server.
QUICK = ("smtp_4xx_then_accept", "db_connection_lost")


def plan(options: Options, names: list[str] | None = None) -> list[tuple[str, str]]:
    chosen = names or list(QUICK if options.quick else SCENARIOS)
    return [
        (name, backend)
        for backend in options.backends
        for name in chosen
        if ONLY_ON.get(name, backend) == backend
    ]


def run(options: Options, names: list[str] | None = None) -> dict[str, Any]:
    # the relay's own log of the broken TLS handshakes we cause on purpose
    logging.getLogger("mail.log").setLevel(logging.CRITICAL)
    scenarios = []
    for name, backend in plan(options, names):
        try:
            scenario = timed(lambda n=name, b=backend: SCENARIOS[n](options, b))
        except Exception as exc:
            scenario = Scenario(
                name=name,
                backend=backend,
                survived=False,
                details={"error": f"{type(exc).__name__}: {exc}"[:2000]},
            )
        print(line(scenario), flush=True)
        scenarios.append(scenario)
    return part_result(scenarios, quick=options.quick)


def line(s: Scenario) -> str:
    failed = [k for k, ok in s.details.get("checks", {}).items() if not ok]
    return (
        f"  faults {s.name} ({s.backend}): {'survived' if s.survived else 'NOT SURVIVED'}, "
        f"lost {s.messages_lost}, duplicated {s.messages_duplicated}, "
        f"partial {s.rankings_partial}, {s.seconds:.0f} s"
        + (f"; failed checks: {', '.join(failed)}" if failed else "")
        + (f"; error: {s.details['error']}" if "error" in s.details else "")
    )


FACTS = {  # detail -> how the table's "what happened" column names it
    "kills": "SIGKILLs",
    "reports_refused": "reports refused with an error",
    "refused_with_4xx": "4xx replies",
    "configuration_errors_recorded": "configuration errors recorded",
    "failures_reported_to_operators": "failures named to operators",
    "connections_terminated": "connections terminated",
    "restart_s": "restart took s",
    "ranking_reads": "rankings read via the API",
    "webhooks_received": "webhooks received",
}


def facts(details: dict[str, Any]) -> str:
    out = [f"{label} {details[key]}" for key, label in FACTS.items() if details.get(key)]
    if details.get("risk_runs"):
        out.append("risk runs " + ", ".join(f"{k} {v}" for k, v in details["risk_runs"].items()))
    recovered = (details.get("scheduler") or {}).get("missed_runs_recovered")
    if recovered:
        out.append(f"killed runs recovered {recovered}")
    return "; ".join(out)


def markdown(results: dict[str, Any]) -> str:
    rows = results.get("scenarios", [])
    table = scenario_table(
        [
            {
                **r,
                "reports": r["details"].get("reports_stored", ""),
                "deliveries": sum(r["details"].get("deliveries", {}).values()),
                "attempts": r["details"].get("attempts", ""),
                "what happened": facts(r["details"]),
            }
            for r in rows
        ],
        [
            "messages_lost",
            "messages_duplicated",
            "rankings_partial",
            "reports",
            "deliveries",
            "attempts",
            "seconds",
            "what happened",
        ],
    )
    failed = [
        f"- {r['name']} ({r['backend']}): "
        + ", ".join(k for k, ok in r["details"].get("checks", {}).items() if not ok)
        + (f" {r['details']['error']}" if "error" in r["details"] else "")
        for r in rows
        if not r["survived"]
    ]
    described = "\n".join(
        f"- **{name}**{' (' + ONLY_ON[name] + ' only)' if name in ONLY_ON else ''}: "
        + " ".join((fn.__doc__ or "").split())
        for name, fn in SCENARIOS.items()
        if any(r["name"] == name for r in rows)
    )
    method = (__doc__ or "").split("\n\n", 1)[1].strip().replace("``", "`")
    return "\n\n".join(
        part
        for part in (
            method,
            table,
            "Not survived:\n\n" + "\n".join(failed) if failed else "",
            "What each scenario does:\n\n" + described,
        )
        if part
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="*", help=f"some of {', '.join(SCENARIOS)}")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    options = Options(backends=args.backends.split(","), quick=args.quick)
    try:
        results = run(options, args.scenarios or None)
    finally:
        options.databases.drop_all()
    print(json.dumps(results, default=str))


if __name__ == "__main__":
    main()
