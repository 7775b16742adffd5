"""The fault part of the reliability suite (reliability/faults.py) keeps working: two of its
scenarios in their quick form, on SQLite and on PostgreSQL, with the real SMTP server and a
real ``atm-risk scheduler`` process. The quick run never restarts the PostgreSQL server (other
tests use it): its database fault is pg_terminate_backend on its own database only."""

from __future__ import annotations

from pathlib import Path

import pytest
from reliability import faults
from reliability.common import DEFAULT_PG_URL, Options


@pytest.fixture
def options(backend: str, request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    url = DEFAULT_PG_URL
    if backend == "postgresql":
        url = request.getfixturevalue("postgres_server").url.render_as_string(hide_password=False)
    opts = Options(backends=[backend], postgres_url=url, quick=True, out_dir=tmp_path)
    yield opts
    opts.databases.drop_all()


def test_the_quick_fault_run_survives_and_counts_from_what_arrived(options: Options) -> None:
    results = faults.run(options)
    scenarios = {s["name"]: s for s in results["scenarios"]}
    assert set(scenarios) == set(faults.QUICK)
    for s in scenarios.values():
        assert s["survived"], s["details"]
        assert s["messages_lost"] == 0
        assert s["rankings_partial"] == 0
        assert s["details"]["settled"]
    refusals = scenarios["smtp_4xx_then_accept"]["details"]
    # the relay really refused (4xx), the outbox retried, and every message arrived once
    assert refusals["refused_with_4xx"] > 0
    assert refusals["attempts"] > refusals["mails_received"] == sum(refusals["deliveries"].values())
    lost = scenarios["db_connection_lost"]["details"]
    assert lost["checks"]["fault injected"]
    text = faults.markdown(results)
    assert "smtp_4xx_then_accept" in text
    assert "db_connection_lost" in text


def test_a_delivery_that_never_arrived_is_counted_lost(options: Options) -> None:
    """The counting is not a formality: stop the relay for good and the messages of a report
    count as lost (the scenario does not survive)."""
    with faults.bed_of(options, "relay_gone", options.backends[0]) as bed:
        bed.smtp.stop()
        assert bed.report()
        counts = faults.tally(bed, settled=False)
    assert counts["messages_lost"] >= 3  # operators, bank, police of the region
    assert counts["details"]["mails_received"] == 0
