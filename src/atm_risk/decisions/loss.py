"""Expected loss: probability of attack times what an attack costs.

For machine i over a horizon of h days::

    rate_i      = -ln(1 - p_i)                    expected attacks in h days
    loss_i      = cash_i + damage_i * (1 + collateral * residential_i)
    EL_i(h)     = rate_i * loss_i                 expected loss in the horizon
    EL_i(year)  = rate_i * 365 / h * loss_i

``cash_i`` and ``damage_i`` come from the machine when it has its own figure, else from its
operator, else from the settings (DOMAIN.md: EUR 100k all-in per attack). All vectorised:
one call for every machine of a run.

When the run's scorer gives no calibrated probability (the transparent baseline), the
probability is the country's published attack rate shared out in proportion to the score
(:func:`base_rate_probability`); the run records which method was used.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt
import pandas as pd

from atm_risk.decisions.settings import DecisionSettings, Measure

FloatArray = npt.NDArray[np.float64]
DAYS_PER_YEAR = 365.0
MODEL = "model"
BASE_RATE_SCALED = "base_rate_scaled"


def base_rate_probability(
    score: FloatArray,
    country: pd.Series,
    *,
    horizon_days: float,
    rates: Mapping[str, float],
) -> FloatArray:
    """P(at least one attack within the horizon) from an uncalibrated, positive score.

    Within each country the expected number of attacks in the horizon equals the published
    rate x machines x horizon, shared in proportion to the score: a machine with twice the
    country's mean score gets twice the mean rate. Calibrated in total, not per machine.
    """
    score = np.asarray(score, dtype=float)
    out = np.zeros(len(score))
    keys = country.fillna("*").astype(str).to_numpy()
    for key in np.unique(keys):
        mask = keys == key
        rate = float(rates.get(str(key), rates["*"]))
        s = np.clip(score[mask], 0.0, None)
        mean = float(s.mean()) if len(s) else 0.0
        relative = s / mean if mean > 0 else np.ones_like(s)
        out[mask] = -np.expm1(-rate * horizon_days / DAYS_PER_YEAR * relative)
    return out


def attacks_expected(probability: FloatArray) -> FloatArray:
    """Expected number of attacks (Poisson rate) from P(at least one)."""
    p = np.clip(np.asarray(probability, dtype=float), 0.0, 1.0 - 1e-12)
    return np.asarray(-np.log1p(-p), dtype=float)


def yearly_probability(probability: FloatArray, horizon_days: float) -> FloatArray:
    rate = attacks_expected(probability) * DAYS_PER_YEAR / horizon_days
    return -np.expm1(-rate)


def loss_per_attack(machines: pd.DataFrame, settings: DecisionSettings) -> pd.DataFrame:
    """Cash and damage per attack for each machine, with where each figure came from.

    ``machines`` has the columns ``cash_at_risk_eur``, ``property_damage_eur``,
    ``residential_building`` (the machine's own, may be missing) and
    ``operator_cash_at_risk_eur``, ``operator_property_damage_eur``.
    """
    cash = machines["cash_at_risk_eur"].astype(float)
    cash = cash.fillna(machines["operator_cash_at_risk_eur"].astype(float))
    cash = cash.fillna(settings.cash_at_risk_eur)
    damage = machines["property_damage_eur"].astype(float)
    damage = damage.fillna(machines["operator_property_damage_eur"].astype(float))
    damage = damage.fillna(settings.property_damage_eur)
    residential = machines["residential_building"].astype("boolean").fillna(False).astype(bool)
    damage = damage * np.where(residential, 1.0 + settings.residential_collateral_factor, 1.0)
    return pd.DataFrame(
        {"cash_eur": cash, "damage_eur": damage, "loss_eur": cash + damage},
        index=machines.index,
    )


def remaining_loss(cash: FloatArray, damage: FloatArray, measure: Measure) -> FloatArray:
    """Expected loss factor after ``measure``: (1 - deterrence) x protected loss."""
    protected = cash * (1 - measure.cash_protection) + damage * (1 - measure.damage_protection)
    return np.asarray((1 - measure.deterrence) * protected, dtype=float)
