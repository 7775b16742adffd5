"""Property-based fuzz of the API from its OpenAPI document: every operation, with valid and
hostile path, query and body values, with an operator key and a bank key. Nothing answers
500; hostile strings never reach SQL as code (the tables are intact afterwards)."""

from __future__ import annotations

import string
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from atm_risk.alerts.service import score_and_alert
from atm_risk.api.app import create_app
from atm_risk.atms.models import Atm
from atm_risk.clock import FrozenClock
from atm_risk.config import Settings
from atm_risk.ingest.run import ingest_atms
from atm_risk.tenancy.keys import create_key
from tests.api_server import serve

ATMS = (
    "atm_id,operator,lat,lon,site_type,country\n"
    "F1,BankA,52.09,5.12,shop,NL\nF2,BankB,52.10,5.13,wall,NL\n"
)
NOW = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
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
        options.append(st.floats(allow_nan=False, width=64))
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


@pytest.fixture
def running(sessions: sessionmaker[Session], database_url: str, write):  # type: ignore[no-untyped-def]
    clock = FrozenClock(NOW)
    settings_ = Settings(database_url=database_url, model_path=None)
    ingest_atms(sessions, path=write("a.csv", ATMS), clock=clock)
    score_and_alert(sessions, settings_, clock, send=False)
    with sessions.begin() as s:
        ops, _ = create_key(s, role="operator", now=NOW)
        bank, _ = create_key(s, role="bank", tenant="banka", now=NOW)
    with serve(create_app(settings_, clock=clock)) as client:
        yield client, [ops, bank]


def fuzz_operation(
    client: Any, spec: dict[str, Any], method: str, path: str, op: dict[str, Any], keys: list[str]
) -> int:
    """Run hypothesis over one operation; returns the number of requests sent."""
    params = op.get("parameters", [])
    body_schema = (
        op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
    )
    sent = 0

    @settings(
        max_examples=25,
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
        nonlocal sent
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
        sent += 1
        assert response.status_code < 500, (method, url, query, payload, response.text[:300])

    check()
    return sent


def test_no_operation_answers_500_to_any_input(
    running,
    sessions: sessionmaker[Session],  # type: ignore[no-untyped-def]
) -> None:
    client, keys = running
    spec = client.get("/openapi.json").json()
    tried = sum(fuzz_operation(client, spec, m, p, op, keys) for m, p, op in operations(spec))
    assert tried >= 300
    with sessions() as s:  # hostile strings were data, never SQL
        assert s.scalar(select(func.count(Atm.id))) == 2
