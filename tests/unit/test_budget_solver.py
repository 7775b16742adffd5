"""The hardening-budget solver (multiple-choice knapsack) against brute force and its promises.

Brute force enumerates every choice per machine (nothing or one of its options) and counts a
plan as feasible when the exact rational sum of its costs is within the budget, the rule the
solver promises. Values compare exactly for integer values; for float values within HiGHS's
absolute gap tolerance (1e-6 of the largest value, see the module docstring).
"""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import numpy.typing as npt
import pytest
from scipy.optimize import linprog
from scipy.sparse import csr_array

from atm_risk.decisions.budget import KnapsackSolution, solve_budget

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def _exact_fits(costs: FloatArray, budget: float) -> bool:
    return sum(map(Fraction, costs.tolist()), Fraction(0)) <= Fraction(budget)


def _brute_force(item: IntArray, cost: FloatArray, value: FloatArray, budget: float) -> float:
    choices = [
        [-1, *np.flatnonzero(item == machine).tolist()] for machine in np.unique(item).tolist()
    ]
    best = 0.0
    for combo in itertools.product(*choices):
        chosen = np.array([k for k in combo if k >= 0], dtype=np.intp)
        if _exact_fits(cost[chosen], budget):
            best = max(best, math.fsum(value[chosen].tolist()))
    return best


def _lp_relaxation(item: IntArray, cost: FloatArray, value: FloatArray, budget: float) -> float:
    """Optimum of the LP relaxation, from scipy's linprog (independent of the greedy)."""
    keep = np.flatnonzero((value > 0) & (cost <= budget))
    if keep.size == 0:
        return 0.0
    machines, row = np.unique(item[keep], return_inverse=True)
    n = keep.size
    rows = np.concatenate((np.zeros(n, dtype=np.intp), row.reshape(-1) + 1))
    cols = np.concatenate((np.arange(n), np.arange(n)))
    data = np.concatenate((cost[keep], np.ones(n)))
    a_ub = csr_array((data, (rows, cols)), shape=(len(machines) + 1, n))
    b_ub = np.concatenate(([budget], np.ones(len(machines))))
    result = linprog(-value[keep], A_ub=a_ub, b_ub=b_ub, bounds=(0, 1), method="highs")
    assert result.status == 0
    return float(-result.fun)


def _random_instance(
    rng: np.random.Generator, *, integer: bool
) -> tuple[IntArray, FloatArray, FloatArray, float]:
    n_machines = int(rng.integers(1, 6))
    n_options = int(rng.integers(0, 13))
    item = rng.integers(0, n_machines, n_options).astype(np.int64) * 7 + 3  # arbitrary ids
    if integer:
        cost = rng.integers(0, 12, n_options).astype(np.float64)
        value = rng.integers(-3, 15, n_options).astype(np.float64)
        budget = float(rng.integers(0, 30))
    else:
        decimals = int(rng.integers(1, 4))
        cost = np.round(rng.uniform(0, 10, n_options), decimals)
        value = np.round(rng.uniform(-2, 10, n_options), decimals)
        budget = float(np.round(rng.uniform(0, 25), decimals))
    return item, cost, value, budget


def _assert_valid(
    solution: KnapsackSolution,
    item: npt.ArrayLike,
    cost: npt.ArrayLike,
    value: npt.ArrayLike,
    budget: float,
) -> None:
    item_a, cost_a, value_a = np.asarray(item), np.asarray(cost, float), np.asarray(value, float)
    chosen = solution.chosen
    assert chosen.dtype.kind == "i"
    assert np.array_equal(chosen, np.unique(chosen)), "sorted, no repeats"
    assert len(np.unique(item_a[chosen])) == len(chosen), "at most one option per machine"
    assert np.all(value_a[chosen] > 0), "options with value <= 0 are never chosen"
    assert np.all(cost_a[chosen] <= budget), "options over the budget are never chosen"
    # the budget is never exceeded: exactly, in numpy, and in the reported figure
    assert _exact_fits(cost_a[chosen], budget)
    assert float(cost_a[chosen].sum()) <= budget
    assert solution.cost <= budget
    assert solution.cost == math.fsum(cost_a[chosen].tolist())
    assert solution.value == math.fsum(value_a[chosen].tolist())
    if solution.bound is not None:
        assert solution.bound >= solution.value


@pytest.mark.parametrize("seed", range(30))
def test_exact_solver_equals_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for integer in (True, False):
        for _ in range(4):
            item, cost, value, budget = _random_instance(rng, integer=integer)
            best = _brute_force(item, cost, value, budget)
            solution = solve_budget(item, cost, value, budget)
            _assert_valid(solution, item, cost, value, budget)
            tolerance = 1e-9 if integer else 1e-6 * max(1.0, float(np.abs(value).max(initial=0)))
            assert solution.value == pytest.approx(best, abs=tolerance)
            assert solution.optimal
            assert solution.bound == pytest.approx(solution.value, abs=tolerance)
            assert solution.bound is not None
            assert solution.bound >= best - tolerance


@pytest.mark.parametrize("seed", range(30))
def test_greedy_is_feasible_and_within_its_bounds(seed: int) -> None:
    rng = np.random.default_rng(1000 + seed)
    for integer in (True, False):
        for _ in range(4):
            item, cost, value, budget = _random_instance(rng, integer=integer)
            best = _brute_force(item, cost, value, budget)
            solution = solve_budget(item, cost, value, budget, exact_max_options=0)
            _assert_valid(solution, item, cost, value, budget)
            assert solution.method.startswith("greedy") or solution.method == "trivial"
            assert solution.value <= best + 1e-9
            assert solution.value >= best / 2 - 1e-9  # greedy + best single option
            # its bound is the LP relaxation, an upper bound on the optimum
            assert solution.bound is not None
            lp = _lp_relaxation(item, cost, value, budget)
            assert solution.bound == pytest.approx(lp, rel=1e-7, abs=1e-7)
            assert solution.bound >= best - 1e-9
            if solution.optimal:
                assert solution.value == pytest.approx(best, abs=1e-9)


def test_same_inputs_give_the_same_plan() -> None:
    rng = np.random.default_rng(7)
    n = 300
    item = np.repeat(np.arange(n), 4)
    cost = np.round(rng.uniform(1_000, 40_000, 4 * n), 2)
    value = np.round(rng.uniform(0, 50_000, 4 * n), 2)
    value[rng.random(4 * n) < 0.05] = 25_000.0  # ties
    cost[rng.random(4 * n) < 0.05] = 10_000.0
    for exact_max_options in (100_000, 0):
        runs = [
            solve_budget(item, cost, value, 400_000.0, exact_max_options=exact_max_options)
            for _ in range(3)
        ]
        for other in runs[1:]:
            assert np.array_equal(other.chosen, runs[0].chosen)
            assert (other.value, other.cost, other.method) == (
                runs[0].value,
                runs[0].cost,
                runs[0].method,
            )


def test_float_costs_at_the_budget_are_checked_exactly() -> None:
    # 0.1 + 0.2 exceeds 0.3 in binary floating point (by 2**-55): only one fits.
    solution = solve_budget([0, 1], [0.1, 0.2], [1.0, 1.0], 0.3)
    _assert_valid(solution, [0, 1], [0.1, 0.2], [1.0, 1.0], 0.3)
    assert solution.value == 1.0
    assert solution.optimal
    # ten times 0.1 exceeds 1.0 exactly although a naive sum gives 0.9999999999999999
    ten = np.full(10, 0.1)
    solution = solve_budget(np.arange(10), ten, np.ones(10), 1.0)
    _assert_valid(solution, np.arange(10), ten, np.ones(10), 1.0)
    assert len(solution.chosen) == 9
    assert solution.optimal
    # the greedy adds up increments in floats (ten 0.1 give 0.9999999999999999) and takes
    # all ten; the repair drops the last one and refills with the cheap option that fits
    cost = np.concatenate((ten, [0.05]))
    value = np.concatenate((np.ones(10), [0.01]))
    solution = solve_budget(np.arange(11), cost, value, 1.0, exact_max_options=0)
    _assert_valid(solution, np.arange(11), cost, value, 1.0)
    assert solution.method == "greedy+repair"
    assert not solution.optimal
    assert solution.chosen.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 10]
    assert solve_budget(np.arange(11), cost, value, 1.0).value == solution.value
    # at 0.30000000000000004 the pair fits exactly
    solution = solve_budget([0, 1], [0.1, 0.2], [1.0, 1.0], 0.1 + 0.2)
    assert solution.value == 2.0
    assert solution.optimal


def test_solver_tolerance_cannot_overspend() -> None:
    # HiGHS accepts a constraint violation of ~1e-7; the plan must still fit exactly.
    cost = [100.0, 200.0, 300.00000001]
    value = [1.0, 1.0, 5.0]
    for exact_max_options in (100_000, 0):
        solution = solve_budget([0, 1, 2], cost, value, 600.0, exact_max_options=exact_max_options)
        _assert_valid(solution, [0, 1, 2], cost, value, 600.0)
        assert solution.value == 6.0  # all three would be 7 but cost 600.00000001
        assert solution.optimal or exact_max_options == 0
    # {0, 1} overspends by 2**-55: cut off, and {0, 2} is the exact optimum
    small_cost = [0.1, 0.2, 0.15]
    small_value = [1.0, 1.0, 0.9]
    solution = solve_budget([0, 1, 2], small_cost, small_value, 0.3)
    _assert_valid(solution, [0, 1, 2], small_cost, small_value, 0.3)
    assert solution.chosen.tolist() == [0, 2]
    assert solution.optimal
    big = [1e5, 2e5, 3e5 + 1e-9]
    solution = solve_budget([0, 1, 2], big, value, 6e5)
    _assert_valid(solution, [0, 1, 2], big, value, 6e5)
    assert solution.value == 6.0


@pytest.mark.parametrize("seed", range(5))
def test_many_small_float_costs_never_exceed_the_budget(seed: int) -> None:
    rng = np.random.default_rng(50 + seed)
    n = 400
    item = np.arange(n)
    cost = rng.choice([0.1, 0.2, 0.3, 0.7, 1.1], n)
    value = rng.choice([1.0, 2.0, 3.0], n)
    budget = float(rng.choice([3.0, 10.0, 0.1 + 0.2 + 0.3]))
    for exact_max_options in (100_000, 0):
        solution = solve_budget(item, cost, value, budget, exact_max_options=exact_max_options)
        _assert_valid(solution, item, cost, value, budget)


def test_one_option_per_machine_and_dominated_options() -> None:
    # machine 0: option 1 dominates option 0 (cheaper, worth more); option 2 is worth most
    item = [0, 0, 0, 1]
    cost = [5.0, 4.0, 9.0, 6.0]
    value = [3.0, 4.0, 8.0, 5.0]
    for budget, expected in ((4.0, [1]), (10.0, [1, 3]), (14.0, [1, 3]), (15.0, [2, 3])):
        for exact_max_options in (100_000, 0):
            solution = solve_budget(item, cost, value, budget, exact_max_options=exact_max_options)
            assert solution.chosen.tolist() == expected
            assert solution.optimal or exact_max_options == 0


def test_edge_cases() -> None:
    empty = solve_budget([], [], [], 1_000.0)
    assert empty.chosen.size == 0
    assert (empty.value, empty.cost, empty.optimal) == (0.0, 0.0, True)

    # budget 0: only free options with positive value
    solution = solve_budget([0, 0, 1, 2], [0.0, 0.0, 1.0, 0.0], [1.0, 2.0, 5.0, 0.0], 0.0)
    assert solution.chosen.tolist() == [1]
    assert solution.cost == 0.0
    assert solution.optimal

    # all values zero (or negative): nothing is worth doing
    zeros = solve_budget([0, 1, 2], [1.0, 2.0, 3.0], [0.0, -1.0, 0.0], 10.0)
    assert zeros.chosen.size == 0
    assert zeros.value == 0.0

    # every option over the budget
    over = solve_budget([0, 1], [11.0, 12.0], [5.0, 6.0], 10.0)
    assert over.chosen.size == 0

    # unlimited budget: the most valuable option of every machine
    solution = solve_budget([0, 0, 1, 1], [1.0, 2.0, 3.0, 1.0], [1.0, 3.0, 2.0, 2.0], math.inf)
    assert solution.chosen.tolist() == [1, 3]
    assert solution.optimal

    # machine ids can be strings
    solution = solve_budget(["b", "a", "a"], [2.0, 1.0, 2.0], [2.0, 1.0, 3.0], 4.0)
    assert solution.chosen.tolist() == [0, 2]

    assert solution.chosen.flags.writeable is False


@pytest.mark.parametrize(
    ("item", "cost", "value", "budget"),
    [
        ([0, 1], [1.0], [1.0, 1.0], 1.0),
        ([0], [-1.0], [1.0], 1.0),
        ([0], [math.nan], [1.0], 1.0),
        ([0], [1.0], [math.inf], 1.0),
        ([0], [1.0], [1.0], -1.0),
        ([0], [1.0], [1.0], math.nan),
    ],
)
def test_invalid_inputs_are_rejected(
    item: list[int], cost: list[float], value: list[float], budget: float
) -> None:
    with pytest.raises(ValueError, match=r"."):
        solve_budget(item, cost, value, budget)


def _realistic(n: int, seed: int) -> tuple[IntArray, FloatArray, FloatArray]:
    rng = np.random.default_rng(seed)
    loss = rng.lognormal(np.log(1_500), 1.2, n)
    base_cost = np.array([2_500.0, 6_000.0, 12_000.0, 8_000.0, 40_000.0])
    reduction = np.array([0.5, 0.6, 0.3, 0.8, 0.95])
    item = np.repeat(np.arange(n), 5).astype(np.int64)
    cost = np.round(np.tile(base_cost, n) * rng.uniform(0.85, 1.15, 5 * n), 2)
    value = np.repeat(loss, 5) * np.tile(reduction, n) * 5
    return item, cost, value


def test_medium_instance_is_solved_to_optimality() -> None:
    item, cost, value = _realistic(1_500, seed=3)
    budget = 200_000.0
    exact = solve_budget(item, cost, value, budget)
    greedy = solve_budget(item, cost, value, budget, exact_max_options=0)
    for solution in (exact, greedy):
        _assert_valid(solution, item, cost, value, budget)
    assert exact.method == "milp"
    assert exact.optimal
    assert greedy.value <= exact.value + 1e-6 * value.max()
    assert greedy.bound is not None
    assert exact.value <= greedy.bound + 1e-6 * value.max()
    assert greedy.value >= 0.99 * exact.value  # many small items: the greedy is close


def test_time_limit_falls_back_to_the_greedy() -> None:
    item, cost, value = _realistic(1_500, seed=4)
    solution = solve_budget(item, cost, value, 200_000.0, time_limit_s=0.0)
    _assert_valid(solution, item, cost, value, 200_000.0)
    greedy = solve_budget(item, cost, value, 200_000.0, exact_max_options=0)
    assert solution.value >= greedy.value
    assert solution.method in {"milp", "milp+greedy"}


def test_degenerate_hull_with_many_options_on_one_machine() -> None:
    # A concave chain of 60 options followed by one far better option: the hull pruning
    # removes one point per pass and hands over to the monotone-chain fallback.
    c = np.arange(1.0, 61.0)
    v = 100.0 * np.sqrt(c)
    cost = np.concatenate((c, [200.0], [5.0]))
    value = np.concatenate((v, [1e6], [50.0]))
    item = np.concatenate((np.zeros(61, dtype=np.int64), [1]))
    for budget in (30.5, 150.0, 204.0, 1_000.0):
        best = max(
            (value[k] + (value[61] if cost[k] + cost[61] <= budget else 0.0))
            for k in range(61)
            if cost[k] <= budget
        )
        best = max(best, value[61])
        for exact_max_options in (100_000, 0):
            solution = solve_budget(item, cost, value, budget, exact_max_options=exact_max_options)
            _assert_valid(solution, item, cost, value, budget)
            assert solution.bound is not None
            assert solution.bound >= best - 1e-9
            if exact_max_options:
                assert solution.value == pytest.approx(best)
            else:
                lp = _lp_relaxation(item, cost, value, budget)
                assert solution.bound == pytest.approx(lp, rel=1e-9)
