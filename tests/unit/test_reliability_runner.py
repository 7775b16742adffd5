"""The reliability runner: its summary and docs/RELIABILITY.md come from the parts' results."""

from __future__ import annotations

import json
import random
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import reliability.__main__ as runner
from reliability.common import SUMMED, Options, Scenario, part_result, scenario_table


def fake_part(name: str, scenarios: list[Scenario], figures: dict[str, Any] | None = None) -> Any:
    module = ModuleType(f"fake_{name}")

    def run(options: Options) -> dict[str, Any]:
        return part_result(scenarios, figures=figures or {})

    def markdown(results: dict[str, Any]) -> str:
        return f"section of {name}\n\n" + scenario_table(results["scenarios"], list(SUMMED))

    module.run = run  # type: ignore[attr-defined]
    module.markdown = markdown  # type: ignore[attr-defined]
    return module


def broken_part() -> Any:
    module = ModuleType("fake_broken")

    def run(options: Options) -> dict[str, Any]:
        raise RuntimeError("boom")

    module.run = run  # type: ignore[attr-defined]
    return module


META = {
    "command": "python -m reliability --quick",
    "started_at": "2026-11-28T12:00:00+00:00",
    "machine": "test",
    "backends": ["sqlite"],
    "quick": True,
    "seconds": 1.0,
}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_totals_and_markdown_follow_the_results(
    seed: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = random.Random(seed)
    scenarios = {
        part: [
            Scenario(
                name=f"{part}-{i}",
                backend=rng.choice(["sqlite", "postgresql"]),
                survived=rng.random() > 0.3,
                cases=rng.randrange(100),
                **{key: rng.randrange(3) for key in SUMMED},
            )
            for i in range(rng.randrange(1, 4))
        ]
        for part in ("faults", "badinput")
    }
    latency = {"p50_ms": rng.randrange(1, 50), "p99_ms": rng.randrange(50, 500)}
    modules = {
        "faults": fake_part("faults", scenarios["faults"]),
        "load": fake_part("load", [Scenario("load", "sqlite", True)], latency),
        "badinput": fake_part("badinput", scenarios["badinput"]),
        "security": None,  # not written yet
    }
    options = Options(backends=["sqlite"], out_dir=tmp_path)
    results = runner.run_parts(options, list(modules), modules)
    summary = runner.summarize(results, META)

    every = [s for part in scenarios.values() for s in part]
    for key in (*SUMMED, "cases"):
        assert summary[key] == sum(getattr(s, key) for s in every)
        assert summary["by_part"]["faults"][key] == sum(
            getattr(s, key) for s in scenarios["faults"]
        )
    assert summary["scenarios"] == len(every) + 1
    assert summary["survived"] == sum(s.survived for s in every) + 1
    assert summary["load"] == latency
    assert summary["parts"]["security"] == "missing"
    assert summary["goals_met"] is False  # a part is missing
    del results["security"]
    expect_met = all(s.survived for s in every) and all(
        getattr(s, key) == 0 for s in every for key in SUMMED
    )
    assert runner.summarize(results, META)["goals_met"] is expect_met
    results["security"] = {"status": "missing", "scenarios": []}
    json.dumps(summary)  # JSON-able

    out = capsys.readouterr().out
    assert "skip [security] reliability/security.py does not exist yet" in out
    for s in every:
        assert f"] {s.name} ({s.backend})" in out

    doc = runner.render_markdown(results, summary, modules)
    assert "section of faults" in doc
    assert "section of badinput" in doc
    assert "Not run: `reliability/security.py` does not exist yet." in doc
    assert f"| messages lost (faults) | 0 | {summary['messages_lost']} |" in doc
    assert f"{summary['scenarios']} scenarios, {summary['survived']} survived" in doc
    for s in every:
        if not s.survived:
            assert f"{s.name} ({s.backend})" in doc


def test_a_part_that_raises_is_a_crash_and_the_suite_goes_on(tmp_path: Path) -> None:
    modules = {
        "faults": broken_part(),
        "badinput": fake_part("badinput", [Scenario("csv", "sqlite", True, cases=7)]),
    }
    results = runner.run_parts(Options(out_dir=tmp_path), list(modules), modules)
    summary = runner.summarize(results, META)
    assert summary["parts"] == {"faults": "error", "badinput": "ran"}
    assert summary["crashes"] == 1
    assert summary["cases"] == 7
    assert summary["goals_met"] is False
    assert "The part failed: `RuntimeError: boom`" in runner.render_markdown(
        results, summary, modules
    )


def test_main_writes_the_report_and_prints_the_summary_last(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    module = fake_part("badinput", [Scenario("csv", "sqlite", True, cases=11)])
    monkeypatch.setattr(runner, "load_part", lambda name: module if name == "badinput" else None)
    doc = tmp_path / "R.md"
    code = runner.main(
        [
            "--backends",
            "sqlite",
            "--parts",
            "badinput,security",
            "--out-dir",
            str(tmp_path),
            "--markdown",
            str(doc),
        ]
    )
    last = capsys.readouterr().out.strip().splitlines()[-1]
    summary = json.loads(last)
    assert code == 1  # security is missing
    assert summary["cases"] == 11
    assert summary["parts"] == {"badinput": "ran", "security": "missing"}
    text = doc.read_text()
    assert "11 cases tried" in text
    assert "python -m reliability --backends sqlite --parts badinput,security" in text
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["summary"] == summary
