"""Words for the factors behind a machine's score, as a bank analyst would read them."""

from __future__ import annotations

import math
import re
from typing import Any

import pandas as pd

_WINDOW = re.compile(r"attacks_within_(?P<r>[\d.]+k?m)_last_(?P<d>\d+)d")
_EXPOSURE = re.compile(r"near_repeat_exposure_(?P<r>[\d.]+k?m)_(?P<d>\d+)d")


def _km(metres: float) -> str:
    return f"{metres / 1000:.1f} km"


def describe(feature: str, value: Any, row: pd.Series) -> str | None:
    """A sentence for one feature value, or None when there is nothing to say."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    v = float(value)
    if feature == "motorway_access_distance_m":
        label = row.get("nearest_motorway_access")
        where = f" {label}" if isinstance(label, str) and label else ""
        return f"{_km(v)} from motorway access{where}"
    if feature == "police_station_distance_m":
        return f"{_km(v)} from the nearest police station"
    if feature == "nl_de_border_distance_m":
        return f"{_km(v)} from the Dutch-German border"
    if feature == "population_density_per_km2":
        cls = row.get("urban_rural_class")
        return f"{v:,.0f} inhabitants per km2" + (f" ({cls})" if isinstance(cls, str) else "")
    if feature in {"atms_within_1km", "atms_within_5km"}:
        radius = "1 km" if feature.endswith("1km") else "5 km"
        return f"{v:.0f} other machine(s) within {radius}"
    if feature == "days_since_last_attack_within_5km":
        return f"last attack within 5 km {v:.0f} days before"
    if feature == "days_since_last_attack_on_atm":
        return f"this machine was attacked {v:.0f} days before"
    if feature == "night_closure":
        return "closed at night" if v >= 1 else "open during the 02:00-05:00 attack window"
    if feature == "regional_trend_50km_log_ratio":
        return (
            f"attacks within 50 km {'rising' if v > 0 else 'falling'} (90 days vs the year before)"
        )
    if feature == "opening_hours_per_week":
        return f"open {v:.0f} hours a week"
    if m := _WINDOW.fullmatch(feature):
        return f"{v:.1f} attack(s) within {m['r'].replace('km', ' km')} in the last {m['d']} days"
    if m := _EXPOSURE.fullmatch(feature):
        return f"recent attacks nearby (near-repeat exposure {v:.2f}, {m['r']} / {m['d']} days)"
    if feature.startswith("has_") or feature == "hardening_measures_n":
        return f"{feature.replace('_', ' ')}: {v:g}"
    return None


def top_reasons(
    contributions: pd.Series, features: pd.Series, *, top: int = 3
) -> list[dict[str, Any]]:
    """The features pushing the score up most, with their share of the log-odds."""
    out: list[dict[str, Any]] = []
    for name, effect in contributions.sort_values(ascending=False).items():
        if len(out) >= top or effect <= 0:
            break
        base = str(name).removeprefix("missingindicator_")
        text: str | None
        if str(name).startswith("missingindicator_"):
            text = f"{base.replace('_', ' ')}: not known"
        else:
            text = describe(base, features.get(base), features)
        if text:
            out.append({"factor": base, "effect": round(float(effect), 4), "text": text})
    return out
