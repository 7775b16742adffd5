"""The simulator: reproducible, calibrated, sprees that hop, labelled simulated."""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest

from atm_risk.geo import project
from atm_risk.risk.simulate import (
    SIMULATED_NOTE,
    SimulationParams,
    simulate_attacks,
    terrain_weight,
)


def _machines(n: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "atm_id": [f"M{i}" for i in range(n)],
            "operator": "Bank",
            "lon": rng.uniform(5.0, 7.0, n),
            "lat": rng.uniform(51.0, 52.5, n),
            "country": "NL",
            "motorway_access_distance_m": rng.uniform(0, 20_000, n),
            "urban_rural_class": rng.choice(["urban", "intermediate", "rural"], n),
            "nl_de_border_distance_m": rng.uniform(0, 100_000, n),
            "site_type": "shop",
            "night_closure": 0.0,
        }
    )


def test_same_seed_same_history_other_seed_other_history() -> None:
    params = SimulationParams(start=date(2023, 1, 1), years=2, per_machine_rate=0.05, seed=3)
    a = simulate_attacks(_machines(), params)
    b = simulate_attacks(_machines(), params)
    c = simulate_attacks(_machines(), SimulationParams(**{**params.__dict__, "seed": 4}))
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(c)


def test_count_is_calibrated_to_the_rate() -> None:
    totals = [
        len(
            simulate_attacks(
                _machines(),
                SimulationParams(start=date(2023, 1, 1), years=5, per_machine_rate=0.02, seed=s),
            )
        )
        for s in range(8)
    ]
    expected = 0.02 * 400 * 5  # 40 a run
    assert np.mean(totals) == pytest.approx(expected, rel=0.25)


def test_every_row_is_labelled_and_at_night() -> None:
    frame = simulate_attacks(
        _machines(), SimulationParams(start=date(2023, 1, 1), years=3, per_machine_rate=0.05)
    )
    assert len(frame) > 20
    assert (frame["simulated"] == "true").all()
    assert (frame["notes"] == SIMULATED_NOTE).all()
    assert frame["incident_id"].str.startswith("SIM-").all()
    local = [
        datetime.fromisoformat(t).astimezone(ZoneInfo("Europe/Amsterdam"))
        for t in frame["occurred_at"]
    ]
    assert all(2 <= t.hour < 5 for t in local)


def test_spree_hops_stay_within_reach() -> None:
    frame = simulate_attacks(
        _machines(800),
        SimulationParams(start=date(2023, 1, 1), years=3, per_machine_rate=0.05, spree_share=0.9),
    )
    sprees = frame[frame["spree"] != ""]
    assert sprees["spree"].nunique() >= 5
    for _, group in sprees.groupby("spree"):
        x, y = project(group["lon"].to_numpy(float), group["lat"].to_numpy(float), "EPSG:3035")
        hops = np.hypot(np.diff(x), np.diff(y))
        assert (hops >= 4_999).all()
        assert (hops <= 60_001).all()


def test_terrain_weight_prefers_motorway_border_rural() -> None:
    base = pd.DataFrame(
        {
            "motorway_access_distance_m": [0.0, 5_000.0, 0.0, 0.0],
            "urban_rural_class": ["urban", "urban", "rural", "urban"],
            "nl_de_border_distance_m": [90_000.0, 90_000.0, 90_000.0, 1_000.0],
        }
    )
    w = terrain_weight(base, SimulationParams(start=date(2023, 1, 1)))
    assert w.tolist() == pytest.approx([1.0, 0.5, 1.5, 2.0])
