"""How far the decisions move when the cost assumptions move by -50 % and +50 %.

For each assumption alone (cash per attack, damage per attack, the residential collateral
factor, the measures' costs, the attack rates' level) the table gives, against the base case:

* the rank correlation (Spearman) of the machines' expected loss and the overlap of the
  top 100 by expected loss (a uniform change of every machine's loss moves nothing: only
  machine- or operator-specific figures reorder the list, and the table shows that);
* how many machines would be worth hardening (best measure pays back within its lifetime);
* the hardening plan within the budget: loss averted a year and the share of its machines
  that the base plan also picks.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table
from scipy.stats import spearmanr
from sqlalchemy.orm import Session

from atm_risk.config import Settings
from atm_risk.decisions.loss import loss_per_attack
from atm_risk.decisions.plans import machines_with_rates, operator_id, solve_hardening
from atm_risk.decisions.settings import DecisionSettings
from atm_risk.risk.models import RiskRun

FACTORS = (0.5, 1.5)
TOP = 100
LOSS_COLUMNS = ["cash_eur", "damage_eur", "loss_eur"]


def _variants(base: DecisionSettings) -> list[tuple[str, float, DecisionSettings, float]]:
    """(assumption, factor, settings, attack-rate multiplier) for every variant."""
    out: list[tuple[str, float, DecisionSettings, float]] = [("base", 1.0, base, 1.0)]
    for f in FACTORS:
        out.append(
            (
                "cash_at_risk_eur",
                f,
                base.model_copy(update={"cash_at_risk_eur": base.cash_at_risk_eur * f}),
                1.0,
            )
        )
        out.append(
            (
                "property_damage_eur",
                f,
                base.model_copy(update={"property_damage_eur": base.property_damage_eur * f}),
                1.0,
            )
        )
        out.append(
            (
                "residential_collateral_factor",
                f,
                base.model_copy(
                    update={"residential_collateral_factor": base.residential_collateral_factor * f}
                ),
                1.0,
            )
        )
        measures = [m.model_copy(update={"cost_eur": m.cost_eur * f}) for m in base.measures]
        out.append(("measure_cost_eur", f, base.model_copy(update={"measures": measures}), 1.0))
        out.append(("attack_rate", f, base, f))
    return out


def sensitivity_table(
    session: Session,
    settings: Settings,
    run: RiskRun,
    *,
    budget_eur: float,
    operator: str | None = None,
) -> pd.DataFrame:
    raw = machines_with_rates(session, settings, run, operator_id(session, operator))
    raw = raw.drop(columns=LOSS_COLUMNS)
    rows: list[dict[str, Any]] = []
    base_el: pd.Series | None = None
    base_chosen: set[int] = set()
    for name, factor, dec, rate_factor in _variants(settings.decisions):
        machines = raw.join(loss_per_attack(raw, dec))
        machines["attacks_per_day"] = raw["attacks_per_day"] * rate_factor
        el = machines["attacks_per_day"] * 365.0 * machines["loss_eur"]
        total, options, solution = solve_hardening(machines, dec, budget_eur)
        chosen = set(options["atm_pk"].iloc[solution.chosen].astype(int))
        best_net = options.groupby("atm_pk")["net_year_eur"].max() if len(options) else pd.Series()
        if base_el is None:
            base_el, base_chosen = el, chosen
        top = set(el.nlargest(TOP).index)
        base_top = set(base_el.nlargest(TOP).index)
        rho = spearmanr(base_el.to_numpy(), el.to_numpy()).statistic if len(el) > 1 else 1.0
        rows.append(
            {
                "assumption": name,
                "factor": factor,
                "expected_loss_year_eur": round(float(el.sum()), 2),
                "rank_correlation": None if np.isnan(rho) else round(float(rho), 4),
                f"top{TOP}_overlap": round(len(top & base_top) / max(len(base_top), 1), 4),
                "worth_hardening": int((best_net > 0).sum()),
                "plan_loss_averted_year_eur": round(float(solution.value), 2),
                "plan_share_averted": round(float(solution.value) / total, 6) if total else 0.0,
                "plan_machines": len(chosen),
                "plan_overlap_with_base": round(
                    len(chosen & base_chosen) / max(len(chosen | base_chosen), 1), 4
                ),
            }
        )
    table = pd.DataFrame(rows)
    order = ["base", "cash_at_risk_eur", "property_damage_eur", "residential_collateral_factor"]
    order += ["measure_cost_eur", "attack_rate"]
    table["_o"] = table["assumption"].map(order.index)
    return (
        table.sort_values(["_o", "factor"], kind="stable").drop(columns="_o").reset_index(drop=True)
    )


def print_sensitivity(table: pd.DataFrame, console: Console) -> None:
    t = Table(title="Sensitivity of the decisions to the cost assumptions (each alone)")
    for col in table.columns:
        t.add_column(str(col), overflow="fold")
    for row in table.itertuples(index=False):
        t.add_row(*("" if v is None else f"{v:,}" if isinstance(v, float) else str(v) for v in row))
    console.print(t)
