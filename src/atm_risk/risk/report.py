"""Printing backtest results as tables."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def print_backtest(doc: dict[str, Any], console: Console) -> None:
    console.print(
        f"{doc['dataset']}: {doc['n_events']} events, {doc['n_cells']} cells ({doc['crs']}), "
        f"{doc['events_in_test_weeks']} events in the test weeks. {doc['protocol']}."
    )
    table = Table(title="Pooled hit rate (PAI) by coverage; per-origin mean [95% bootstrap]")
    table.add_column("method")
    table.add_column("kind")
    for k in ("1", "5", "10", "20"):
        table.add_column(f"{k} %", justify="right")
    table.add_column("seconds", justify="right")
    for name, m in doc["methods"].items():
        cells = []
        for k in ("1", "5", "10", "20"):
            po = m["per_origin_mean"][k]
            cells.append(
                f"{m['hit_rate'][k]:.3f} ({m['pai'][k]:.1f})\n"
                f"{po['mean']:.3f} [{po['low']:.3f}, {po['high']:.3f}]"
            )
        table.add_row(name, m["kind"], *cells, f"{m['seconds']:.1f}")
    console.print(table)
    for c in doc["comparisons"].values():
        console.print(
            f"{c['model']} vs best baseline {c['baseline']} at {c['coverage']} %: "
            f"difference {c['difference']:+.3f} [{c['low']:+.3f}, {c['high']:+.3f}], "
            f"P(model not better) = {c['p_not_better']:.3f}",
            markup=False,
        )


def print_machine_backtest(doc: dict[str, Any], console: Console) -> None:
    console.print(
        f"{doc['dataset']}: {doc['machines']} machines, {doc['origins']} origins of "
        f"{doc['horizon_days']:g} days, {doc['events_in_test_windows']} attacks "
        "in the test windows."
    )
    table = Table(title="Share of attacks at the top k % of machines; Brier skill")
    table.add_column("method")
    for k in ("1", "5", "10", "20"):
        table.add_column(f"top {k} %", justify="right")
    table.add_column("Brier", justify="right")
    table.add_column("BSS vs base rate", justify="right")
    table.add_column("BSS vs prior counts", justify="right")
    for name, m in doc["methods"].items():
        share = m["share_of_attacks_in_top"]
        table.add_row(
            name,
            *(f"{share[k]:.3f}" for k in ("1", "5", "10", "20")),
            f"{m['brier']:.5f}",
            f"{m['brier_skill_vs_base_rate']:+.4f}",
            f"{m['brier_skill_vs_prior_counts']:+.4f}",
        )
    console.print(table)
