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
