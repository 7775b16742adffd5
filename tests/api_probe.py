"""Probes of the API from its OpenAPI document, shared by the API tests and the reliability
suite (reliability/badinput.py, reliability/security.py): a property-based fuzz of every
operation, and the tenant-isolation walk of every route with the keys of the test world of
tests/two_banks.py. Each probe returns what it found; the callers assert or count."""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

HOSTILE = [
    "' OR 1=1 --",
    "1; DROP TABLE atms; --",
    "../../etc/passwd",
    "<script>alert(1)</script>",
    "%00",
    "\u0000",
    "\U0001d518\U0001d52b\u00efc\u00f6de \u202e",
    "a" * 5000,
    "-1",
    "1e309",
    "NaN",
    "",
    " ",
    "null",
    "[]",
    "{}",
]


def values(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values for one parameter: what the schema asks for, its edges, and hostile text."""
    kind = schema.get("type")
    options: list[st.SearchStrategy[Any]] = [st.sampled_from(HOSTILE)]
    if "enum" in schema:
        options.append(st.sampled_from(schema["enum"]))
    if kind == "integer":
        options.append(st.integers(min_value=-(2**40), max_value=2**40))
    elif kind == "number":
        options.append(st.floats(allow_nan=False, allow_infinity=False, width=64))  # JSON
    elif kind == "string":
        options.append(st.text(string.printable, max_size=40))
    for sub in schema.get("anyOf", []):
        if sub.get("type") != "null":
            options.append(values(sub))
    return st.one_of(options)


def body(schema: dict[str, Any], spec: dict[str, Any]) -> st.SearchStrategy[Any]:
    ref = schema.get("$ref", "")
    target = spec["components"]["schemas"].get(ref.rsplit("/", 1)[-1], {}) if ref else schema
    props = target.get("properties", {})
    if not props:
        return st.none()
    return st.one_of(
        st.fixed_dictionaries({}, optional={k: values(v) for k, v in props.items()}),
        st.dictionaries(st.text(max_size=10), st.sampled_from(HOSTILE), max_size=4),
        st.sampled_from([[], "x", 1, None]),
    )


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method, path, op) for path, ops in spec["paths"].items() for method, op in ops.items()]


@dataclass
class FuzzOutcome:
    sent: int = 0
    server_errors: list[str] = field(default_factory=list)  # "METHOD url -> status: text"


def fuzz_operation(
    client: httpx.Client,
    spec: dict[str, Any],
    method: str,
    path: str,
    op: dict[str, Any],
    keys: list[str],
    *,
    max_examples: int = 25,
    outcome: FuzzOutcome | None = None,
) -> FuzzOutcome:
    """Run hypothesis over one operation; every answer of 500 or more is recorded."""
    outcome = outcome or FuzzOutcome()
    params = op.get("parameters", [])
    body_schema = (
        op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
    )

    @settings(
        max_examples=max_examples,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        database=None,
    )
    @given(
        data=st.fixed_dictionaries({p["name"]: values(p.get("schema", {})) for p in params}),
        payload=body(body_schema, spec) if body_schema else st.none(),
        key=st.sampled_from(keys),
    )
    def check(data: dict[str, Any], payload: Any, key: str) -> None:
        url = path
        query = {}
        for p in params:
            value = data[p["name"]]
            if p["in"] == "path":
                url = url.replace("{" + p["name"] + "}", quote(str(value), safe="") or "x")
            elif p["in"] == "query":
                query[p["name"]] = str(value)
        response = client.request(
            method.upper(),
            url,
            params=query,
            json=payload,
            headers={"Authorization": f"Bearer {key}"},
        )
        outcome.sent += 1
        if response.status_code >= 500:
            outcome.server_errors.append(
                f"{method.upper()} {url} {query!r} {payload!r:.200} -> "
                f"{response.status_code}: {response.text[:200]}"
            )

    check()
    return outcome


def fuzz_api(client: httpx.Client, keys: list[str], *, max_examples: int = 25) -> FuzzOutcome:
    """Fuzz every operation of the served OpenAPI document."""
    spec = client.get("/openapi.json").json()
    outcome = FuzzOutcome()
    for method, path, op in operations(spec):
        fuzz_operation(
            client, spec, method, path, op, keys, max_examples=max_examples, outcome=outcome
        )
    return outcome


# --------------------------------------------------------------------- tenant isolation

A_MARKERS = ("banka", "A-UTR-1", "A-GRO-1")
B_MARKERS = ("bankb", "B-UTR-1", "B-UTR-2")
PUBLIC = {"GET /healthz", "GET /api/v1/alerts/{alert_id}/ack", "GET /openapi.json"}
REQUIRED_QUERY = {
    "/api/v1/plans/hardening": {"budget_eur": "20000"},
    "/api/v1/plans/patrol": {"units": "1", "minutes": "10"},
    "/api/v1/alerts/{alert_id}/ack": {"by": "x", "exp": "1", "sig": "00"},
}
MONEY = re.compile(r"EUR\s?\d")


def bodies(now: datetime) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        ("post", "/api/v1/incidents"): {
            "operator": "bankb",
            "atm_id": "B-UTR-2",
            "method": "ram_raid",
        },
        ("post", "/api/v1/silences"): {
            "creator": "x",
            "comment": "y",
            "ends_at": (now + timedelta(hours=2)).isoformat(),
        },
    }


def concrete(path: str, ids: dict[str, Any]) -> str:
    values = {"operator": "bankb", "atm_id": "B-UTR-1", **{k: str(v) for k, v in ids.items()}}
    return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], path)


def walk(
    client: httpx.Client, key: str | None, ids: dict[str, Any], now: datetime
) -> list[tuple[str, httpx.Response]]:
    """Call every operation of the OpenAPI document with ``key`` (on bank B's machine
    B-UTR-1 where a path names one); (label, response)."""
    spec = client.get("/openapi.json").json()
    out = []
    for path, ops in spec["paths"].items():
        for method in ops:
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            url = concrete(path, ids)
            params = REQUIRED_QUERY.get(path, {})
            payload = bodies(now).get((method, path))
            response = client.request(
                method.upper(), url, params=params, json=payload, headers=headers
            )
            out.append((f"{method.upper()} {path}", response))
            if path == "/api/v1/ranking":
                for fmt in ("csv", "geojson"):
                    r = client.get(url, params={"format": fmt}, headers=headers)
                    out.append((f"GET {path}?format={fmt}", r))
    return out


def unauthenticated_findings(
    client: httpx.Client, bad_keys: list[str | None], ids: dict[str, Any], now: datetime
) -> tuple[int, list[str]]:
    """Every non-public route with each of ``bad_keys`` (None: no header): 401, or 429 once
    the client sent too many bad keys; never data. (calls made, problems)."""
    calls, problems = 0, []
    for key in bad_keys:
        for label, response in walk(client, key, ids, now):
            calls += 1
            if label.split("?")[0] in PUBLIC:
                continue
            if response.status_code not in (401, 429) or "items" in response.text:
                problems.append(f"{label} with key {key!r:.20}: {response.status_code}")
    return calls, problems


def forbidden(role: str) -> tuple[tuple[str, ...], bool]:
    """What a key of the test world must never receive: other tenants' markers, and for
    police money figures."""
    return {
        "bank_a": (B_MARKERS, False),
        "bank_b": (A_MARKERS, False),
        "police": (("A-GRO-1",), True),  # Groningen is not their region
    }[role]


def tenant_findings(
    client: httpx.Client, role: str, key: str, ids: dict[str, Any], now: datetime
) -> tuple[int, list[str], dict[str, int]]:
    """Walk every route with the key of ``role`` (bank_a, bank_b, police): (calls made,
    problems -- a 5xx or another tenant's data --, status by route)."""
    markers, no_money = forbidden(role)
    problems, statuses = [], {}
    calls = walk(client, key, ids, now)
    for label, response in calls:
        statuses[label] = response.status_code
        if response.status_code >= 500:
            problems.append(f"{role} {label}: {response.status_code}")
        text = response.text
        problems += [f"{role} {label}: {m!r} in the answer" for m in markers if m in text]
        if no_money and ("expected_loss" in text or MONEY.search(text)):
            problems.append(f"{role} {label}: money figures in the answer")
    return len(calls), problems, statuses
