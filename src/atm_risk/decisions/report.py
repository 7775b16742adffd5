"""Writing the plans: a table for people, CSV for spreadsheets, JSON (one object, last) for
programs and GeoJSON for maps."""

from __future__ import annotations

import csv
import json
from typing import IO, Any

from rich.console import Console
from rich.table import Table

from atm_risk.decisions.plans import HardeningPlan, PatrolPlan

HARDENING_COLUMNS = (
    "operator",
    "atm_id",
    "city",
    "address",
    "site_type",
    "rank",
    "measure",
    "cost_eur",
    "averted_year_eur",
    "annual_cost_eur",
    "net_year_eur",
    "payback_years",
)


def _round(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 2) if value == value else None  # NaN -> None
    if hasattr(value, "item"):  # numpy scalars
        return _round(value.item())
    return value


def hardening_rows(plan: HardeningPlan) -> list[dict[str, Any]]:
    return [{c: _round(row[c]) for c in HARDENING_COLUMNS} for row in plan.items.to_dict("records")]


def hardening_json(plan: HardeningPlan) -> dict[str, Any]:
    return {**plan.summary(), "items": hardening_rows(plan)}


def write_hardening_csv(plan: HardeningPlan, out: IO[str]) -> None:
    writer = csv.DictWriter(out, fieldnames=HARDENING_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(hardening_rows(plan))


def print_hardening(plan: HardeningPlan, console: Console, *, top: int = 30) -> None:
    s = plan.summary()
    table = Table(
        title=f"Hardening plan - budget EUR {plan.budget_eur:,.0f}, run {plan.run_id} "
        f"as of {plan.as_of:%Y-%m-%d}"
    )
    for col in ("operator", "atm", "place", "measure", "cost", "averted/yr", "payback yrs"):
        table.add_column(col, overflow="fold")
    for row in hardening_rows(plan)[:top]:
        place = ", ".join(p for p in (row["address"], row["city"]) if p)
        payback = row["payback_years"]
        table.add_row(
            str(row["operator"]),
            str(row["atm_id"]),
            place,
            str(row["measure"]),
            f"{row['cost_eur']:,.0f}",
            f"{row['averted_year_eur']:,.0f}",
            "" if payback is None else f"{payback:,.1f}",
        )
    console.print(table)
    if len(plan.items) > top:
        console.print(f"... and {len(plan.items) - top} more (use --format csv for all)")
    console.print(
        f"{s['machines_hardened']} machines, EUR {s['spent_eur']:,.0f} spent of "
        f"EUR {plan.budget_eur:,.0f}: averts EUR {s['loss_averted_year_eur']:,.0f} of "
        f"EUR {s['expected_loss_year_eur']:,.0f} expected loss a year "
        f"({plan.share_averted:.1%}); {s['paying_back_within_lifetime']} pay back within "
        f"their lifetime; solver {plan.method}" + (" (optimal)" if plan.optimal else ""),
        markup=False,
    )


def _unit_json(unit: Any) -> dict[str, Any]:
    return {
        "position": unit.position,
        "kind": unit.kind,
        "label": unit.label,
        "lon": round(unit.lon, 6),
        "lat": round(unit.lat, 6),
        "machines_covered": unit.n_machines,
        "expected_loss_tonight_eur": round(unit.expected_loss_eur, 2),
        "machines": unit.machines,
        "escape_routes": unit.escape_routes,
    }


def patrol_json(plan: PatrolPlan) -> dict[str, Any]:
    return {**plan.summary(), "positions": [_unit_json(u) for u in plan.units]}


def patrol_geojson(plan: PatrolPlan) -> dict[str, Any]:
    features = [
        {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [round(u.lon, 6), round(u.lat, 6)]},
            "properties": {k: v for k, v in _unit_json(u).items() if k not in {"lon", "lat"}}
            | {"reach_km": round(plan.radius_m / 1000, 2)},
        }
        for u in plan.units
    ]
    return {"type": "FeatureCollection", "features": features, "properties": plan.summary()}


PATROL_COLUMNS = (
    "position",
    "kind",
    "label",
    "lon",
    "lat",
    "machines_covered",
    "expected_loss_tonight_eur",
    "top_machines",
    "escape_routes",
)


def write_patrol_csv(plan: PatrolPlan, out: IO[str]) -> None:
    writer = csv.DictWriter(out, fieldnames=PATROL_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for u in plan.units:
        row = _unit_json(u)
        writer.writerow(
            {
                **{c: row[c] for c in PATROL_COLUMNS[:7]},
                "top_machines": "; ".join(f"{m['operator']}/{m['atm_id']}" for m in u.machines),
                "escape_routes": "; ".join(r["label"] for r in u.escape_routes[:10]),
            }
        )


def print_patrol(plan: PatrolPlan, console: Console) -> None:
    s = plan.summary()
    region = f" in {plan.region}" if plan.region else ""
    table = Table(
        title=f"Patrol plan{region} - night of {plan.night}, {len(plan.units)} units, "
        f"{plan.minutes:g} min (reach {s['reach_km']} km), run {plan.run_id}"
    )
    for col in ("#", "wait at", "machines", "EL tonight EUR", "nearest escape routes"):
        table.add_column(col, overflow="fold")
    for u in plan.units:
        table.add_row(
            str(u.position),
            f"{u.label} ({u.kind.replace('_', ' ')}) {u.lat:.4f},{u.lon:.4f}",
            str(u.n_machines),
            f"{u.expected_loss_eur:,.0f}",
            "; ".join(r["label"] for r in u.escape_routes[:4]),
        )
    console.print(table)
    console.print(
        f"covers EUR {plan.covered_eur:,.0f} of EUR {plan.total_eur:,.0f} expected loss "
        f"tonight ({plan.share_covered:.1%}), {s['machines_covered']} of "
        f"{plan.n_machines} machines; {plan.n_candidates} candidate positions; solver "
        f"{plan.method}" + (" (optimal)" if plan.optimal else ""),
        markup=False,
    )


def dump_json(doc: dict[str, Any], out: IO[str]) -> None:
    json.dump(doc, out, ensure_ascii=False, default=str)
    out.write("\n")
