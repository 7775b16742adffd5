"""Writing rankings as a table, CSV or JSON."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from typing import IO

from rich.console import Console
from rich.table import Table

from atm_risk.risk.models import RiskRun
from atm_risk.risk.service import RankedAtm

RANKING_COLUMNS = (
    "rank",
    "score",
    "probability",
    "risk_band",
    "expected_loss_eur",
    "action",
    "action_reason",
    "operator",
    "atm_id",
    "lat",
    "lon",
    "address",
    "city",
    "site_type",
    "night_closure",
    "reasons",
    "run_id",
    "as_of",
    "scorer",
)


def _row(item: RankedAtm, run: RiskRun) -> dict[str, object]:
    return {
        "rank": item.rank,
        "score": round(item.score, 6),
        "probability": "" if item.probability is None else round(item.probability, 8),
        "risk_band": item.risk_band or "",
        "expected_loss_eur": ""
        if item.expected_loss_eur is None
        else round(item.expected_loss_eur, 2),
        "action": item.action or "",
        "action_reason": item.action_text(),
        "operator": item.operator,
        "atm_id": item.atm_id,
        "lat": item.lat,
        "lon": item.lon,
        "address": item.address or "",
        "city": item.city or "",
        "site_type": item.site_type,
        "night_closure": "" if item.night_closure is None else str(item.night_closure).lower(),
        "reasons": item.reasons_text(),
        "run_id": run.id,
        "as_of": run.as_of.isoformat(),
        "scorer": f"{run.scorer}/{run.scorer_version}",
    }


def write_csv(items: Sequence[RankedAtm], run: RiskRun, out: IO[str]) -> None:
    writer = csv.DictWriter(out, fieldnames=RANKING_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(_row(i, run) for i in items)


def write_json(items: Sequence[RankedAtm], run: RiskRun, out: IO[str]) -> None:
    doc = {
        "run": {
            "id": run.id,
            "scorer": run.scorer,
            "scorer_version": run.scorer_version,
            "as_of": run.as_of.isoformat(),
            "horizon_days": run.horizon_days,
            "probability_method": run.params.get("probability_method"),
        },
        "items": [
            {**_row(i, run), "reasons": i.reasons, "action_reasons": i.action_reasons}
            for i in items
        ],
    }
    json.dump(doc, out, indent=2, ensure_ascii=False)
    out.write("\n")


def print_table(items: Sequence[RankedAtm], run: RiskRun, console: Console) -> None:
    table = Table(
        title=f"Risk ranking - run {run.id}, {run.scorer} as of {run.as_of:%Y-%m-%d %H:%M} UTC",
        show_lines=False,
    )
    horizon = f"P({run.horizon_days} d)"
    for col in ("rank", horizon, "EL EUR", "action", "operator", "atm", "place", "reasons"):
        table.add_column(col, overflow="fold")
    for i in items:
        place = ", ".join(p for p in (i.address, i.city) if p)
        table.add_row(
            str(i.rank),
            "" if i.probability is None else f"{i.probability:.2e}",
            "" if i.expected_loss_eur is None else f"{i.expected_loss_eur:,.0f}",
            i.action or "",
            i.operator,
            i.atm_id,
            place,
            i.reasons_text(),
        )
    console.print(table)
