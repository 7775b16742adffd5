"""The machine model: soft area labels, calibration, explanations, persistence."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from atm_risk.features.context import AreaContext
from atm_risk.features.engine import FeatureConfig
from atm_risk.risk.atm_model import (
    AtmRiskModel,
    area_labels,
    load_model,
    rolling_backtest,
    save_model,
    training_table,
)
from atm_risk.risk.explain import describe, top_reasons

CONFIG = FeatureConfig(
    exposure_method="exact",
    bandwidths=((2_000, 30), (10_000, 90)),
    count_windows=((25_000, 30),),
)
T0 = datetime(2020, 1, 1, tzinfo=UTC)


def _atms(n: int, rng: np.random.Generator) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "atm_pk": np.arange(1, n + 1),
            "lon": rng.uniform(5.5, 6.5, n),
            "lat": rng.uniform(51.2, 51.8, n),
            "night_closure": rng.integers(0, 2, n).astype(bool),
        }
    )


def _incidents(atms: pd.DataFrame, rng: np.random.Generator, n: int) -> pd.DataFrame:
    # Attacks cluster around the 10 machines with the lowest atm_pk (a planted hotspot).
    pick = rng.integers(0, 10, n)
    start = [T0 + timedelta(days=float(d)) for d in rng.uniform(0, 700, n)]
    return pd.DataFrame(
        {
            "lon": atms["lon"].to_numpy()[pick] + rng.normal(0, 0.002, n),
            "lat": atms["lat"].to_numpy()[pick] + rng.normal(0, 0.002, n),
            "occurred_from": pd.to_datetime(start, utc=True),
            "occurred_to": pd.to_datetime(start, utc=True),
            "geocode_precision": "exact",
            "method": "explosive_solid",
            "atm_pk": np.nan,
        }
    )


@pytest.fixture(scope="module")
def table():  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(2)
    atms = _atms(120, rng)
    incidents = _incidents(atms, rng, 150)
    origins = [T0 + timedelta(days=28 * k) for k in range(4, 25)]
    return (
        atms,
        incidents,
        training_table(
            atms, incidents, AreaContext(crs="EPSG:3035"), origins, timedelta(days=28), CONFIG
        ),
    )


def test_area_labels_are_probabilities_of_an_attack_within_5_km() -> None:
    atms = pd.DataFrame({"atm_pk": [1, 2], "lon": [6.0, 6.5], "lat": [51.5, 51.5]})
    when = T0 + timedelta(days=3)
    incidents = pd.DataFrame(
        {
            "lon": [6.0, 6.0],
            "lat": [51.5, 51.5],
            "occurred_from": pd.to_datetime([when, T0 - timedelta(days=1)], utc=True),
            "occurred_to": pd.to_datetime([when, T0 - timedelta(days=1)], utc=True),
            "geocode_precision": ["exact", "exact"],
            "method": ["ram_raid", "ram_raid"],
        }
    )
    y = area_labels(atms, incidents, T0, T0 + timedelta(days=28), CONFIG)
    assert y.tolist() == pytest.approx([1.0, 0.0])  # the second is before the window
    incidents.loc[0, "geocode_precision"] = "municipality"
    y = area_labels(atms, incidents, T0, T0 + timedelta(days=28), CONFIG)
    assert 0.5 < y[0] < 1.0  # uncertain location: a probability, not a certainty


def test_model_ranks_the_planted_hotspot_and_beats_the_base_rate(table) -> None:  # type: ignore[no-untyped-def]
    _, _, tt = table
    result = rolling_backtest(tt, n_test=8, model=AtmRiskModel(n_calibration=3, features=None))
    model = result["methods"]["model"]
    assert model["share_of_expected_attacks_in_top"]["20"] > 0.5
    assert model["brier_skill_vs_base_rate"] > 0


def test_probabilities_are_calibrated_on_average(table) -> None:  # type: ignore[no-untyped-def]
    _, _, tt = table
    model = AtmRiskModel(n_calibration=4, features=None).fit(tt)
    p = model.predict_proba(tt.features)
    assert p.min() >= 0
    assert p.max() <= 1
    assert p.mean() == pytest.approx(tt.labels.mean(), rel=0.5)


def test_explanations_use_words(table) -> None:  # type: ignore[no-untyped-def]
    _, _, tt = table
    model = AtmRiskModel(n_calibration=4, features=None).fit(tt)
    row = tt.features.iloc[[0]]
    reasons = top_reasons(model.contributions(row).iloc[0], row.iloc[0])
    assert all(r["effect"] > 0 for r in reasons)
    assert all(isinstance(r["text"], str) and r["text"] for r in reasons)
    assert describe(
        "motorway_access_distance_m",
        2100.0,
        pd.Series({"nearest_motorway_access": "A12 exit 16 Ede"}),
    ) == ("2.1 km from motorway access A12 exit 16 Ede")
    assert describe("attacks_within_25km_last_30d", 3.0, pd.Series(dtype=float)) == (
        "3.0 attack(s) within 25 km in the last 30 days"
    )


def test_save_and_load_round_trip(table, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import sklearn

    _, _, tt = table
    model = AtmRiskModel(n_calibration=4, features=None).fit(tt)
    path = tmp_path / "m.joblib"
    save_model(model, {"sklearn_version": sklearn.__version__, "target": "t"}, path)
    loaded, card = load_model(path)
    np.testing.assert_allclose(loaded.predict_proba(tt.features), model.predict_proba(tt.features))
    assert card["target"] == "t"
    save_model(model, {"sklearn_version": "0.0"}, path)
    with pytest.raises(RuntimeError, match="retrain"):
        load_model(path)


def _bt(model_top10: float, prior_top10: float, bss: float) -> dict[str, object]:
    def m(top10: float, skill: float) -> dict[str, object]:
        return {
            "share_of_expected_attacks_in_top": {"10": top10},
            "brier_skill_vs_prior_counts": skill,
        }

    return {"methods": {"model": m(model_top10, bss), "prior_counts": m(prior_top10, 0.0)}}


def test_only_a_model_that_beats_prior_counts_is_promoted(table, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import sklearn

    from atm_risk.config import Settings
    from atm_risk.risk.service import BaselineScorer, ModelScorer, default_scorer
    from atm_risk.risk.training import promotion

    assert promotion(_bt(0.6, 0.5, 0.1))["promoted"] is True
    assert promotion(_bt(0.4, 0.5, 0.1))["promoted"] is False
    assert promotion(_bt(0.6, 0.5, -0.1))["promoted"] is False

    _, _, tt = table
    model = AtmRiskModel(n_calibration=4, features=None).fit(tt)
    path = tmp_path / "m.joblib"
    card = {"sklearn_version": sklearn.__version__, "promotion": {"promoted": False}}
    save_model(model, card, path)
    assert isinstance(default_scorer(Settings(model_path=path)), BaselineScorer)
    save_model(model, {**card, "promotion": {"promoted": True}}, path)
    assert isinstance(default_scorer(Settings(model_path=path)), ModelScorer)
    assert isinstance(default_scorer(Settings(model_path=tmp_path / "none.joblib")), BaselineScorer)
    save_model(model, {**card, "sklearn_version": "0.0", "promotion": {"promoted": True}}, path)
    fallback = default_scorer(Settings(model_path=path))
    assert isinstance(fallback, BaselineScorer)
    assert "retrain" in str(fallback.params()["why_not_the_model"])


def test_default_model_features_are_produced_by_the_engine() -> None:
    from atm_risk.features.engine import build_features
    from atm_risk.risk.atm_model import MODEL_FEATURES

    atms = pd.DataFrame({"atm_pk": [1], "lon": [6.0], "lat": [51.5]})
    empty = _incidents(atms, np.random.default_rng(0), 0)
    table = build_features(atms, empty, AreaContext(crs="EPSG:3035"), as_of=T0)
    assert set(MODEL_FEATURES) <= set(table.columns)
