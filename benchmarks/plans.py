"""Benchmark of the plan solvers on SIMULATED instances of realistic size (speed only).

    .venv/bin/python benchmarks/plans.py [--seed 0] [--time-limit 8]

Hardening plan (``atm_risk.decisions.budget.solve_budget``, multiple-choice knapsack):
machines with a log-normal yearly expected loss (median EUR 1,500, heavy tail), five measures
each (dye/glue, gas neutraliser, bollards, dye + neutraliser, relocation) with list costs
varied +-15 % per machine (cents) and a fixed risk reduction; the value of an option is the
loss it averts over five years. Sizes: 4,000 machines x 5 (budget EUR 500k), 20,000 x 5
(EUR 2.5M; 100,000 options, the default exact limit) and 100,000 x 5 (EUR 12.5M; above the
limit, so the greedy runs).

Patrol plan (``atm_risk.decisions.patrol``, maximal covering location problem): 4,000
machines clustered around 60 towns in a 280 x 300 km box (about the Netherlands), weights
log-normal; 2,000 candidate sites (motorway access points spread over the box, police
stations in towns, centres near machines); radius = 10 minutes at 60 km/h over a road factor
1.3 (7.7 km straight line); k = 5 and 20.

Each instance is also solved with the greedy forced (``exact_max_* = 0``) to show its
quality. Generation is not timed. The last line printed is a JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy

from atm_risk.decisions.budget import KnapsackSolution, solve_budget
from atm_risk.decisions.patrol import CoverSolution, coverage_matrix, solve_mclp

MEASURE_COST_EUR = np.array([2_500.0, 6_000.0, 12_000.0, 8_000.0, 40_000.0])
MEASURE_REDUCTION = np.array([0.5, 0.6, 0.3, 0.8, 0.95])
HORIZON_YEARS = 5
HARDENING_SIZES = ((4_000, 500_000.0), (20_000, 2_500_000.0), (100_000, 12_500_000.0))
PATROL_DEMAND, PATROL_SITES, PATROL_UNITS = 4_000, 2_000, (5, 20)
BOX_M = (280_000.0, 300_000.0)
MINUTES, SPEED_KMH, ROAD_FACTOR = 10.0, 60.0, 1.3


def hardening_instance(
    rng: np.random.Generator, n: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    loss = rng.lognormal(np.log(1_500.0), 1.2, n)
    m = len(MEASURE_COST_EUR)
    item = np.repeat(np.arange(n, dtype=np.int64), m)
    cost = np.round(np.tile(MEASURE_COST_EUR, n) * rng.uniform(0.85, 1.15, m * n), 2)
    value = np.repeat(loss, m) * np.tile(MEASURE_REDUCTION, n) * HORIZON_YEARS
    return item, cost, value


def patrol_instance(
    rng: np.random.Generator,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    towns = rng.uniform((0.0, 0.0), BOX_M, (60, 2))
    size = rng.pareto(1.2, 60) + 1.0
    share = size / size.sum()
    demand = towns[rng.choice(60, PATROL_DEMAND, p=share)]
    demand = demand + rng.normal(0.0, 4_000.0, (PATROL_DEMAND, 2))
    weights = rng.lognormal(np.log(300.0), 1.3, PATROL_DEMAND)
    motorway = rng.uniform((0.0, 0.0), BOX_M, (900, 2))
    police = towns[rng.choice(60, 300, p=share)] + rng.normal(0.0, 3_000.0, (300, 2))
    centres = demand[rng.choice(PATROL_DEMAND, PATROL_SITES - 1_200)]
    centres = centres + rng.normal(0.0, 500.0, (len(centres), 2))
    return demand, np.vstack((motorway, police, centres)), weights


def summary(solution: KnapsackSolution | CoverSolution, seconds: float) -> dict[str, Any]:
    bound = solution.bound
    gap = None if not bound else (bound - solution.value) / bound
    return {
        "time_s": round(seconds, 3),
        "method": solution.method,
        "optimal": solution.optimal,
        "value": round(solution.value, 2),
        "bound": None if bound is None else round(bound, 2),
        "gap": None if gap is None else float(f"{gap:.3g}"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--time-limit", type=float, default=8.0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    results: dict[str, Any] = {}

    for n, budget in HARDENING_SIZES:
        item, cost, value = hardening_instance(rng, n)
        runs = {}
        for label, exact_max in (("default", 100_000), ("greedy", 0)):
            start = time.perf_counter()
            solution = solve_budget(
                item, cost, value, budget, exact_max_options=exact_max, time_limit_s=args.time_limit
            )
            runs[label] = summary(solution, time.perf_counter() - start)
            assert solution.cost <= budget
        name = f"hardening_{n}x{len(MEASURE_COST_EUR)}"
        results[name] = {"options": int(item.size), "budget_eur": budget, **runs}
        print(f"{name:<24} {json.dumps(runs)}")

    demand, sites, weights = patrol_instance(rng)
    radius = MINUTES / 60.0 * SPEED_KMH * 1_000.0 / ROAD_FACTOR
    start = time.perf_counter()
    coverage = coverage_matrix(demand, sites, radius)
    coverage_s = time.perf_counter() - start
    results["coverage_matrix"] = {
        "demand": PATROL_DEMAND,
        "sites": PATROL_SITES,
        "radius_m": round(radius, 1),
        "pairs": int(coverage.nnz),
        "time_s": round(coverage_s, 3),
    }
    print(f"{'coverage_matrix':<24} {json.dumps(results['coverage_matrix'])}")
    for k in PATROL_UNITS:
        runs = {}
        for label, exact_max in (("default", 20_000), ("greedy", 0)):
            start = time.perf_counter()
            cover = solve_mclp(
                coverage, weights, k, exact_max_sites=exact_max, time_limit_s=args.time_limit
            )
            runs[label] = summary(cover, time.perf_counter() - start)
        name = f"patrol_{PATROL_DEMAND}x{PATROL_SITES}_k{k}"
        results[name] = runs
        print(f"{name:<24} {json.dumps(runs)}")

    print(
        json.dumps(
            {
                "simulated": True,
                "note": "simulated instances, for speed only",
                "seed": args.seed,
                "time_limit_s": args.time_limit,
                "python": platform.python_version(),
                "numpy": np.__version__,
                "scipy": scipy.__version__,
                **results,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
