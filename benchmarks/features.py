"""Benchmark of the feature engine on SIMULATED data (for speed only, not for model skill).

    .venv/bin/python benchmarks/features.py --atms 1000000 --incidents 200000

1. Simulates N machines and M incidents over Europe (lon -10..30, lat 36..62), clustered
   around a few hundred random "cities" so that densities vary as for real machines, and an
   area context built directly in EPSG:3035 (motorway and police point layers, border lines,
   population polygons; no database). Generation is not timed.
2. Times ``engine.build_features`` on all N machines (wall time, peak RSS of the process).
3. Times a straightforward geopandas implementation of the same features
   (``_naive_features.py``) on a subset of K machines with all incidents, and the fast engine
   on the same subset; reports the speed-up and how closely the two agree.

The last line printed is a JSON object with the figures.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import resource
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd
import shapely
from scipy.spatial import cKDTree

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _naive_features import naive_features

from atm_risk.features import engine, kernels
from atm_risk.features.context import AreaContext, PointLayer, PolygonLayer
from atm_risk.geo import project

CRS = "EPSG:3035"
AS_OF = datetime(2025, 1, 1, tzinfo=UTC)
LON_RANGE, LAT_RANGE = (-10.0, 30.0), (36.0, 62.0)
N_CITIES = 300
N_MOTORWAY_POINTS = 400_000
N_POLICE_POINTS = 20_000
POPULATION_GRID = (100, 100)  # two layers of 100 x 100 squares
SITE_TYPES = ("branch", "retail", "standalone", "transport_hub", "petrol_station")
METHODS = ("explosive_gas", "explosive_solid", "ram_raid")
HARDENING_CHOICES: tuple[list[str], ...] = (
    [],
    [],
    [],
    ["dye_ink"],
    ["gas_neutraliser"],
    ["bollards", "glue"],
    ["dye_ink", "gas_neutraliser", "bollards"],
)
ALWAYS_OPEN = dict.fromkeys(("mon", "tue", "wed", "thu", "fri", "sat", "sun"), "00:00-24:00")
SHOP_HOURS = {
    **dict.fromkeys(("mon", "tue", "wed", "thu", "fri", "sat"), "07:00-23:00"),
    "sun": "closed",
}
OPENING_CHOICES: tuple[dict[str, str] | None, ...] = (None, None, None, ALWAYS_OPEN, SHOP_HOURS)

FloatArray = npt.NDArray[np.float64]


def rss_now_mb() -> float:
    """Current resident set size of this process (MB)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 1e6


def cpu_seconds() -> float:
    """User + system CPU time of this process (all threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss_peak_mb() -> float:
    """Peak resident set size of this process so far (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6


# --- simulation -------------------------------------------------------------------------


@dataclass
class Cities:
    lon: FloatArray
    lat: FloatArray
    size: FloatArray  # relative weight (heavy-tailed)
    spread_km: FloatArray
    xy: FloatArray  # EPSG:3035


def simulate_cities(rng: np.random.Generator) -> Cities:
    """Rank-size cities (the largest holds about 4 % of the machines, as Paris or London
    hold about 2 % of Europe's people), at random places."""
    lon = rng.uniform(*LON_RANGE, N_CITIES)
    lat = rng.uniform(*LAT_RANGE, N_CITIES)
    size = np.arange(1, N_CITIES + 1) ** -0.6 * rng.lognormal(0.0, 0.3, N_CITIES)
    spread_km = 4.0 + 12.0 * np.sqrt(size / size.max())
    x, y = project(lon, lat, CRS)
    return Cities(lon, lat, size, spread_km, np.column_stack([x, y]))


def scatter(
    rng: np.random.Generator, cities: Cities, n: int, weight: FloatArray, rural: float, scale: float
) -> tuple[FloatArray, FloatArray]:
    """n lon/lat points around cities chosen by ``weight``; a share ``rural`` spread anywhere."""
    n_rural = int(n * rural)
    city = rng.choice(N_CITIES, size=n - n_rural, p=weight / weight.sum())
    km = cities.spread_km[city] * scale
    dlat = rng.normal(0.0, 1.0, len(city)) * km / 111.0
    dlon = rng.normal(0.0, 1.0, len(city)) * km / (111.0 * np.cos(np.radians(cities.lat[city])))
    lon = np.concatenate([cities.lon[city] + dlon, rng.uniform(*LON_RANGE, n_rural)])
    lat = np.concatenate([cities.lat[city] + dlat, rng.uniform(*LAT_RANGE, n_rural)])
    order = rng.permutation(n)
    return lon[order], lat[order]


def simulate_atms(rng: np.random.Generator, cities: Cities, n: int) -> pd.DataFrame:
    lon, lat = scatter(rng, cities, n, cities.size, rural=0.15, scale=1.0)
    # Shared objects: a million equal dicts/lists would only cost memory.
    opening = np.empty(len(OPENING_CHOICES), dtype=object)
    opening[:] = list(OPENING_CHOICES)
    hardening = np.empty(len(HARDENING_CHOICES), dtype=object)
    hardening[:] = list(HARDENING_CHOICES)
    night = np.array([True, False, None], dtype=object)
    return pd.DataFrame(
        {
            "atm_pk": np.arange(1, n + 1, dtype=np.int64),
            "lon": lon,
            "lat": lat,
            "site_type": np.asarray(SITE_TYPES, dtype=object)[rng.integers(0, len(SITE_TYPES), n)],
            "night_closure": night[rng.choice(3, size=n, p=[0.3, 0.6, 0.1])],
            "opening_hours": opening[rng.integers(0, len(OPENING_CHOICES), n)],
            "hardening": hardening[rng.integers(0, len(HARDENING_CHOICES), n)],
        }
    )


def simulate_incidents(
    rng: np.random.Generator, cities: Cities, atms: pd.DataFrame, m: int
) -> pd.DataFrame:
    # Attack hot spots are not simply the biggest cities.
    weight = cities.size**0.8 * rng.lognormal(0.0, 0.7, N_CITIES)
    lon, lat = scatter(rng, cities, m, weight, rural=0.2, scale=1.5)
    precision = np.where(rng.random(m) < 0.8, "exact", "municipality").astype(object)
    atm_pk = np.full(m, np.nan)
    linked = np.flatnonzero(rng.random(m) < 0.02)
    target = rng.integers(0, len(atms), len(linked))
    atm_pk[linked] = atms["atm_pk"].to_numpy()[target]
    lon[linked] = atms["lon"].to_numpy()[target]
    lat[linked] = atms["lat"].to_numpy()[target]
    precision[linked] = "exact"
    age_s = rng.uniform(0.0, 730 * 86_400.0, m)
    start = pd.Timestamp(AS_OF) - pd.to_timedelta(np.round(age_s), unit="s")
    duration = pd.to_timedelta(np.round(rng.exponential(2 * 3600.0, m)), unit="s")
    return pd.DataFrame(
        {
            "lon": lon,
            "lat": lat,
            "occurred_from": start,
            "occurred_to": start + duration,
            "geocode_precision": precision,
            "method": np.asarray(METHODS, dtype=object)[rng.integers(0, len(METHODS), m)],
            "atm_pk": pd.array(atm_pk, dtype="Int64"),
        }
    )


def _polyline_points(
    rng: np.random.Generator, starts: FloatArray, ends: FloatArray, n_points: int
) -> tuple[FloatArray, npt.NDArray[np.intp]]:
    """Points evenly spread along bent polylines start -> random midpoint -> end."""
    seg_len = np.hypot(*(ends - starts).T)
    normal = (
        np.column_stack([-(ends - starts)[:, 1], (ends - starts)[:, 0]])
        / np.maximum(seg_len, 1.0)[:, None]
    )
    mid = (starts + ends) / 2 + normal * (seg_len * rng.uniform(-0.2, 0.2, len(seg_len)))[:, None]
    a = np.vstack([starts, mid])
    b = np.vstack([mid, ends])
    road = np.concatenate([np.arange(len(starts)), np.arange(len(starts))])
    length = np.hypot(*(b - a).T)
    per = np.maximum(1, np.round(length / length.sum() * n_points)).astype(np.intp)
    seg = np.repeat(np.arange(len(a)), per)
    t = rng.random(len(seg))
    xy = a[seg] + (b[seg] - a[seg]) * t[:, None]
    return xy, road[seg]


def simulate_context(rng: np.random.Generator, cities: Cities, atm_xy: FloatArray) -> AreaContext:
    lo = atm_xy.min(axis=0) - 20_000
    hi = atm_xy.max(axis=0) + 20_000
    mid_x = (lo[0] + hi[0]) / 2
    ctx = AreaContext(crs=CRS)

    # Motorways: each city joined to its 3 nearest cities; points along the roads.
    _, nbr = cKDTree(cities.xy).query(cities.xy, k=4)
    edges = np.unique(
        np.sort(np.column_stack([np.repeat(np.arange(N_CITIES), 3), nbr[:, 1:].ravel()]), axis=1),
        axis=0,
    )
    road_xy, road = _polyline_points(
        rng, cities.xy[edges[:, 0]], cities.xy[edges[:, 1]], N_MOTORWAY_POINTS
    )
    west = road_xy[:, 0] < mid_x
    labels: list[str | None] = [
        f"A{r} exit {i}" if i % 10 else None for i, r in enumerate(road[west])
    ]
    ctx.motorway.append(
        PointLayer(
            "sim_motorway_west",
            road_xy[west],
            labels,
            coverage=shapely.box(lo[0], lo[1], mid_x, hi[1]),
        )
    )
    # The east layer leaves the north-east corner uncovered (distance missing there).
    ctx.motorway.append(
        PointLayer(
            "sim_motorway_east",
            road_xy[~west],
            None,
            coverage=shapely.box(mid_x, lo[1], hi[0], lo[1] + 0.75 * (hi[1] - lo[1])),
        )
    )

    # Police: a layer complete within a polygon around two thirds of the cities, and a
    # layer complete within a circle; elsewhere the distance is missing.
    n_a = int(N_POLICE_POINTS * 0.7)
    some = rng.choice(N_CITIES, size=2 * N_CITIES // 3, replace=False)
    region_a = shapely.buffer(shapely.multipoints(cities.xy[some]), 150_000, quad_segs=4)
    region_a = shapely.simplify(shapely.union_all(region_a), 5_000)
    idx = rng.choice(some, size=n_a, p=cities.size[some] / cities.size[some].sum())
    police_a = cities.xy[idx] + rng.normal(0, 1, (n_a, 2)) * (cities.spread_km[idx, None] * 1000)
    police_a = police_a[shapely.contains_xy(region_a, police_a[:, 0], police_a[:, 1])]
    ctx.police.append(PointLayer("sim_police_a", police_a, None, coverage=region_a))
    centre = cities.xy[rng.integers(N_CITIES)]
    radius = 400_000.0
    n_b = N_POLICE_POINTS - len(police_a)
    r = radius * np.sqrt(rng.random(n_b))
    phi = rng.uniform(0, 2 * math.pi, n_b)
    police_b = centre + np.column_stack([r * np.cos(phi), r * np.sin(phi)])
    region_b = shapely.buffer(shapely.points(centre), radius, quad_segs=32)
    ctx.police.append(PointLayer("sim_police_b", police_b, None, coverage=region_b))

    # Borders: a few long random walks.
    lines = []
    for _ in range(4):
        steps = rng.normal(0, 1, (600, 2)) * 4_000 + rng.normal(0, 1, 2) * 3_000
        lines.append(
            shapely.linestrings(cities.xy[rng.integers(N_CITIES)] + np.cumsum(steps, axis=0))
        )
    ctx.border = np.array(lines, dtype=object)

    # Population: a fine grid over the west half (some densities unknown), then a coarse
    # grid over the whole map.
    for name, (x0, x1) in (("sim_pop_west", (lo[0], mid_x)), ("sim_pop_all", (lo[0], hi[0]))):
        nx, ny = POPULATION_GRID
        gx = np.linspace(x0, x1, nx + 1)
        gy = np.linspace(lo[1], hi[1], ny + 1)
        ix, iy = np.meshgrid(np.arange(nx), np.arange(ny))
        ix, iy = ix.ravel(), iy.ravel()
        squares = shapely.box(gx[ix], gy[iy], gx[ix + 1], gy[iy + 1])
        density = rng.lognormal(np.log(150.0), 1.5, len(squares))
        if name == "sim_pop_west":
            density[rng.random(len(squares)) < 0.05] = np.nan
        ctx.population.append(PolygonLayer(name, squares, density))
    return ctx


# --- comparison -------------------------------------------------------------------------


def compare(reference: pd.DataFrame, other: pd.DataFrame) -> dict[str, float]:
    """Per feature: max |a - b| / max(1, |a|, |b|) (relative above 1, absolute below; inf
    where one side is missing and the other not), or for labels the share that differ."""
    out: dict[str, float] = {}
    for col in reference.columns:
        if col not in other.columns:
            continue
        a, b = reference[col], other[col].reindex(reference.index)
        if a.dtype == object or b.dtype == object:
            same = [(x is None and y is None) or x == y for x, y in zip(a, b, strict=True)]
            out[col] = 1.0 - float(np.mean(same)) if same else 0.0
            continue
        x, y = a.to_numpy(float), b.to_numpy(float)
        if not np.array_equal(np.isnan(x), np.isnan(y)):
            out[col] = math.inf
            continue
        ok = ~np.isnan(x)
        scale = np.maximum(np.maximum(np.abs(x[ok]), np.abs(y[ok])), 1.0)
        out[col] = float(np.max(np.abs(x[ok] - y[ok]) / scale)) if ok.any() else 0.0
    return out


KINDS = {
    "distances": ("_distance_m",),
    "isolation_counts": ("atms_within_",),
    "exposures": ("near_repeat_exposure_",),
    "expected_counts": ("attacks_within_", "regional_trend"),
    "days_since": ("days_since_",),
    "static_attributes": (
        "nearest_motorway_access",
        "population_",
        "urban_rural_class",
        "site_type",
        "night_closure",
        "opening_hours",
        "hardening",
        "has_",
    ),
}


def summary(diffs: dict[str, float]) -> dict[str, float]:
    """The worst difference per kind of feature."""
    out = {}
    for kind, parts in KINDS.items():
        values = [v for k, v in diffs.items() if any(p in k for p in parts)]
        if values:
            out[kind] = max(values)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--atms", type=int, default=100_000)
    parser.add_argument("--incidents", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--naive-atms", type=int, default=2_000)
    args = parser.parse_args(argv)
    print("SIMULATED data, for speed only, not for model skill.")

    t0 = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    cities = simulate_cities(rng)
    atms = simulate_atms(rng, cities, args.atms)
    incidents = simulate_incidents(rng, cities, atms, args.incidents)
    atm_x, atm_y = project(atms["lon"].to_numpy(), atms["lat"].to_numpy(), CRS)
    context = simulate_context(rng, cities, np.column_stack([atm_x, atm_y]))
    del atm_x, atm_y
    gc.collect()
    gen_s = time.perf_counter() - t0
    print(
        f"generated {len(atms):,} machines, {len(incidents):,} incidents, "
        f"{sum(len(p.xy) for p in context.motorway):,} motorway points, "
        f"{sum(len(p.xy) for p in context.police):,} police points, "
        f"{sum(len(p.geometries) for p in context.population):,} population polygons "
        f"in {gen_s:.1f} s (not timed)"
    )
    rss_before, peak_before = rss_now_mb(), rss_peak_mb()
    print(f"RSS before the run: {rss_before:,.0f} MB (peak so far {peak_before:,.0f} MB)")

    config = engine.FeatureConfig()
    load_before = os.getloadavg()[0]
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    full = engine.build_features(atms, incidents, context, as_of=AS_OF, config=config)
    wall = time.perf_counter() - t0
    cpu = cpu_seconds() - cpu0
    load_after = os.getloadavg()[0]
    peak = rss_peak_mb()
    fast_per_atm_ms = wall / len(atms) * 1e3
    print(
        f"fast engine, all {len(atms):,} machines: {wall:.2f} s "
        f"({fast_per_atm_ms:.4f} ms per machine), {full.shape[1]} features; "
        f"CPU {cpu:.1f} s on {os.cpu_count()} cores"
    )
    print(
        f"load average (1 min) before/after the run: {load_before:.2f}/{load_after:.2f} "
        "(above ~1 means other processes competed for the cores)"
    )
    print(f"peak RSS of the process: {peak:,.0f} MB (+{peak - rss_before:,.0f} MB over the start)")

    k = min(args.naive_atms, len(atms))
    subset = np.sort(np.random.default_rng(args.seed + 1).choice(len(atms), k, replace=False))
    t0 = time.perf_counter()
    fast_subset = engine.build_features(
        atms.iloc[subset], incidents, context, as_of=AS_OF, config=config
    )
    fast_subset_s = time.perf_counter() - t0
    naive, naive_setup_s, naive_rows_s = naive_features(
        atms, subset, incidents, context, as_of=AS_OF, config=config
    )
    naive_s = naive_setup_s + naive_rows_s
    # The setup (projecting and indexing the layers, all machines and incidents) is paid
    # once, whatever the number of machines: spread it over all N, the per-machine part
    # over the K machines it was run on.
    naive_per_atm_ms = (naive_setup_s / len(atms) + naive_rows_s / k) * 1e3
    speedup = naive_per_atm_ms / fast_per_atm_ms
    print(
        f"naive geopandas, {k:,} machines: {naive_s:.2f} s "
        f"(setup {naive_setup_s:.2f} s + per machine {naive_rows_s / k * 1e3:.2f} ms), "
        f"{naive_per_atm_ms:.3f} ms per machine with the setup spread over all {len(atms):,}"
    )
    print(
        f"fast engine, same {k:,} machines: {fast_subset_s:.2f} s "
        f"({fast_subset_s / k * 1e3:.3f} ms per machine)"
    )
    print(f"speed-up (naive per machine / fast per machine on the full run): {speedup:.1f}x")

    # Reference: the full run's rows (isolation counts need all machines); the exposures
    # also against the subset run, which evaluates them exactly (the full run may use the
    # grid approximation for wide kernels, see kernels.GRID_KERNEL_ERROR).
    vs_full = compare(naive, full.iloc[subset])
    vs_subset = compare(naive, fast_subset.drop(columns=["atms_within_1km", "atms_within_5km"]))
    print(
        "agreement, naive vs fast: max |a - b| / max(1, |a|, |b|) per feature "
        "(labels: share of machines differing)"
    )
    print(f"  {'feature':<45} {'full run':>10} {'subset run':>11}")
    for col in naive.columns:
        full_diff, subset_diff = vs_full.get(col, math.nan), vs_subset.get(col, math.nan)
        print(f"  {col:<45} {full_diff:>10.2e} {subset_diff:>11.2e}")
    exposure_diffs = [v for k, v in vs_full.items() if k.startswith("near_repeat_exposure_")]
    grid_bound = {
        "per_kernel_of_its_peak": kernels.GRID_KERNEL_ERROR,
        "statement": (
            "exposures on the grid (wide kernels, many pairs): each incident's kernel within "
            f"{kernels.GRID_KERNEL_ERROR:.0e} of its peak, so |grid - exact| <= "
            f"{kernels.GRID_KERNEL_ERROR:.0e} * sum_j w_j h^2 / h_j^2; every other feature "
            "is exact (kernels cut at 6 bandwidths, probabilities below 1e-9 left out)"
        ),
        "measured_max_relative_exposure_difference": max(exposure_diffs, default=0.0),
    }
    print(
        f"documented error bound: {grid_bound['statement']}; measured on this subset: "
        "max |a - b| / max(1, |a|, |b|) = "
        f"{grid_bound['measured_max_relative_exposure_difference']:.1e}"
    )
    agreement = {
        "metric": "max |a-b| / max(1, |a|, |b|); labels: share differing; inf: missing differs",
        "full_run": summary(vs_full),
        "subset_run": summary(vs_subset),
        "max_full_run": max(vs_full.values()),
        "max_subset_run": max(vs_subset.values()),
        "grid_exposure_error_bound": grid_bound,
        "per_feature_full_run": vs_full,
    }
    print(
        json.dumps(
            {
                "atms": len(atms),
                "incidents": len(incidents),
                "simulated": True,
                "note": "simulated data, for speed only, not for model skill",
                "seed": args.seed,
                "generation_s": round(gen_s, 2),
                "wall_time_s": round(wall, 3),
                "cpu_time_s": round(cpu, 1),
                "load_avg_1min_before_after": [round(load_before, 2), round(load_after, 2)],
                "rss_before_mb": round(rss_before, 1),
                "peak_rss_mb": round(peak, 1),
                "features": int(full.shape[1]),
                "naive_subset_atms": k,
                "naive_time_s": round(naive_s, 3),
                "naive_setup_s": round(naive_setup_s, 3),
                "naive_per_atm_ms": round(naive_per_atm_ms, 4),
                "fast_subset_time_s": round(fast_subset_s, 3),
                "fast_per_atm_ms": round(fast_per_atm_ms, 5),
                "speedup": round(speedup, 1),
                "agreement": agreement,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
