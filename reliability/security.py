"""Security: tenant isolation, bad and revoked keys, injection, oversized bodies, secrets.

For each backend: the two-bank world of tests/two_banks.py in a fresh database (on
PostgreSQL reached with a password in its URL, which the loopback server's trust
authentication ignores, so that the password is a secret to look for), and the API as a
separate process (``atm-risk serve``) with alerts routed to a real SMTP server (aiosmtpd,
STARTTLS, AUTH with a password) and a webhook receiver (HMAC secret from the environment),
and an acknowledgement signing key. Then, over real HTTP on loopback:

- tenant isolation: every route of the OpenAPI document with bank A's, bank B's and the
  police's keys (tests/api_probe.py, shared with tests/integration/test_api_tenancy.py):
  another tenant's machine or money figures in an answer is a leak;
- injection: SQL fragments, LIKE wildcards, unicode look-alikes, NUL and very long strings in
  every query parameter of every GET operation and in the path parameters: never 5xx, never
  another tenant's rows, and a wildcard never matches anything but itself;
- oversized bodies (5 MB and 50 MB JSON, with and without Content-Length), a 100 kB query
  string and a 100 kB header: 4xx, never 5xx, and the server's peak memory;
- a revoked key: the time until it is refused, measured (keys are cached up to 5 s);
- repeated bad keys: how many are answered 401 before 429;
- no key, a revoked key and garbage keys on every route: 401/429, never data;
- secrets: every API key, the SMTP password, the webhook secret, the acknowledgement key and
  the database password are searched for in the API process's log, in every answer received
  (bodies and headers), in every e-mail and webhook received, and in every database row.
"""

from __future__ import annotations

import json
import re
import secrets
import signal
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from sqlalchemy.engine import make_url

from reliability.common import (
    Options,
    Process,
    Scenario,
    api_world,
    free_port,
    part_result,
    scenario_table,
)

INJECTIONS = [
    "' OR '1'='1",
    "1; DROP TABLE atms; --",
    "bankb' --",
    "%",
    "_",
    "%%",
    "B-UTR-%",
    "*",
    ".*",
    "\\",
    "' UNION SELECT * FROM api_keys --",
    "\uff22-UTR-1",  # fullwidth look-alike
    "bank\u0430",  # Cyrillic a
    "\u202ebankb",
    "\x00",
    "utrecht\x00",
    "x" * 10_000,
    "[]",
    "{}",
    "-1",
    "1e309",
]
ROUTING = """version = 1

[[receivers]]
name = "bank-a"
role = "bank"
operator = "banka"
email = ["security@banka.example"]

[[receivers]]
name = "bank-b"
role = "bank"
operator = "bankb"
email = ["security@bankb.example"]
webhooks = [{{ url = "{hook}", secret_env = "RELIABILITY_HOOK_SECRET" }}]

[[receivers]]
name = "police-utrecht"
role = "police"
regions = ["Utrecht"]
email = ["rtic@police-utrecht.example"]

[[receivers]]
name = "operators"
role = "operator"
email = ["oncall@atm-risk.example"]

[[routes]]
kinds = ["gang_active", "pipeline_health"]
receivers = ["bank-a", "bank-b", "police-utrecht", "operators"]
"""


class Recorder:
    """An httpx client that keeps every answer (status, headers, body) for the secret scan."""

    def __init__(self, base_url: str) -> None:
        self.texts: list[str] = []
        self.base_url = base_url
        self.client = self.client_from("127.0.0.1")

    def client_from(self, address: str) -> httpx.Client:
        """A client whose requests come from ``address`` (the API limits bad keys per
        client address; every 127.x address is loopback)."""
        return httpx.Client(
            base_url=self.base_url,
            timeout=60,
            event_hooks={"response": [self._keep]},
            transport=httpx.HTTPTransport(local_address=address),
        )

    def _keep(self, response: httpx.Response) -> None:
        response.read()
        head = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
        self.texts.append(f"{response.status_code}\n{head}\n{response.text}")

    def close(self) -> None:
        self.client.close()


def _peak_rss_kb(pid: int | None) -> int | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    found = re.search(r"VmHWM:\s+(\d+) kB", status)
    return int(found.group(1)) if found else None


def _rss_kb(pid: int | None) -> int | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    found = re.search(r"VmRSS:\s+(\d+) kB", status)
    return int(found.group(1)) if found else None


# --------------------------------------------------------------------------- probes


def tenant_isolation(
    client: httpx.Client, keys: dict[str, str], ids: dict[str, Any], now: Any
) -> dict[str, Any]:
    from tests.api_probe import tenant_findings

    calls, leaks, errors = 0, [], []
    for role in ("bank_a", "bank_b", "police"):
        n, problems, _ = tenant_findings(client, role, keys[role], ids, now)
        calls += n
        for p in problems:
            (errors if re.search(r": 5\d\d$", p) else leaks).append(p)
    return {"calls": calls, "leaks": leaks, "server_errors": errors}


def injection(client: httpx.Client, keys: dict[str, str]) -> dict[str, Any]:
    """Every query parameter of every GET operation, and the path parameters, with every
    injection string, as bank A and as the police."""
    from tests.api_probe import B_MARKERS, REQUIRED_QUERY, concrete

    spec = client.get("/openapi.json").json()
    calls, errors, leaks, statuses = 0, [], [], {}
    wildcard: list[str] = []
    forbidden = {"bank_a": B_MARKERS, "police": ("A-GRO-1",)}
    for path, ops in spec["paths"].items():
        op = ops.get("get")
        if op is None:
            continue
        params = op.get("parameters", [])
        for p in params:
            for value in INJECTIONS:
                for role in ("bank_a", "police"):
                    query = dict(REQUIRED_QUERY.get(path, {}))
                    url = concrete(path, {"alert_id": 1, "silence_id": 1})
                    if p["in"] == "query":
                        query[p["name"]] = value
                    elif p["in"] == "path":
                        url = concrete(
                            path.replace("{" + p["name"] + "}", quote(value, safe="") or "x"),
                            {"alert_id": 1, "silence_id": 1},
                        )
                    else:
                        continue
                    r = client.get(
                        url, params=query, headers={"Authorization": f"Bearer {keys[role]}"}
                    )
                    calls += 1
                    statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                    label = f"GET {path} {p['name']}={value[:30]!r} as {role}"
                    if r.status_code >= 500:
                        errors.append(f"{label}: {r.status_code}")
                    # a 422 names the value it refused: only what else the answer holds counts
                    text = r.text.replace(json.dumps(value)[1:-1], "").replace(value, "")
                    leaks += [f"{label}: {m!r}" for m in forbidden[role] if m in text]
                    if (
                        value in ("%", "_", "%%", "B-UTR-%", "*", ".*")
                        and r.status_code == 200
                        and r.headers.get("content-type", "").startswith("application/json")
                    ):
                        items = r.json().get("items")
                        if items:
                            wildcard.append(f"{label}: {len(items)} items")
    # path parameters named with another tenant's ids in every spelling
    for op_id in ("bankb", "BANKB", "bankb%", "bank_", "%"):
        for atm in ("B-UTR-1", "B-UTR-%", "%", "b-utr-1"):
            r = client.get(
                f"/api/v1/atms/{quote(op_id, safe='')}/{quote(atm, safe='')}",
                headers={"Authorization": f"Bearer {keys['bank_a']}"},
            )
            calls += 1
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            if r.status_code >= 500:
                errors.append(f"GET /api/v1/atms/{op_id}/{atm}: {r.status_code}")
            if r.status_code == 200:
                leaks.append(f"GET /api/v1/atms/{op_id}/{atm} as bank_a: 200")
    return {
        "calls": calls,
        "server_errors": errors,
        "leaks": leaks,
        "wildcard_matches": wildcard,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
    }


def _chunks(total: int, piece: bytes) -> Any:
    sent = 0
    head = b'{"operator": "banka", "atm_id": "A-UTR-1", "method": "ram_raid", "notes": "'
    yield head
    sent += len(head)
    while sent < total:
        yield piece
        sent += len(piece)
    yield b'"}'


def oversized(client: httpx.Client, keys: dict[str, str], pid: int | None) -> dict[str, Any]:
    h = {"Authorization": f"Bearer {keys['bank_a']}", "Content-Type": "application/json"}
    results, errors = [], []
    rss_before = _rss_kb(pid)
    for mb, chunked in ((5, False), (50, False), (50, True)):
        size = mb * 1_000_000
        start = time.monotonic()
        try:
            if chunked:
                r = client.post("/api/v1/incidents", content=_chunks(size, b"x" * 65536), headers=h)
            else:
                body = b"".join(_chunks(size, b"x" * 65536))
                r = client.post("/api/v1/incidents", content=body, headers=h)
            status: int | str = r.status_code
        except httpx.HTTPError as exc:  # the server may close the connection early
            status = f"connection closed ({type(exc).__name__})"
        label = f"POST /api/v1/incidents {mb} MB {'chunked' if chunked else 'with Content-Length'}"
        results.append(
            {"request": label, "status": status, "seconds": round(time.monotonic() - start, 2)}
        )
        if isinstance(status, int) and status >= 500:
            errors.append(f"{label}: {status}")
    for label, call in (
        (
            "GET with a 60 kB query string",
            lambda: client.get("/api/v1/atms", params={"city": "x" * 60_000}, headers=h),
        ),
        (
            "GET with a 60 kB header",
            lambda: client.get("/api/v1/atms", headers={**h, "X-Big": "y" * 60_000}),
        ),
    ):
        try:
            status = call().status_code
        except httpx.HTTPError as exc:
            status = f"connection closed ({type(exc).__name__})"
        results.append({"request": label, "status": status})
        if isinstance(status, int) and status >= 500:
            errors.append(f"{label}: {status}")
    return {
        "requests": results,
        "server_errors": errors,
        "rss_before_mb": round((rss_before or 0) / 1024, 1),
        "peak_rss_mb": round((_peak_rss_kb(pid) or 0) / 1024, 1),
    }


def revoked_key_delay(client: httpx.Client, world: Any) -> dict[str, Any]:
    """Seconds from the revocation's commit to the first 401 for a key in use."""
    from atm_risk.tenancy.keys import create_key, revoke

    with world.sessions.begin() as s:
        key, row = create_key(s, role="operator", now=world.clock.now())
        prefix = row.prefix
    h = {"Authorization": f"Bearer {key}"}
    first = client.get("/api/v1/runs", headers=h).status_code
    for _ in range(3):  # in use (cached) when revoked
        client.get("/api/v1/runs", headers=h)
    with world.sessions.begin() as s:
        revoke(s, prefix, world.clock.now())
    revoked_at = time.monotonic()
    status, answered_ok = 200, 0
    while time.monotonic() - revoked_at < 15:
        status = client.get("/api/v1/runs", headers=h).status_code
        if status != 200:
            break
        answered_ok += 1
        time.sleep(0.05)
    delay = time.monotonic() - revoked_at
    return {
        "status_before": first,
        "status_after": status,
        "seconds_to_rejection": round(delay, 2),
        "answered_after_revocation": answered_ok,
    }


def bad_keys(client: httpx.Client) -> dict[str, Any]:
    codes = [
        client.get("/api/v1/atms", headers={"Authorization": f"Bearer atmr_bad_{k}"}).status_code
        for k in range(30)
    ]
    first_429 = codes.index(429) + 1 if 429 in codes else None
    return {"codes": codes, "answered_401": codes.count(401), "first_429_at": first_429}


def unauthenticated(
    client: httpx.Client, keys: dict[str, str], ids: dict[str, Any], now: Any
) -> dict[str, Any]:
    from tests.api_probe import unauthenticated_findings

    calls, problems = unauthenticated_findings(
        client, [None, keys["revoked"], "atmr_00000000_nonsense", "garbage"], ids, now
    )
    return {"calls": calls, "problems": problems}


def _mail_text(message: Any) -> str:
    """An e-mail as received and with every part decoded (base64, quoted-printable)."""
    parts = [message.raw.decode("utf-8", "replace")]
    for part in message.message.walk():
        if not part.is_multipart():
            content = part.get_content()
            parts.append(content if isinstance(content, str) else content.decode("latin-1"))
    return "\n".join(parts)


def _database_text(url: str) -> str:
    """Every row of every table, as text."""
    from sqlalchemy import create_engine, select

    from atm_risk.store import metadata

    engine = create_engine(url)
    out = []
    try:
        with engine.connect() as conn:
            for table in metadata.sorted_tables:
                for row in conn.execute(select(table)):
                    out.append(repr(tuple(row)))
    finally:
        engine.dispose()
    return "\n".join(out)


# --------------------------------------------------------------------------- one backend


def one_backend(backend: str, options: Options) -> list[Scenario]:
    start = time.monotonic()
    scenarios = _one_backend(backend, options)
    for s in scenarios:  # the probes share one API process: the time is the backend's
        s.seconds = (time.monotonic() - start) / len(scenarios)
    return scenarios


def _one_backend(backend: str, options: Options) -> list[Scenario]:
    from tests.http_receiver import HttpReceiver
    from tests.smtp_server import SmtpTestServer, ThrowawayTls

    work = options.work_dir(f"security/{backend}")
    url = options.databases.new(backend, "security")
    db_password = secrets.token_urlsafe(12) if backend == "postgresql" else None
    served_url = (
        make_url(url).set(password=db_password).render_as_string(hide_password=False)
        if db_password
        else url
    )
    smtp_password = "smtp-" + secrets.token_hex(16)
    hook_secret = "hook-" + secrets.token_hex(32)
    ack_secret = "ack-" + secrets.token_hex(32)
    tls = ThrowawayTls.create(work / "tls")
    warnings.filterwarnings("ignore", message="Session.login_data")  # aiosmtpd's own
    smtp = SmtpTestServer(mode="starttls", tls=tls, auth=("alerts", smtp_password)).start()
    hook = HttpReceiver().start()
    routing = work / "routing.toml"
    routing.write_text(ROUTING.format(hook=f"http://127.0.0.1:{hook.port}/hook"))
    world = api_world(served_url, work)  # its first alert is written without routing
    options.databases.describe(url, routing=routing, routed_after=datetime.now(UTC))
    port = free_port()
    env = {
        "ATM_RISK_DATABASE_URL": served_url,
        "ATM_RISK_MODEL_PATH": "",
        "ATM_RISK_ALERTS__ROUTING_FILE": str(routing),
        "ATM_RISK_ALERTS__ACK_SECRET": ack_secret,
        "ATM_RISK_ALERTS__SMTP__HOST": "127.0.0.1",
        "ATM_RISK_ALERTS__SMTP__PORT": str(smtp.port),
        "ATM_RISK_ALERTS__SMTP__SECURITY": "starttls",
        "ATM_RISK_ALERTS__SMTP__USERNAME": "alerts",
        "ATM_RISK_ALERTS__SMTP__PASSWORD": smtp_password,
        "ATM_RISK_ALERTS__SMTP__FROM_ADDRESS": "alerts@atm-risk.test",
        "ATM_RISK_ALERTS__SMTP__CA_FILE": str(tls.ca_file),
        "RELIABILITY_HOOK_SECRET": hook_secret,
    }
    api = Process(
        ["-c", "from atm_risk.cli import main; main()", "serve", "--port", str(port)],
        work / "api.log",
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    rec = Recorder(base)
    results: dict[str, Any] = {}
    try:
        api.start()
        api.wait_until(
            lambda: httpx.get(f"{base}/healthz", timeout=2).status_code == 200, 180, "/healthz"
        )
        client = rec.client
        ops = {"Authorization": f"Bearer {world.keys['operator']}"}
        alerts = client.get("/api/v1/alerts", headers=ops).json()["items"]
        ids = {"alert_id": alerts[0]["id"] if alerts else 1, "silence_id": 1}
        now = world.clock.now()
        t0 = time.monotonic()
        results["tenancy"] = tenant_isolation(client, world.keys, ids, now)
        results["injection"] = injection(client, world.keys)
        results["oversized"] = oversized(client, world.keys, api.pid)
        results["revoked"] = revoked_key_delay(client, world)
        with rec.client_from("127.0.0.2") as other:
            results["bad_keys"] = bad_keys(other)
        with rec.client_from("127.0.0.3") as other:
            results["unauthenticated"] = unauthenticated(other, world.keys, ids, now)
        results["probe_seconds"] = round(time.monotonic() - t0, 1)
        # the reports of the tenancy walk were sent at once; let the last ones arrive
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not smtp.messages:
            time.sleep(0.2)
    finally:
        rec.close()
        api.kill(signal.SIGTERM)
        api.stop()
        smtp.stop()
        hook.stop()
        world.close()
    mails = [_mail_text(m) for m in smtp.messages]
    hooks = [r.body.decode("utf-8", "replace") for r in hook.requests]
    db_text = _database_text(url)
    secret_values = {
        **{f"API key {k}": v for k, v in world.keys.items()},
        "SMTP password": smtp_password,
        "webhook secret": hook_secret,
        "acknowledgement key": ack_secret,
    }
    if db_password:
        secret_values["database password"] = db_password
    places = {
        "API process log": api.output(),
        "answers": "\n".join(rec.texts),
        "e-mails": "\n".join(mails),
        "webhooks": "\n".join(hooks),
        "database rows": db_text,
    }
    found = [
        f"{name} in {where}"
        for name, value in secret_values.items()
        for where, text in places.items()
        if value in text
    ]
    results["secrets"] = {
        "searched": sorted(secret_values),
        "places": {k: len(v) for k, v in places.items()},
        "found": found,
        "mails": len(mails),
        "webhooks": len(hooks),
    }
    return _scenarios(backend, results)


def _scenarios(backend: str, r: dict[str, Any]) -> list[Scenario]:
    t, i, o, k, b, u, s = (
        r["tenancy"],
        r["injection"],
        r["oversized"],
        r["revoked"],
        r["bad_keys"],
        r["unauthenticated"],
        r["secrets"],
    )
    from atm_risk.api.deps import BAD_KEYS_PER_MINUTE, KEY_CACHE_S

    return [
        Scenario(
            "tenant isolation (every route, bank A, bank B, police)",
            backend,
            not t["leaks"] and not t["server_errors"],
            cases=t["calls"],
            tenant_leaks=len(t["leaks"]),
            server_errors=len(t["server_errors"]),
            details={"examples": (t["leaks"] + t["server_errors"])[:8]},
        ),
        Scenario(
            "injection in every filter, sort and path parameter",
            backend,
            not i["leaks"] and not i["server_errors"] and not i["wildcard_matches"],
            cases=i["calls"],
            tenant_leaks=len(i["leaks"]),
            server_errors=len(i["server_errors"]),
            details={
                "statuses": i["statuses"],
                "wildcard_matches": len(i["wildcard_matches"]),
                "examples": (i["leaks"] + i["server_errors"] + i["wildcard_matches"])[:8],
            },
        ),
        Scenario(
            "oversized bodies, query strings and headers",
            backend,
            not o["server_errors"]
            and all(q["status"] == 413 for q in o["requests"] if "MB" in q["request"]),
            cases=len(o["requests"]),
            server_errors=len(o["server_errors"]),
            details=o,
        ),
        Scenario(
            "revoked key in use",
            backend,
            k["status_before"] == 200
            and k["status_after"] == 401
            and k["seconds_to_rejection"] <= KEY_CACHE_S + 1,
            cases=1,
            details=k,
        ),
        Scenario(
            "repeated bad keys",
            backend,
            b["first_429_at"] == BAD_KEYS_PER_MINUTE + 1,
            cases=len(b["codes"]),
            details={k: v for k, v in b.items() if k != "codes"} | {"limit": BAD_KEYS_PER_MINUTE},
        ),
        Scenario(
            "no key, revoked key, garbage keys on every route",
            backend,
            not u["problems"],
            cases=u["calls"],
            tenant_leaks=len(u["problems"]),
            details={"examples": u["problems"][:8]},
        ),
        Scenario(
            "secrets absent from logs, answers, messages and rows",
            backend,
            not s["found"],
            cases=len(s["searched"]) * len(s["places"]),
            secrets_leaked=len(s["found"]),
            details=s,
        ),
    ]


def run(options: Options) -> dict[str, Any]:
    scenarios = []
    for backend in options.backends:
        scenarios += one_backend(backend, options)
    return part_result(scenarios)


def markdown(results: dict[str, Any]) -> str:
    rows = results["scenarios"]
    out = [
        "The API as its own process (`atm-risk serve`) over HTTP on loopback, with alerts "
        "routed to a real SMTP server (STARTTLS, AUTH) and a webhook receiver "
        "(reliability/security.py). Tenant isolation reuses tests/api_probe.py, the walk of "
        "tests/integration/test_api_tenancy.py.",
        "",
        scenario_table(rows, ["cases", "tenant_leaks", "server_errors", "secrets_leaked"]),
        "",
    ]
    for s in rows:
        d = s["details"]
        where = f"{s['backend']}"
        if s["name"] == "revoked key in use":
            out.append(
                f"- Revoked key ({where}): refused {d['seconds_to_rejection']} s after the "
                f"revocation was committed ({d['answered_after_revocation']} requests answered "
                f"meanwhile; keys are cached for up to 5 s by design)."
            )
        elif s["name"] == "repeated bad keys":
            out.append(
                f"- Bad keys ({where}): {d['answered_401']} answered 401, the first 429 at "
                f"request {d['first_429_at']} (limit {d['limit']} a minute per client)."
            )
        elif s["name"].startswith("oversized"):
            answers = "; ".join(f"{q['request']}: {q['status']}" for q in d["requests"])
            out.append(
                f"- Oversized ({where}): {answers}. API resident memory "
                f"{d['rss_before_mb']} MB before, peak {d['peak_rss_mb']} MB."
            )
        elif s["name"].startswith("injection"):
            out.append(
                f"- Injection ({where}): answers by status {json.dumps(d['statuses'])}; "
                f"wildcards that matched: {d['wildcard_matches']}."
            )
        elif s["name"].startswith("secrets"):
            out.append(
                f"- Secrets ({where}): {', '.join(d['searched'])} searched in "
                + ", ".join(f"{k} ({v} characters)" for k, v in d["places"].items())
                + f"; {d['mails']} e-mails and {d['webhooks']} webhooks received; found: "
                + (", ".join(d["found"]) or "none")
                + "."
            )
        for e in d.get("examples", []) if isinstance(d.get("examples"), list) else []:
            out.append(f"  - finding: {e}")
    return "\n".join(out)
