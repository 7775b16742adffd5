"""The production stack without containers: every piece a real process or server.

Against a fresh PostgreSQL database (with PostGIS when the migrations enable it): the
migration and the ingest through the CLI, ``atm-risk serve`` (uvicorn, 2 workers) and
``atm-risk scheduler`` as processes, an SMTP relay on loopback that requires STARTTLS and
AUTH (its CA a throw-away one the app is told to trust). A bank reports an attack through
the API; the routed recipients get their e-mails over TLS within seconds; the scheduler's
scoring job publishes a run that the API shows in ``/api/v1/runs`` and ``/healthz``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from reliability.common import Process

from atm_risk.catalog import SHIPPED, ShippedFile
from tests.api_server import free_port
from tests.conftest import DATA, REPO, PostgresServer
from tests.smtp_server import ReceivedMessage, SmtpTestServer, ThrowawayTls

pytestmark = [pytest.mark.stack, pytest.mark.postgres, pytest.mark.slow]

# The subset of the shipped data: the Dutch Geldmaat machines, the attacks in the news, the
# provinces (police routing by region).
SUBSET = {("atms", "geldmaat"), ("incidents", "news"), ("area", "nl_provinces")}
# A Geldmaat machine in the city of Utrecht (province Utrecht).
TARGET = {"operator": "geldmaat", "atm_id": "3511003"}
# Who config/routing.example.toml sends a gang_active alert in Utrecht on a Geldmaat machine.
ROUTED = {
    "rtic-midden@politie.example",  # police-midden-nederland: Utrecht, Flevoland, Gelderland
    "security-desk@geldmaat.example",  # the bank whose machine it is
    "oncall@atm-risk.example",  # the operators
}
MAIL_WITHIN_S = 10.0  # from the API's answer to the last message accepted by the relay
# (the API sends before it answers: the wait is a margin for a slow relay thread)
START_WITHIN_S = 180.0  # three processes importing at once on 2 shared cores: seen 48 s
SCORE_WITHIN_S = 300.0

T = TypeVar("T")


@dataclass
class Stack:
    env: dict[str, str]
    logs: Path
    processes: list[Process] = field(default_factory=list)

    def cli(self, *args: str, timeout: float = 300.0) -> str:
        result = subprocess.run(
            [_atm_risk(), *args],
            env=self.env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert result.returncode == 0, f"atm-risk {' '.join(args)}:\n{result.stderr[-4000:]}"
        return result.stdout

    def start(self, name: str, *args: str) -> Process:
        process = Process(
            [_atm_risk(), *args], self.logs / f"{name}.log", python=False, own_group=True
        )
        process.env = dict(self.env)  # exactly this environment, no ATM_RISK_ of the caller
        self.processes.append(process.start())
        return process

    def wait(self, what: str, check: Callable[[], T | None], timeout: float) -> T:
        """Poll ``check`` until it returns a value; fail early when a process died."""
        deadline = time.monotonic() + timeout
        while True:
            for process in self.processes:
                if not process.alive():
                    raise AssertionError(f"{process.args[1]} exited:\n{process.tail(60)}")
            value = check()
            if value is not None:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not within {timeout:.0f} s\n{self.tail()}")
            time.sleep(0.25)

    def tail(self) -> str:
        return "\n".join(f"--- {p.args[1]}\n{p.tail(60)}" for p in self.processes)


def _atm_risk() -> str:
    here = Path(sys.executable).parent
    found = shutil.which("atm-risk", path=str(here)) or shutil.which("atm-risk")
    assert found is not None, "the atm-risk command is not installed (pip install -e .)"
    return found


def _cli_args(item: ShippedFile) -> list[str]:
    path = str(item.resolve(DATA))
    if item.kind == "area":
        assert item.layer is not None
        return ["ingest", "area", item.layer, path]
    assert item.profile is not None
    return ["ingest", item.kind, path, "--profile", item.profile]


def _score_job(fire_at: datetime) -> str:
    """The shipped score job, fired once at ``fire_at`` (UTC) instead of 21:30 Amsterdam."""
    return f"""
[[jobs]]
name = "score"
run = "score"
trigger = "cron"
cron = {{ hour = {fire_at.hour}, minute = {fire_at.minute}, second = {fire_at.second} }}
timezone = "UTC"
misfire_grace_time = 600
coalesce = true
max_instances = 1
timeout = 600
keep_days = 1
"""


@pytest.fixture
def stack(postgres_server: PostgresServer, tmp_path: Path) -> Iterator[Stack]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATM_RISK_")}
    env.update(
        ATM_RISK_DATABASE_URL=postgres_server.create_database(),
        ATM_RISK_DATA_DIR=str(DATA),
        ATM_RISK_ALERTS__ROUTING_FILE=str(REPO / "config" / "routing.example.toml"),
        ATM_RISK_ALERTS__ACK_SECRET=secrets.token_hex(32),
        ATM_RISK_ALERTS__MESSAGE_DOMAIN="atm-risk.test",
        PYTHONUNBUFFERED="1",
    )
    logs = tmp_path / "logs"
    logs.mkdir()
    stack = Stack(env, logs)
    try:
        yield stack
    finally:
        for process in stack.processes:
            process.stop()


def test_the_stack_reports_alerts_over_tls_and_scores_on_schedule(
    stack: Stack, tmp_path: Path
) -> None:
    t0 = time.monotonic()
    # --- the database: migrated and loaded through the CLI, as an operator would
    assert "database at revision" in stack.cli("db", "upgrade")
    for item in SHIPPED:
        if (item.kind, item.profile or item.layer) in SUBSET:
            assert "rejected 0" in stack.cli(*_cli_args(item))
    bank_key = stack.cli(
        "keys", "create", "--role", "bank", "--tenant", "geldmaat", "--label", "stack test"
    ).splitlines()[-1]
    prepared_s = time.monotonic() - t0

    # --- the relay: STARTTLS and AUTH required, certificate of a throw-away CA
    user, password = "atm-risk", secrets.token_hex(16)
    relay = SmtpTestServer(
        mode="starttls", tls=ThrowawayTls.create(tmp_path / "ca"), auth=(user, password)
    )
    relay.start()
    try:
        api_port = free_port()
        stack.env.update(
            ATM_RISK_ALERTS__SMTP__HOST="localhost",
            ATM_RISK_ALERTS__SMTP__PORT=str(relay.port),
            ATM_RISK_ALERTS__SMTP__SECURITY="starttls",
            ATM_RISK_ALERTS__SMTP__CA_FILE=str(relay.ca_file),
            ATM_RISK_ALERTS__SMTP__USERNAME=user,
            ATM_RISK_ALERTS__SMTP__PASSWORD=password,
            ATM_RISK_ALERTS__SMTP__FROM_ADDRESS="alerts@atm-risk.test",
            ATM_RISK_ALERTS__PUBLIC_URL=f"http://127.0.0.1:{api_port}",
        )
        jobs = tmp_path / "jobs"
        jobs.mkdir()
        for shipped in ("outbox.toml", "heartbeat.toml"):
            shutil.copy(REPO / "jobs" / shipped, jobs / shipped)
        fire_at = (datetime.now(UTC) + timedelta(seconds=15)).replace(microsecond=0)
        (jobs / "score.toml").write_text(_score_job(fire_at), encoding="utf-8")

        # --- the processes
        api = stack.start(
            "api", "serve", "--host", "127.0.0.1", "--port", str(api_port), "--workers", "2"
        )
        scheduler = stack.start("scheduler", "scheduler", "--jobs-dir", str(jobs))
        client = httpx.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=30)

        def health() -> dict[str, Any] | None:
            try:
                answer = client.get("/healthz")
            except httpx.TransportError:
                return None
            return answer.json() if answer.status_code == 200 else None

        first = stack.wait("the API answers /healthz", health, START_WITHIN_S)
        started_s = time.monotonic() - t0 - prepared_s
        assert first["status"] == "ok"
        workers = stack.wait(
            "two uvicorn workers",
            lambda: (
                pids
                if len(pids := set(re.findall(r"Started server process \[(\d+)\]", api.output())))
                >= 2
                else None
            ),
            START_WITHIN_S,
        )
        assert len(workers) == 2

        # --- a bank reports an attack on its machine: stored, alerted at once
        posted = datetime.now(UTC)
        reported = client.post(
            "/api/v1/incidents",
            headers={"Authorization": f"Bearer {bank_key}"},
            json={
                **TARGET,
                "method": "explosive_solid",
                "occurred_at": (datetime.now(UTC) - timedelta(minutes=10)).isoformat(),
            },
        )
        assert reported.status_code == 201, reported.text
        body = reported.json()
        assert body["deliveries"] == len(ROUTED)
        assert body["sent"] == body["deliveries"], "the API process sends at once"

        def gang_mail() -> list[ReceivedMessage] | None:
            found = [m for m in relay.messages if "Gang active:" in (m.subject or "")]
            return found if len(found) >= len(ROUTED) else None

        mails = stack.wait("the routed e-mails", gang_mail, MAIL_WITHIN_S)
        mail_s = (max(m.received_at for m in mails) - posted).total_seconds()
        assert {r for m in mails for r in m.rcpt_tos} == ROUTED
        assert len(mails) == len(ROUTED), "one message per recipient, none twice"
        for mail in mails:
            assert mail.tls, "delivered over STARTTLS"
            assert mail.auth_login == user
            assert mail.mail_from == "alerts@atm-risk.test"
            assert TARGET["atm_id"] in mail.message.get_body(("plain",)).get_content()

        # the signed acknowledgement link in a message works against the API
        text = mails[0].message.get_body(("plain",)).get_content()
        [link] = re.findall(rf"http://127\.0\.0\.1:{api_port}/api/v1/alerts/\d+/ack\?\S+", text)
        acked = client.get(link.removeprefix(f"http://127.0.0.1:{api_port}"))
        assert acked.status_code == 200, acked.text
        assert acked.json()["acknowledged_at"] is not None

        # --- the scheduler's scoring job publishes a run the API shows
        def published() -> dict[str, Any] | None:
            items = client.get(
                "/api/v1/runs", headers={"Authorization": f"Bearer {bank_key}"}
            ).json()["items"]
            done = [r for r in items if r["status"] == "succeeded"]
            return done[0] if done else None

        run = stack.wait("a published scoring run", published, SCORE_WITHIN_S)
        scored_s = (datetime.now(UTC) - fire_at).total_seconds()
        assert run["n_scored"] >= 3000
        assert datetime.fromisoformat(run["as_of"]) == fire_at
        healthz = client.get("/healthz").json()
        assert healthz["last_successful_run"]["id"] == run["id"]
        history = json.loads(stack.cli("jobs", "history", "--job", "score", "--json"))
        [score] = history
        assert score["status"] == "succeeded"
        assert score["origin"] == "scheduled"
        assert score["pid"] == scheduler.pid, "run by the scheduler process"
        assert score["result"]["risk_run_id"] == run["id"]
        client.close()

        # --- both stop cleanly on SIGTERM
        for process in (api, scheduler):
            assert process.stop(timeout=30) == 0, process.tail(60)
    finally:
        relay.stop()
    print(
        f"stack: migrate+ingest+key {prepared_s:.1f} s; API and scheduler up in "
        f"{started_s:.1f} s; last e-mail {mail_s:.2f} s after the POST; run published "
        f"{scored_s:.1f} s after its fire time; whole test {time.monotonic() - t0:.1f} s"
    )
