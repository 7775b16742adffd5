"""A straightforward geopandas implementation of the feature engine's features (benchmark only).

What a competent analyst would write without vectorising: GeoDataFrames and spatial joins
(``sjoin_nearest`` for the nearest motorway access, police station and border,
``sjoin`` with ``dwithin`` — a buffer join without the polygon approximation of the circle —
for the machines within 1 and 5 km, point-in-polygon ``sjoin`` for the population density),
and a Python loop over the machines for the incident features: for each machine the
incidents within the largest kernel reach (spatial index), then per feature a sum over
those within that feature's cutoff.

Same definitions as ``atm_risk.features.engine`` (see its docstring): Gaussian kernel of
bandwidth h widened by the location sigma (h_j^2 = h^2 + sigma_j^2, norm h^2 / h_j^2, cut at
6 h_j) times exp(-age / D); expected counts with the Rice CDF for sigma > 0 (pairs up to
R + 6 sigma, probabilities below 1e-9 left out).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from datetime import datetime

import geopandas as gpd
import numpy as np
import pandas as pd
from scipy.stats import rice

from atm_risk.features.context import AreaContext, PointLayer
from atm_risk.features.engine import (
    PHYSICAL_METHODS,
    FeatureConfig,
    count_column,
    exposure_column,
)

WGS84 = "EPSG:4326"
CUTOFF = 6.0


def _points_frame(
    layers: Sequence[PointLayer], crs: str
) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """All points of the layers (with their label) and the regions where they are complete."""
    parts = []
    for layer in layers:
        labels = layer.labels if layer.labels is not None else [None] * len(layer.xy)
        parts.append(
            gpd.GeoDataFrame(
                {"label": pd.Series(labels, dtype=object)},
                geometry=gpd.points_from_xy(layer.xy[:, 0], layer.xy[:, 1]),
                crs=crs,
            )
        )
    points = (
        pd.concat(parts, ignore_index=True) if parts else gpd.GeoDataFrame(geometry=[], crs=crs)
    )
    coverage = gpd.GeoDataFrame(
        geometry=[layer.coverage for layer in layers if layer.coverage is not None], crs=crs
    )
    everywhere = any(layer.coverage is None for layer in layers)
    coverage.attrs["everywhere"] = everywhere
    return points, coverage


def _nearest(
    machines: gpd.GeoDataFrame, points: gpd.GeoDataFrame, coverage: gpd.GeoDataFrame
) -> tuple[pd.Series, pd.Series]:
    joined = gpd.sjoin_nearest(machines, points, how="left", distance_col="dist")
    joined = joined[~joined.index.duplicated(keep="first")]  # equidistant matches
    if coverage.attrs["everywhere"]:
        covered = pd.Series(True, index=machines.index)
    else:
        inside = gpd.sjoin(machines, coverage, predicate="within", how="inner")
        covered = pd.Series(machines.index.isin(inside.index), index=machines.index)
    distance = joined["dist"].where(covered)
    label = joined["label"].where(covered, None) if "label" in joined else None
    return distance, label


def _hours_per_week(hours: object) -> float:
    if not isinstance(hours, dict) or len(hours) < 7:
        return math.nan
    minutes = 0
    for interval in hours.values():
        if interval == "closed":
            continue
        start_s, end_s = str(interval).split("-")
        start = int(start_s[:2]) * 60 + int(start_s[3:])
        end = int(end_s[:2]) * 60 + int(end_s[3:])
        minutes += 1440 if (start, end) == (0, 1440) else (end - start) % 1440
    return minutes / 60


def _urban_rural(density: float) -> str | None:
    if np.isnan(density):
        return None
    if density >= 1500:
        return "urban"
    return "intermediate" if density >= 300 else "rural"


def naive_features(
    atms: pd.DataFrame,
    subset: np.ndarray,
    incidents: pd.DataFrame,
    context: AreaContext,
    *,
    as_of: datetime,
    config: FeatureConfig,
) -> tuple[pd.DataFrame, float, float]:
    """Features of the machines ``atms.iloc[subset]`` (all machines count for isolation).

    Returns the table, the setup time (projecting and indexing layers, machines and
    incidents: independent of the subset size) and the time of the per-machine part.
    """
    crs = config.metric_crs
    t0 = time.perf_counter()
    all_machines = gpd.GeoDataFrame(
        atms[["atm_pk"]], geometry=gpd.points_from_xy(atms["lon"], atms["lat"]), crs=WGS84
    ).to_crs(crs)
    motorway, motorway_cov = _points_frame(context.motorway, crs)
    police, police_cov = _points_frame(context.police, crs)
    border = gpd.GeoDataFrame(geometry=list(context.border), crs=crs)
    population = [
        gpd.GeoDataFrame(
            {"density": layer.density_per_km2, "layer": layer.name},
            geometry=layer.geometries,
            crs=crs,
        )
        for layer in context.population
    ]
    inc = incidents.copy()
    start = pd.to_datetime(inc["occurred_from"], utc=True)
    t = pd.Timestamp(as_of)
    inc = inc[
        (start < t)
        & inc["method"].isin(PHYSICAL_METHODS)
        & inc["lon"].notna()
        & inc["lat"].notna()
        & (inc["geocode_precision"] != "none")
    ]
    start = pd.to_datetime(inc["occurred_from"], utc=True)
    end = pd.to_datetime(inc["occurred_to"], utc=True).clip(upper=t)
    middle = start + (end - start) / 2
    inc = gpd.GeoDataFrame(
        {
            "age": ((t - middle).dt.total_seconds() / 86_400).clip(lower=0).to_numpy(),
            "sigma": inc["geocode_precision"].map(config.location_uncertainty_m).to_numpy(float),
            "atm_pk": pd.to_numeric(inc["atm_pk"]).to_numpy(float),
        },
        geometry=gpd.points_from_xy(inc["lon"], inc["lat"]),
        crs=WGS84,
    ).to_crs(crs)
    for frame in (all_machines, motorway, police, border, inc, *population):
        _ = frame.sindex  # built once, reused by every join
    setup_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    machines = all_machines.iloc[subset]
    rows = atms.iloc[subset]
    out = pd.DataFrame(index=machines.index)

    # Static features.
    out["motorway_access_distance_m"], out["nearest_motorway_access"] = _nearest(
        machines, motorway, motorway_cov
    )
    out["police_station_distance_m"], _ = _nearest(machines, police, police_cov)
    out["nl_de_border_distance_m"] = gpd.sjoin_nearest(
        machines, border, how="left", distance_col="dist"
    ).pipe(lambda j: j[~j.index.duplicated()])["dist"]
    out["population_density_per_km2"] = np.nan
    out["population_density_source"] = None
    for layer in population:
        todo = machines[out["population_density_per_km2"].isna()]
        hit = gpd.sjoin(todo, layer, predicate="covered_by", how="inner")
        hit = hit[~hit.index.duplicated(keep="first")]
        out.loc[hit.index, "population_density_per_km2"] = hit["density"]
        known = hit[hit["density"].notna()]
        out.loc[known.index, "population_density_source"] = known["layer"]
    out["urban_rural_class"] = out["population_density_per_km2"].apply(_urban_rural)
    for radius, col in ((1_000, "atms_within_1km"), (5_000, "atms_within_5km")):
        near = gpd.sjoin(machines, all_machines, predicate="dwithin", distance=radius)
        out[col] = near.groupby(level=0).size().reindex(machines.index, fill_value=0) - 1
    out["site_type"] = rows["site_type"].astype(str)
    out["night_closure"] = rows["night_closure"].map({True: 1.0, False: 0.0}).astype(float)
    out["opening_hours_per_week"] = rows["opening_hours"].apply(_hours_per_week)
    measures = rows["hardening"].apply(lambda h: set(h) if isinstance(h, list) else set())
    out["hardening_measures_n"] = measures.apply(len).astype(float)
    out["has_cash_protection"] = measures.apply(lambda s: float(bool(s & {"dye_ink", "glue"})))
    out["has_gas_neutraliser"] = measures.apply(lambda s: float("gas_neutraliser" in s))
    out["has_bollards"] = measures.apply(lambda s: float("bollards" in s))

    # Incident features: one machine at a time.
    max_sigma = float(inc["sigma"].max()) if len(inc) else 0.0
    radii = sorted({r for r, _ in config.count_windows} | {5_000.0, 50_000.0})
    reach = max(
        max(CUTOFF * math.hypot(h, max_sigma) for h, _ in config.bandwidths),
        max(radii) + CUTOFF * max_sigma,
    )
    ix, iy = inc.geometry.x.to_numpy(), inc.geometry.y.to_numpy()
    age_all, sigma_all = inc["age"].to_numpy(), inc["sigma"].to_numpy()
    records = []
    for pk, point in zip(machines["atm_pk"], machines.geometry, strict=True):
        near = inc.sindex.query(point, predicate="dwithin", distance=reach)
        d = np.hypot(ix[near] - point.x, iy[near] - point.y)
        age, sigma = age_all[near], sigma_all[near]
        row: dict[str, float] = {}
        for h, days in config.bandwidths:
            h2 = h**2 + sigma**2
            inside = d <= CUTOFF * np.sqrt(h2)
            kernel = (h**2 / h2) * np.exp(-(d**2) / (2 * h2))
            row[exposure_column(h, days)] = float(np.sum((np.exp(-age / days) * kernel)[inside]))
        for radius in radii:
            prob = np.zeros(len(d))
            exact = sigma == 0
            prob[exact & (d <= radius)] = 1.0
            fuzzy = ~exact & (d <= radius + CUTOFF * sigma)
            prob[fuzzy] = rice.cdf(radius / sigma[fuzzy], d[fuzzy] / sigma[fuzzy])
            prob[prob <= 1e-9] = 0.0
            for r, days in config.count_windows:
                if r == radius:
                    row[count_column(r, days)] = float(prob[age < days].sum())
            if radius == 50_000.0:
                last_90 = prob[age < 90].sum()
                before = prob[(age >= 90) & (age < 365)].sum()
                prior = 0.5 / 365
                row["regional_trend_50km_log_ratio"] = math.log(last_90 / 90 + prior) - math.log(
                    before / 275 + prior
                )
            if radius == 5_000.0:
                likely = prob >= 0.5
                row["days_since_last_attack_within_5km"] = (
                    float(age[likely].min()) if likely.any() else math.nan
                )
        own = inc.loc[inc["atm_pk"] == pk, "age"]
        row["days_since_last_attack_on_atm"] = float(own.min()) if len(own) else math.nan
        records.append(row)
    dynamic = pd.DataFrame(records, index=machines.index)
    out = pd.concat([out, dynamic], axis=1)
    out.index = pd.Index(machines["atm_pk"].to_numpy(), name="atm_pk")
    rows_s = time.perf_counter() - t0
    return out, setup_s, rows_s
