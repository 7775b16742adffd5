"""Which measures each machine could still get, and what each would avert.

A measure is offered to a machine when its site type allows it and no measure of the same
group is installed already (dye and glue replace each other). For each offer::

    averted_year = attacks_per_year x (loss - (1 - deterrence) x protected loss)

One vectorised pass per measure of the catalogue, never a loop over machines.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from atm_risk.decisions.loss import remaining_loss
from atm_risk.decisions.settings import DecisionSettings


def measure_options(
    machines: pd.DataFrame, attacks_per_year: pd.Series, settings: DecisionSettings
) -> pd.DataFrame:
    """One row per (machine, measure) offer.

    ``machines`` (indexed by atm_pk) has ``site_type``, ``hardening`` (list of installed
    measure names), ``cash_eur``, ``damage_eur`` and ``loss_eur``. Columns of the result:
    ``atm_pk, measure, group, cost_eur, annual_cost_eur, averted_year_eur, net_year_eur``.
    """
    installed_groups = _installed_groups(machines["hardening"], settings)
    cash = machines["cash_eur"].to_numpy(float)
    damage = machines["damage_eur"].to_numpy(float)
    loss = machines["loss_eur"].to_numpy(float)
    rate = attacks_per_year.reindex(machines.index).fillna(0.0).to_numpy(float)
    site = machines["site_type"].astype(str).to_numpy()
    frames = []
    for measure in settings.measures:
        allowed = ~np.array([measure.group in g for g in installed_groups], dtype=bool)
        if measure.site_types is not None:
            allowed &= np.isin(site, [str(t) for t in measure.site_types])
        if not allowed.any():
            continue
        averted = rate * (loss - remaining_loss(cash, damage, measure))
        frames.append(
            pd.DataFrame(
                {
                    "atm_pk": machines.index.to_numpy()[allowed],
                    "measure": str(measure.name),
                    "group": measure.group,
                    "cost_eur": measure.cost_eur,
                    "annual_cost_eur": measure.annual_cost_eur,
                    "averted_year_eur": averted[allowed],
                }
            )
        )
    if not frames:
        return pd.DataFrame(
            columns=[
                "atm_pk",
                "measure",
                "group",
                "cost_eur",
                "annual_cost_eur",
                "averted_year_eur",
                "net_year_eur",
            ]
        )
    out = pd.concat(frames, ignore_index=True)
    out["net_year_eur"] = out["averted_year_eur"] - out["annual_cost_eur"]
    return out.sort_values(["atm_pk", "measure"], kind="stable").reset_index(drop=True)


def _installed_groups(hardening: pd.Series, settings: DecisionSettings) -> list[set[str]]:
    group_of = {str(m.name): m.group for m in settings.measures}
    return [
        {group_of.get(str(name), str(name)) for name in (installed or [])}
        for installed in hardening
    ]
