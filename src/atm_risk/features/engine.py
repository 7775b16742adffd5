"""One feature table per ATM, as of a time t, from only what was known before t.

Static features (each with its unit in the name):

- ``motorway_access_distance_m``: to the nearest motorway exit/interchange (NL, VILD) or
  motorway node incl. ramps (DE, OSM); missing outside the covered countries.
  ``nearest_motorway_access`` names it where the layer has names.
- ``police_station_distance_m``: missing where the police layer is not complete.
- ``nl_de_border_distance_m``: to the Dutch-German border line.
- ``population_density_per_km2`` of the containing 4-digit postcode area (NL) or
  municipality (DE), its ``population_density_source`` and ``urban_rural_class`` (Eurostat
  density thresholds: urban >= 1500, intermediate >= 300, else rural).
- ``atms_within_1km``, ``atms_within_5km``: other active machines (isolation).
- ``site_type``, ``night_closure``, ``opening_hours_per_week``, ``hardening_measures_n``,
  ``has_cash_protection`` (dye ink or glue), ``has_gas_neutraliser``, ``has_bollards``.

Dynamic features as of t (physical attacks that started before t; age measured from the
middle of the incident's time interval, never past t):

- ``near_repeat_exposure_{R}_{D}d``: sum over attacks of a Gaussian kernel of bandwidth R
  (peak 1, widened by each incident's location uncertainty, same total weight) times
  ``exp(-age / D days)``.
- ``attacks_within_{R}_last_{D}d``: expected number of attacks within R in the last D days
  (an incident known to municipality level counts with the probability that it lay
  within R, from a circular Gaussian location error).
- ``days_since_last_attack_on_atm``, ``days_since_last_attack_within_5km`` (an uncertain
  incident counts when it lay within 5 km with probability >= 0.5); missing if none.
- ``regional_trend_50km_log_ratio``: log of the attack rate within 50 km in the last 90
  days over the rate in the 275 days before (each rate with a prior of 0.5 attacks a year).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import numpy.typing as npt
import pandas as pd
import shapely

from atm_risk.features import kernels
from atm_risk.features.context import AreaContext, PointLayer
from atm_risk.features.kernels import FloatArray
from atm_risk.geo import project

NEAR_REPEAT_BANDWIDTHS: tuple[tuple[float, float], ...] = (
    (400, 14),
    (400, 60),
    (2_000, 30),
    (10_000, 7),
    (10_000, 30),
    (10_000, 90),
    (30_000, 7),
    (30_000, 30),
    (30_000, 365),
)
COUNT_WINDOWS: tuple[tuple[float, float], ...] = (
    (5_000, 7),
    (5_000, 365),
    (5_000, 3650),  # the long-run local history (prior counts)
    (25_000, 7),
    (25_000, 30),
    (50_000, 30),
    (50_000, 90),
    (25_000, 365),
    (50_000, 365),
)
PHYSICAL_METHODS = frozenset(
    {"explosive_gas", "explosive_solid", "explosive_unspecified", "ram_raid"}
)
URBAN_DENSITY, INTERMEDIATE_DENSITY = 1_500.0, 300.0
TREND_RADIUS_M, LAST_ATTACK_RADIUS_M = 50_000.0, 5_000.0
ATM_COLUMNS = ("atm_pk", "lon", "lat")
INCIDENT_COLUMNS = ("lon", "lat", "occurred_from", "occurred_to", "geocode_precision", "method")


def distance_label(metres: float) -> str:
    return f"{metres:g}m" if metres < 1000 else f"{metres / 1000:g}km"


def exposure_column(radius_m: float, days: float) -> str:
    return f"near_repeat_exposure_{distance_label(radius_m)}_{days:g}d"


def count_column(radius_m: float, days: float) -> str:
    return f"attacks_within_{distance_label(radius_m)}_last_{days:g}d"


@dataclass(frozen=True)
class FeatureConfig:
    metric_crs: str = "EPSG:3035"
    location_uncertainty_m: Mapping[str, float] = field(
        default_factory=lambda: {"exact": 0.0, "address": 50.0, "municipality": 3_000.0}
    )
    bandwidths: Sequence[tuple[float, float]] = NEAR_REPEAT_BANDWIDTHS
    count_windows: Sequence[tuple[float, float]] = COUNT_WINDOWS
    exposure_method: str = "auto"  # "exact", "grid" or "auto"


def _check_columns(frame: pd.DataFrame, required: Sequence[str], what: str) -> None:
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(f"{what}: missing column(s) {', '.join(missing)}")


def _utc_ns(values: pd.Series) -> npt.NDArray[np.datetime64]:
    return np.asarray(
        pd.to_datetime(values, utc=True).dt.tz_convert(None).to_numpy(), dtype="datetime64[ns]"
    )


def incident_ages_days(
    occurred_from: pd.Series, occurred_to: pd.Series, as_of: datetime
) -> FloatArray:
    """Age at ``as_of`` of the middle of each interval, the interval cut at ``as_of``."""
    t = pd.Timestamp(as_of).tz_convert(None).to_datetime64().astype("datetime64[ns]")
    start = _utc_ns(occurred_from)
    end = np.minimum(_utc_ns(occurred_to), t)
    mid = start + (end - start) / 2
    age = (t - mid) / np.timedelta64(1, "s") / 86_400.0
    return np.maximum(np.asarray(age, dtype=np.float64), 0.0)


SIGMA_LADDER_START_M, SIGMA_LADDER_RATIO = 250.0, 1.25


def quantise_sigma(sigma: FloatArray) -> FloatArray:
    """Round location errors of 250 m and more to a ladder 250 * 1.25^k (at most ~12 % off).

    The kernels make one pass per distinct error; per-municipality errors would otherwise
    give thousands of passes at continental scale. Smaller errors are kept as they are.
    """
    out = np.asarray(sigma, dtype=float).copy()
    big = out >= SIGMA_LADDER_START_M
    k = np.round(np.log(out[big] / SIGMA_LADDER_START_M) / np.log(SIGMA_LADDER_RATIO))
    out[big] = SIGMA_LADDER_START_M * SIGMA_LADDER_RATIO**k
    return out


@dataclass(frozen=True)
class _Incidents:
    xy: FloatArray
    sigma: FloatArray
    age_days: FloatArray
    atm_pk: FloatArray  # NaN when not linked


def _usable_incidents(
    incidents: pd.DataFrame, as_of: datetime, config: FeatureConfig
) -> _Incidents:
    _check_columns(incidents, INCIDENT_COLUMNS, "incidents")
    start = pd.to_datetime(incidents["occurred_from"], utc=True)
    mask = (
        (start < pd.Timestamp(as_of))
        & incidents["method"].astype(str).isin(PHYSICAL_METHODS)
        & incidents["lon"].notna()
        & incidents["lat"].notna()
        & (incidents["geocode_precision"].astype(str) != "none")
    )
    used = incidents.loc[mask]
    x, y = project(used["lon"].to_numpy(float), used["lat"].to_numpy(float), config.metric_crs)
    precision = used["geocode_precision"].astype(str)
    unknown = sorted(set(precision) - set(config.location_uncertainty_m))
    if unknown:
        raise ValueError(f"no location uncertainty configured for precision(s) {unknown}")
    sigma = np.asarray(precision.map(dict(config.location_uncertainty_m)), dtype=np.float64)
    if "location_sigma_m" in used:
        # A per-incident location error (e.g. from the municipality's area) wins over the
        # default of its precision class.
        own = pd.to_numeric(used["location_sigma_m"], errors="coerce").to_numpy(float)
        sigma = np.where(np.isfinite(own) & (own >= 0), quantise_sigma(own), sigma)
    atm_pk = (
        pd.to_numeric(used["atm_pk"], errors="coerce").to_numpy(float)
        if "atm_pk" in used
        else np.full(len(used), np.nan)
    )
    return _Incidents(
        xy=np.column_stack([x, y]),
        sigma=sigma,
        age_days=incident_ages_days(used["occurred_from"], used["occurred_to"], as_of),
        atm_pk=atm_pk,
    )


def _distance_to_layers(
    xy: FloatArray, layers: Sequence[PointLayer]
) -> tuple[FloatArray, npt.NDArray[np.object_]]:
    """Nearest distance over point layers; missing where no layer covers the machine."""
    covered = np.zeros(len(xy), dtype=bool)
    for layer in layers:
        if layer.coverage is None:
            covered[:] = True
        else:
            covered |= shapely.contains_xy(layer.coverage, xy[:, 0], xy[:, 1])
    todo = np.flatnonzero(covered)  # only these are looked up
    sub = xy[todo]
    best = np.full(len(sub), np.inf)
    best_label = np.full(len(sub), None, dtype=object)
    for layer in layers:
        dist, idx = kernels.nearest(sub, layer.xy)
        better = dist < best
        best[better] = dist[better]
        if layer.labels is not None and len(layer.labels):
            labels = np.asarray(layer.labels, dtype=object)
            best_label[better] = labels[idx[better]]
        else:
            best_label[better] = None
    distance = np.full(len(xy), np.nan)
    distance[todo] = np.where(np.isfinite(best), best, np.nan)
    label = np.full(len(xy), None, dtype=object)
    label[todo] = best_label
    return distance, label


def _border_distance(xy: FloatArray, context: AreaContext) -> FloatArray:
    if context.border is None or len(context.border) == 0:
        return np.full(len(xy), np.nan)
    return kernels.distance_to_lines(xy, context.border)


def _population_density(
    xy: FloatArray, context: AreaContext
) -> tuple[FloatArray, npt.NDArray[np.object_]]:
    density = np.full(len(xy), np.nan)
    source = np.full(len(xy), None, dtype=object)
    for layer in context.population:
        todo = np.flatnonzero(np.isnan(density))
        if not len(todo):
            break
        # Candidates by bounding box, then the point-in-polygon test on prepared polygons
        # (the same test as predicate="covered_by": a point on an edge belongs to the area;
        # much faster for many points).
        point_idx, poly_idx = kernels.points_in_boxes(xy[todo], shapely.bounds(layer.geometries))
        shapely.prepare(layer.geometries)
        inside = shapely.intersects_xy(
            layer.geometries[poly_idx], xy[todo[point_idx], 0], xy[todo[point_idx], 1]
        )
        point_idx, poly_idx = point_idx[inside], poly_idx[inside]
        # A point on a shared boundary matches twice; keep its first polygon (pairs are
        # sorted by point, then polygon).
        first = np.unique(point_idx, return_index=True)[1]
        hit = todo[point_idx[first]]
        density[hit] = layer.density_per_km2[poly_idx[first]]
        source[hit[~np.isnan(density[hit])]] = layer.name
    return density, source


def _urban_rural(density: FloatArray) -> npt.NDArray[np.object_]:
    out = np.full(len(density), None, dtype=object)
    out[density >= URBAN_DENSITY] = "urban"
    out[(density >= INTERMEDIATE_DENSITY) & (density < URBAN_DENSITY)] = "intermediate"
    out[density < INTERMEDIATE_DENSITY] = "rural"
    return out


def _codes(values: pd.Series, key: Callable[[object], object]) -> tuple[list[int], list[object]]:
    """Codes of equal keys and one value per code (raises TypeError for unhashable keys).
    ``None`` is its own key (code 0 if present first), without calling ``key``."""
    index: dict[object, int] = {}
    firsts: list[object] = []
    codes: list[int] = []
    append, get = codes.append, index.get
    none_code = -1
    for value in values:
        if value is None:
            if none_code < 0:
                none_code = len(firsts)
                firsts.append(None)
            append(none_code)
            continue
        k = key(value)
        code = get(k)
        if code is None:
            code = index[k] = len(firsts)
            firsts.append(value)
        append(code)
    return codes, firsts


def _identical(values: pd.Series) -> tuple[npt.NDArray[np.intp], list[object]]:
    """Codes of identical objects (the same object, by ``id``) and one object per code:
    machines often share one schedule or measures object (one per distinct value when
    read in bulk), which is then looked at once instead of once per machine. The loop over
    the machines runs in C (``map(id, ...)`` and a hash table)."""
    objects = np.asarray(values.to_numpy(dtype=object), dtype=object)
    ids = np.fromiter(map(id, objects), dtype=np.int64, count=len(objects))
    codes, unique_ids = pd.factorize(ids)
    first = np.empty(len(unique_ids), dtype=np.intp)
    first[codes[::-1]] = np.arange(len(codes) - 1, -1, -1)  # the first machine of each
    return codes.astype(np.intp, copy=False), list(objects[first])


def _hours_key(hours: object) -> object:
    return tuple(hours.items()) if isinstance(hours, dict) else None


def _hours_per_week_all(values: pd.Series) -> FloatArray:
    """:func:`_hours_per_week` of each value; equal weekly schedules are parsed once."""
    objects, distinct = _identical(values)
    try:
        codes, firsts = _codes(pd.Series(distinct, dtype=object), _hours_key)
    except TypeError:  # unhashable values
        codes, firsts = list(range(len(distinct))), distinct
    per_code = np.array([_hours_per_week(h) for h in firsts], dtype=float)
    return per_code[np.asarray(codes, dtype=np.intp)][objects] if len(objects) else np.zeros(0)


def _hours_per_week(hours: object) -> float:
    if not isinstance(hours, dict) or len(hours) < 7:
        return math.nan
    total = 0.0
    for interval in hours.values():
        if interval == "closed":
            continue
        start, end = (int(p[:2]) * 60 + int(p[3:]) for p in str(interval).split("-"))
        total += (end - start) % 1440 or (1440 if start == 0 and end == 1440 else 0)
    return total / 60.0


def _measure_flags(hardening: pd.Series) -> dict[str, FloatArray]:
    def flags(h: object) -> tuple[float, float, float, float]:
        s = set(h) if isinstance(h, (list, tuple, set)) else set()
        return (
            float(len(s)),
            float(bool(s & {"dye_ink", "glue"})),
            float("gas_neutraliser" in s),
            float("bollards" in s),
        )

    names = ("hardening_measures_n", "has_cash_protection", "has_gas_neutraliser", "has_bollards")
    objects, distinct = _identical(hardening)
    try:
        codes, firsts = _codes(
            pd.Series(distinct, dtype=object),
            lambda h: (type(h), tuple(h)) if isinstance(h, (list, tuple, set)) else None,
        )
    except TypeError:  # unhashable measures: one by one
        codes, firsts = list(range(len(distinct))), distinct
    table = np.array([flags(h) for h in firsts], dtype=float).reshape(-1, 4)
    per_machine = np.asarray(codes, dtype=np.intp)[objects]
    return {name: table[:, i].take(per_machine) for i, name in enumerate(names)}


def static_features(
    atms: pd.DataFrame, xy: FloatArray, context: AreaContext
) -> dict[str, npt.ArrayLike]:
    return spatial_static_features(xy, context) | machine_attributes(atms)


def spatial_static_features(xy: FloatArray, context: AreaContext) -> dict[str, npt.ArrayLike]:
    """The static features that depend on the machine's place (and its neighbours)."""
    motorway, motorway_label = _distance_to_layers(xy, context.motorway)
    police, _ = _distance_to_layers(xy, context.police)
    density, density_source = _population_density(xy, context)
    cols: dict[str, npt.ArrayLike] = {
        "motorway_access_distance_m": motorway,
        "nearest_motorway_access": motorway_label,
        "police_station_distance_m": police,
        "nl_de_border_distance_m": _border_distance(xy, context),
        "population_density_per_km2": density,
        "population_density_source": density_source,
        "urban_rural_class": _urban_rural(density),
        "atms_within_1km": kernels.count_within(xy, xy, 1_000, exclude_self=True),
        "atms_within_5km": kernels.count_within(xy, xy, 5_000, exclude_self=True),
    }
    return cols


def machine_attributes(atms: pd.DataFrame) -> dict[str, npt.ArrayLike]:
    """The static features of the machine itself (site, hours, hardening)."""
    cols: dict[str, npt.ArrayLike] = {}
    n = len(atms)
    cols["site_type"] = (
        atms["site_type"].astype(str).to_numpy() if "site_type" in atms else np.full(n, "unknown")
    )
    if "night_closure" in atms:
        closure = atms["night_closure"].map({True: 1.0, False: 0.0})
        cols["night_closure"] = pd.to_numeric(closure, errors="coerce").to_numpy(float)
    else:
        cols["night_closure"] = np.full(n, np.nan)
    cols["opening_hours_per_week"] = (
        _hours_per_week_all(atms["opening_hours"])
        if "opening_hours" in atms
        else np.full(n, np.nan)
    )
    hardening = atms["hardening"] if "hardening" in atms else pd.Series([[]] * n)
    cols.update(_measure_flags(hardening))
    return cols


def dynamic_features(
    atms: pd.DataFrame, xy: FloatArray, inc: _Incidents, config: FeatureConfig
) -> dict[str, npt.ArrayLike]:
    cols: dict[str, npt.ArrayLike] = {}
    # One call for all bandwidths and decays: terms with the same reach share their pairs.
    sums = kernels.gaussian_exposures(
        xy,
        inc.xy,
        [np.exp(-inc.age_days / days) for _, days in config.bandwidths],
        inc.sigma,
        [radius for radius, _ in config.bandwidths],
        method=config.exposure_method,  # type: ignore[arg-type]
    )
    for (radius, days), total in zip(config.bandwidths, sums, strict=True):
        cols[exposure_column(radius, days)] = total

    windows = list(config.count_windows)
    radii = sorted({r for r, _ in windows} | {TREND_RADIUS_M, LAST_ATTACK_RADIUS_M})
    # Expected counts per age interval; one call for all radii, so that the pairs of each
    # uncertain incident are found once for all of them.
    requests: list[tuple[float, list[tuple[float, float]]]] = []
    for radius in radii:
        intervals = [(0.0, float(days)) for r, days in windows if r == radius]
        if radius == TREND_RADIUS_M:
            intervals += [(0.0, 90.0), (90.0, 365.0)]
        requests.append((radius, intervals))
    all_sums = kernels.expected_counts_multi(xy, inc.xy, inc.sigma, inc.age_days, requests)
    for radius, sums in zip(radii, all_sums, strict=True):
        for (r, days), total in zip(
            [(r, d) for r, d in windows if r == radius], sums, strict=False
        ):
            cols[count_column(r, days)] = total
        if radius == TREND_RADIUS_M:
            last_90, prev = sums[-2], sums[-1]
            # Rates per day, each with the same prior of 0.5 attacks a year, so that no
            # activity at all gives a trend of exactly 0.
            prior = 0.5 / 365
            cols["regional_trend_50km_log_ratio"] = np.log(last_90 / 90 + prior) - np.log(
                prev / 275 + prior
            )
    # An uncertain incident counts when it lay within 5 km with probability >= 0.5.
    nearest = kernels.likely_min(xy, inc.xy, inc.sigma, LAST_ATTACK_RADIUS_M, inc.age_days)
    cols["days_since_last_attack_within_5km"] = np.where(np.isfinite(nearest), nearest, np.nan)
    # Attacks on the machine itself (linked incidents).
    pk = atms["atm_pk"].to_numpy()
    linked = ~np.isnan(inc.atm_pk)
    own = pd.Series(inc.age_days[linked]).groupby(inc.atm_pk[linked]).min()
    cols["days_since_last_attack_on_atm"] = pd.Series(pk, dtype=float).map(own).to_numpy(float)
    return cols


def build_features(
    atms: pd.DataFrame,
    incidents: pd.DataFrame,
    context: AreaContext,
    *,
    as_of: datetime,
    config: FeatureConfig | None = None,
) -> pd.DataFrame:
    """The feature table, one row per machine in ``atms`` (same order), indexed by atm_pk.

    Only incidents that started strictly before ``as_of`` are used; the inputs are not
    modified. ``context`` must be in ``config.metric_crs``.
    """
    if as_of.tzinfo is None:
        raise ValueError("as_of must be timezone-aware")
    config = config or FeatureConfig()
    if context.crs != config.metric_crs:
        raise ValueError(
            f"the area context is in {context.crs}, the features use {config.metric_crs}"
        )
    _check_columns(atms, ATM_COLUMNS, "atms")
    x, y = project(atms["lon"].to_numpy(float), atms["lat"].to_numpy(float), config.metric_crs)
    xy = np.column_stack([x, y])
    inc = _usable_incidents(incidents, as_of, config)
    # The place-dependent features with the machines in spatial order (neighbours together:
    # faster look-ups; the values do not depend on the order), put back in the order of
    # ``atms``.
    order = kernels.spatial_order(xy)
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    spatial = spatial_static_features(xy[order], context)
    dynamic = dynamic_features(atms[["atm_pk"]].iloc[order], xy[order], inc, config)
    columns = (
        {name: np.asarray(values).take(inverse) for name, values in spatial.items()}
        | machine_attributes(atms)
        | {name: np.asarray(values).take(inverse) for name, values in dynamic.items()}
    )
    # Every column is a new array: no copy (and no consolidation into one block).
    table = pd.DataFrame(
        columns, index=pd.Index(atms["atm_pk"].to_numpy(), name="atm_pk"), copy=False
    )
    table.attrs["as_of"] = as_of.isoformat()
    table.attrs["missing_layers"] = list(context.missing_layers)
    return table
