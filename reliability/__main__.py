"""The reliability suite (issue #10): ``python -m reliability`` from the repository root
(``make reliability``).

Runs the parts in order -- faults, load, bad input, security, and last reconciliation over
every database the others used -- prints one line per scenario and, last, one JSON object
with the summary, and writes docs/RELIABILITY.md from the run's results. A part whose module
does not exist yet is skipped and says so; a part that raises counts as a crash and the
suite goes on. Exit status 1 when a goal is missed (a counter of ``SUMMED`` above 0, a
scenario not survived, a part missing or failed).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import shlex
import sys
import time
import traceback
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

if __package__ in (None, ""):  # run as a file: make the package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reliability.common import BACKENDS, COUNTED, DEFAULT_PG_URL, ROOT, SUMMED, Options

PARTS = ("faults", "load", "badinput", "security", "reconcile")
TITLES = {
    "faults": "Faults",
    "load": "Load",
    "badinput": "Bad input",
    "security": "Security",
    "reconcile": "Reconciliation",
}
DOC = ROOT / "docs" / "RELIABILITY.md"


def load_part(name: str) -> ModuleType | None:
    """The part's module, or None when it does not exist (yet)."""
    try:
        return importlib.import_module(f"reliability.{name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"reliability.{name}":
            return None
        raise


def scenario_line(part: str, s: Mapping[str, Any]) -> str:
    counters = " ".join(f"{k}={s[k]}" for k in (*COUNTED, *SUMMED) if s.get(k))
    verdict = "ok " if s["survived"] else "FAIL"
    return f"{verdict} [{part}] {s['name']} ({s['backend']}) {counters} {s['seconds']}s".rstrip()


def run_parts(
    options: Options, names: Sequence[str], modules: Mapping[str, ModuleType | None]
) -> dict[str, dict[str, Any]]:
    """Each part's results (or its status: missing / error), in order, printing as it goes."""
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        module = modules.get(name)
        if module is None:
            print(f"skip [{name}] reliability/{name}.py does not exist yet", flush=True)
            results[name] = {"status": "missing", "scenarios": []}
            continue
        start = time.monotonic()
        print(f"---- [{name}]", flush=True)
        try:
            out = dict(module.run(options))
            out["status"] = "ran"
        except Exception as exc:
            trace = traceback.format_exc()
            print(trace, file=sys.stderr, flush=True)
            out = {
                "status": "error",
                "error": f"{type(exc).__name__}: {exc}",
                "scenarios": [
                    {
                        "name": f"{name} (part raised {type(exc).__name__})",
                        "backend": "-",
                        "survived": False,
                        "crashes": 1,
                        "seconds": 0.0,
                    }
                ],
            }
        out["seconds"] = round(time.monotonic() - start, 1)
        for s in out.get("scenarios", []):
            print(scenario_line(name, s), flush=True)
        results[name] = out
    return results


def summarize(results: Mapping[str, Mapping[str, Any]], meta: Mapping[str, Any]) -> dict[str, Any]:
    """The summary: totals of every counter over every scenario, per part too."""
    summary: dict[str, Any] = dict(meta)
    summary["parts"] = {name: r.get("status", "ran") for name, r in results.items()}
    all_scenarios = [s for r in results.values() for s in r.get("scenarios", [])]
    summary["scenarios"] = len(all_scenarios)
    summary["survived"] = sum(1 for s in all_scenarios if s["survived"])
    summary["not_survived"] = [
        f"{name}: {s['name']} ({s['backend']})"
        for name, r in results.items()
        for s in r.get("scenarios", [])
        if not s["survived"]
    ]
    for key in (*COUNTED, *SUMMED):
        summary[key] = sum(int(s.get(key, 0)) for s in all_scenarios)
    summary["by_part"] = {
        name: {
            key: sum(int(s.get(key, 0)) for s in r.get("scenarios", []))
            for key in (*COUNTED, *SUMMED)
        }
        for name, r in results.items()
    }
    summary["load"] = results.get("load", {}).get("figures")
    summary["goals_met"] = (
        not summary["not_survived"]
        and all(summary[key] == 0 for key in SUMMED)
        and all(status == "ran" for status in summary["parts"].values())
    )
    return summary


GOALS = {
    "messages_lost": "messages lost (faults)",
    "rankings_partial": "rankings partially published",
    "server_errors": "5xx answers (bad input, API fuzz, security)",
    "crashes": "crashes (unhandled exceptions, tracebacks instead of a clear error)",
    "valid_rows_lost": "valid rows lost next to bad ones",
    "tenant_leaks": "tenant leaks",
    "secrets_leaked": "secrets found in logs or answers",
    "unreconciled": "incidents/alerts/deliveries not reconciled",
}


def render_markdown(
    results: Mapping[str, Mapping[str, Any]],
    summary: Mapping[str, Any],
    modules: Mapping[str, ModuleType | None],
) -> str:
    """docs/RELIABILITY.md, every figure taken from ``results``/``summary``."""
    lines = [
        "# Reliability",
        "",
        "Generated by the reliability suite from one run; do not edit by hand. To reproduce:",
        "",
        "```",
        summary["command"],
        "```",
        "",
        f"Run {summary['started_at']} on {summary['machine']}, backends "
        f"{', '.join(summary['backends'])}, {'quick' if summary['quick'] else 'full'} run, "
        f"{summary['seconds']} s in all. Timings on this shared 2-core machine are noisy.",
        "",
        "## Summary",
        "",
        f"{summary['scenarios']} scenarios, {summary['survived']} survived; "
        f"{summary['cases']} cases tried in all. Goals met: "
        f"**{'yes' if summary['goals_met'] else 'no'}**.",
        "",
        "| counter | goal | total | " + " | ".join(TITLES[p] for p in results) + " |",
        "|---|---|---|" + "---|" * len(results),
    ]
    for key, label in GOALS.items():
        per_part = " | ".join(str(summary["by_part"][p][key]) for p in results)
        lines.append(f"| {label} | 0 | {summary[key]} | {per_part} |")
    per_part = " | ".join(str(summary["by_part"][p]["messages_duplicated"]) for p in results)
    lines.append(
        "| messages delivered twice, with the same Message-ID or idempotency key (at least "
        f"once: a kill between the relay's acceptance and the record) | none | "
        f"{summary['messages_duplicated']} | {per_part} |"
    )
    if summary["not_survived"]:
        lines += ["", "Not survived:", ""]
        lines += [f"- {name}" for name in summary["not_survived"]]
    for name, r in results.items():
        lines += ["", f"## {TITLES[name]}", ""]
        status = r.get("status", "ran")
        module = modules.get(name)
        if status == "missing" or module is None:
            lines.append(f"Not run: `reliability/{name}.py` does not exist yet.")
        elif status == "error":
            lines.append(f"The part failed: `{r.get('error')}` (see the run's output).")
        else:
            lines.append(f"Took {r.get('seconds')} s.")
            lines += ["", module.markdown(dict(r)).strip()]
    return "\n".join(lines) + "\n"


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m reliability", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="a smaller run (for tests)")
    p.add_argument("--backends", default=",".join(BACKENDS))
    p.add_argument(
        "--postgres",
        default=os.environ.get("ATM_RISK_TEST_POSTGRES_URL", DEFAULT_PG_URL),
        help="server on which throw-away databases are created (loopback)",
    )
    p.add_argument("--parts", default=",".join(PARTS), help="comma-separated subset, in order")
    p.add_argument("--out-dir", type=Path, default=ROOT / "out" / "reliability")
    p.add_argument(
        "--markdown",
        type=Path,
        default=None,
        help=f"where to write the report (default {DOC.relative_to(ROOT)} for a full run of "
        "every part, OUT_DIR/RELIABILITY.md otherwise)",
    )
    p.add_argument("--keep-databases", action="store_true")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    backends = [b for b in args.backends.split(",") if b]
    names = [n for n in args.parts.split(",") if n]
    for value, allowed, what in ((backends, BACKENDS, "backend"), (names, PARTS, "part")):
        unknown = sorted(set(value) - set(allowed))
        if unknown:
            print(f"unknown {what} {unknown}; expected some of {list(allowed)}", file=sys.stderr)
            return 2
    options = Options(
        backends=backends, postgres_url=args.postgres, quick=args.quick, out_dir=args.out_dir
    )
    if "postgresql" in backends:
        problem = options.databases.check_postgres()
        if problem:
            print(f"{problem}; start it or pass --backends sqlite", file=sys.stderr)
            return 2
    started = datetime.now(UTC)
    start = time.monotonic()
    modules = {name: load_part(name) for name in names}
    try:
        results = run_parts(options, names, modules)
    finally:
        if not args.keep_databases:
            options.databases.drop_all()
    given = list(sys.argv[1:] if argv is None else argv)
    command = shlex.join(["python", "-m", "reliability", *given])
    if not given:
        command = f"make reliability   # = .venv/bin/{command}"
    meta = {
        "command": command.strip(),
        "started_at": started.isoformat(timespec="seconds"),
        "machine": f"{platform.node()} ({os.cpu_count()} CPUs, Python {platform.python_version()})",
        "backends": backends,
        "quick": args.quick,
        "seconds": round(time.monotonic() - start, 1),
    }
    summary = summarize(results, meta)
    full = not args.quick and names == list(PARTS) and backends == list(BACKENDS)
    doc = args.markdown or (DOC if full else options.out_dir / "RELIABILITY.md")
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(render_markdown(results, summary, modules), encoding="utf-8")
    (options.out_dir / "results.json").write_text(
        json.dumps({"summary": summary, "results": results}, indent=2, default=str),
        encoding="utf-8",
    )
    print(f"wrote {doc} and {options.out_dir / 'results.json'}", flush=True)
    print(json.dumps(summary, default=str), flush=True)
    return 0 if summary["goals_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
