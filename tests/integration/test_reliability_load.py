"""The reliability suite's load part, in its quick form on SQLite: the API answers ranking
pages while attacks are reported and a scoring run publishes a new ranking; every page is the
slice of one run, every alert message arrives once; its section shows the run's figures."""

from __future__ import annotations

from pathlib import Path

from reliability import load
from reliability.common import Options


def test_quick_load_run_keeps_pages_consistent_and_loses_nothing(tmp_path: Path) -> None:
    options = Options(backends=["sqlite"], quick=True, out_dir=tmp_path)
    try:
        results = load.run(options)
    finally:
        options.databases.drop_all()
    [scenario] = results["scenarios"]
    figures = scenario["details"]["figures"]
    assert scenario["survived"], scenario
    assert figures["scoring_exit"] == 0
    # the scoring run was published while pages were asked: pages of both runs, and the
    # reported attacks changed the ranking, so a mix of the two would have been seen
    assert len(figures["pages_per_run"]) == 2
    assert figures["ranks_changed_between_runs"] > 0
    assert figures["pages_checked"] == figures["ranking"]["requests"] > 0
    assert figures["pages_inconsistent"] == 0
    assert figures["incidents"]["requests"] == load.QUICK["incidents"]
    assert figures["deliveries"] > 0
    assert figures["messages_received"] == figures["deliveries"]
    assert sum(p["requests"] for p in figures["phases"].values()) == figures["ranking"]["requests"]
    assert all(figures["phases"][name]["requests"] > 0 for name in load.PHASES)
    text = load.markdown(results)
    for name in load.PHASES:
        row = next(line for line in text.splitlines() if line.startswith(f"| {name} |"))
        assert f"| {figures['phases'][name]['latency_ms_p99']} |" in row
    assert f"{figures['pages_checked']} pages checked" in text
