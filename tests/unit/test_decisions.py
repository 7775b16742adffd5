"""Expected loss, probabilities from the baseline, measure offers and recommended actions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atm_risk.decisions.actions import Action, RecentAttack, recommend
from atm_risk.decisions.loss import (
    attacks_expected,
    base_rate_probability,
    loss_per_attack,
    yearly_probability,
)
from atm_risk.decisions.measures import measure_options
from atm_risk.decisions.settings import DecisionSettings

AS_OF = datetime(2026, 11, 1, tzinfo=UTC)


def machines(n: int, **columns: object) -> pd.DataFrame:
    base: dict[str, object] = {
        "x": np.arange(n) * 50_000.0,
        "y": np.zeros(n),
        "country": "DE",
        "site_type": "shop",
        "hardening": [[] for _ in range(n)],
        "night_closure": False,
        "night_withdrawal_share": np.nan,
        "cash_at_risk_eur": np.nan,
        "property_damage_eur": np.nan,
        "residential_building": None,
        "operator_cash_at_risk_eur": np.nan,
        "operator_property_damage_eur": np.nan,
    }
    base.update(columns)
    frame = pd.DataFrame(base, index=pd.Index(range(1, n + 1), name="atm_pk"))
    return frame.join(loss_per_attack(frame, DecisionSettings()))


@given(
    scores=st.lists(st.floats(0.0, 1e3, allow_nan=False), min_size=1, max_size=40),
    rate=st.floats(1e-4, 0.05),
)
@settings(max_examples=60, deadline=None)
def test_base_rate_probability_shares_out_the_country_rate(
    scores: list[float], rate: float
) -> None:
    s = np.asarray(scores)
    p = base_rate_probability(
        s, pd.Series(["DE"] * len(s)), horizon_days=28, rates={"DE": rate, "*": 0.5}
    )
    # expected attacks sum to rate x machines x horizon, whatever the scores
    assert attacks_expected(p).sum() == pytest.approx(rate * len(s) * 28 / 365, rel=1e-6)
    assert np.all((p >= 0) & (p < 1))
    # and keep the order of the scores
    order = np.argsort(s, kind="stable")
    assert np.all(np.diff(p[order]) >= -1e-15)


def test_unknown_country_takes_the_fallback_rate() -> None:
    p = base_rate_probability(
        np.array([1.0, 1.0]), pd.Series(["PT", None]), horizon_days=365, rates={"*": 0.01}
    )
    assert p == pytest.approx([1 - np.exp(-0.01)] * 2)


def test_yearly_probability_compounds_the_horizon() -> None:
    p28 = np.array([0.01])
    assert yearly_probability(p28, 28)[0] == pytest.approx(1 - 0.99 ** (365 / 28))


def test_loss_takes_machine_then_operator_then_default_and_residential_collateral() -> None:
    frame = machines(
        4,
        cash_at_risk_eur=[5_000.0, np.nan, np.nan, np.nan],
        operator_cash_at_risk_eur=[9_000.0, 9_000.0, np.nan, np.nan],
        residential_building=[None, None, None, True],
    )
    assert frame["cash_eur"].tolist() == [5_000, 9_000, 30_000, 30_000]
    assert frame["damage_eur"].tolist() == [70_000, 70_000, 70_000, 105_000]
    assert frame["loss_eur"].iloc[2] == 100_000  # DOMAIN.md: EUR 100k all-in


def test_measures_are_not_offered_twice_or_where_they_do_not_fit() -> None:
    frame = machines(2, site_type=["shop", "free_standing"], hardening=[["glue"], []])
    offers = measure_options(frame, pd.Series([0.01, 0.01], index=frame.index), DecisionSettings())
    first = set(offers.loc[offers["atm_pk"] == 1, "measure"])
    second = set(offers.loc[offers["atm_pk"] == 2, "measure"])
    assert not first & {"glue", "dye_ink"}  # the cash-protection group is installed
    assert "bollards" not in first  # shop: bollards do not apply
    assert {"glue", "dye_ink", "bollards", "relocated_indoors"} <= second
    glue = offers[(offers["atm_pk"] == 2) & (offers["measure"] == "glue")].iloc[0]
    # 0.01 attacks a year x (100k - 0.4 x (30k x 0.05 + 70k))
    assert glue["averted_year_eur"] == pytest.approx(0.01 * (100_000 - 0.4 * (1_500 + 70_000)))


def test_actions_follow_the_thresholds() -> None:
    cfg = DecisionSettings()
    frame = machines(
        4,
        night_closure=[False, True, False, False],
        night_withdrawal_share=[np.nan, np.nan, 0.30, np.nan],
    )
    p_year = np.array([0.02, 0.02, 0.02, 0.0005])
    p28 = 1 - (1 - p_year) ** (28 / 365)
    out = recommend(
        frame, pd.Series(p28, index=frame.index), [], as_of=AS_OF, horizon_days=28, settings=cfg
    )
    # open at night, 2 % a year, night use unknown -> close at night (and says so)
    assert out.loc[1, "action"] == Action.NIGHT_CLOSURE
    assert "night withdrawals not known" in out.loc[1, "action_reasons"][0]["text"]
    # already closed at night: the best measure pays (2 % x ~EUR 64k > EUR 500 a year)
    assert out.loc[2, "action"] == Action.HARDEN
    assert out.loc[2, "action_reasons"][0]["measure"] == out.loc[2, "best_measure"]
    # many night withdrawals: no night closure, harden instead
    assert out.loc[3, "action"] == Action.HARDEN
    assert out.loc[4, "action"] == Action.MONITOR
    assert list(out["risk_band"]) == ["high", "high", "high", "low"]
    el = out.loc[4, "expected_loss_eur"]
    assert el == pytest.approx(attacks_expected(np.array([p28[3]]))[0] * 100_000)


def test_a_recent_attack_nearby_shuts_machines_down_and_is_named() -> None:
    cfg = DecisionSettings(shutdown_radius_km=10, shutdown_days=7)
    frame = machines(3)  # at x = 0, 50 km, 100 km
    attack = RecentAttack(
        incident_pk=7,
        label="police/PR-7",
        occurred_at=AS_OF - timedelta(hours=20),
        when_text="2026-10-31 04:10",
        place="Heerlen",
        method="explosive_solid",
        x=3_000.0,
        y=0.0,
        sigma_m=0.0,
    )
    old = RecentAttack(**{**attack.__dict__, "occurred_at": AS_OF - timedelta(days=9), "x": 50e3})
    probability = pd.Series(1e-4, index=frame.index)
    out = recommend(frame, probability, [attack, old], as_of=AS_OF, horizon_days=28, settings=cfg)
    assert out.loc[1, "action"] == Action.TEMPORARY_SHUTDOWN
    reason = out.loc[1, "action_reasons"][0]
    assert reason["incident"] == "police/PR-7"
    assert "Heerlen" in reason["text"]
    assert "3.0 km away" in reason["text"]
    assert "2026-10-31 04:10" in reason["text"]
    assert "20 h ago" in reason["text"]
    # the attack near machine 2 is 9 days old: outside the 7-day shutdown
    assert out.loc[2, "action"] != Action.TEMPORARY_SHUTDOWN
    assert out.loc[3, "action"] != Action.TEMPORARY_SHUTDOWN


def test_an_uncertain_location_widens_the_shutdown_reach() -> None:
    cfg = DecisionSettings(shutdown_radius_km=10)
    frame = machines(2)  # 0 and 50 km
    attack = RecentAttack(
        incident_pk=1,
        label="news/N1",
        occurred_at=AS_OF - timedelta(days=1),
        when_text="2026-10-31",
        place="Somewhere",
        method="ram_raid",
        x=62_000.0,
        y=0.0,
        sigma_m=3_000.0,
    )
    out = recommend(
        frame,
        pd.Series(1e-4, index=frame.index),
        [attack],
        as_of=AS_OF,
        horizon_days=28,
        settings=cfg,
    )
    # 12 km away, within 10 km + 2 x 3 km
    assert out.loc[2, "action"] == Action.TEMPORARY_SHUTDOWN
    assert "place known to ~3 km" in out.loc[2, "action_reasons"][0]["text"]
    assert out.loc[1, "action"] != Action.TEMPORARY_SHUTDOWN


def test_settings_refuse_inconsistent_values() -> None:
    with pytest.raises(ValueError, match="elevated_band_p_year"):
        DecisionSettings(high_band_p_year=0.001, elevated_band_p_year=0.01)
    with pytest.raises(ValueError, match="fall-back"):
        DecisionSettings(attack_rate_per_machine_year={"NL": 0.001})
