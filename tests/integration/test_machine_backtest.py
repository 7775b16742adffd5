"""Machine-level backtest on the shipped Lisbon ATM data set."""

from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from atm_risk.cli import app
from atm_risk.risk.machine_backtest import load_machine_data, prior_count_probability
from tests.conftest import DATA

LISBON = DATA / "atm_attacks_lisbon_trespass"


def test_machine_mode_reports_shares_and_brier_skill() -> None:
    result = CliRunner().invoke(
        app,
        [
            "backtest",
            "--events",
            str(LISBON / "attack_events.csv"),
            "--machines",
            str(LISBON / "atms.csv"),
            "--origins",
            "8",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout.strip().splitlines()[-1])
    assert doc["mode"] == "machines"
    assert doc["machines"] == 723
    assert doc["events_in_test_windows"] > 5
    assert set(doc["methods"]) == {"model", "prior_counts", "base_rate"}
    for m in doc["methods"].values():
        shares = [m["share_of_attacks_in_top"][k] for k in ("1", "5", "10", "20")]
        assert shares == sorted(shares)
        assert 0 <= shares[-1] <= 1
        assert len(m["reliability_by_decile"]) == 10
    assert doc["methods"]["base_rate"]["brier_skill_vs_base_rate"] == 0.0
    # Constant probabilities must not profit from the file order (attacked machines come
    # first in the Lisbon table): with ties broken by id hash, the top 20 % of machines
    # hold far fewer than the 90 %+ that file order would give.
    assert doc["methods"]["base_rate"]["share_of_attacks_in_top"]["20"] < 0.5


def test_prior_count_probability_shrinks_towards_the_mean() -> None:
    data = load_machine_data(LISBON / "atms.csv", LISBON / "attack_events.csv")
    origin = float(data.event_t[-1]) + 1
    p = prior_count_probability(data, origin, 28.0)
    counts = np.bincount(data.event_machine, minlength=len(data.ids))
    assert p[counts == 0].max() < p[counts == counts.max()].min()
    assert (p > 0).all()
    assert (p < 1).all()
