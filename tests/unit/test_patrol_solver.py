"""The patrol solver (maximal covering location problem) against brute force and its promises.

Brute force tries every combination of ``min(k, n_sites)`` sites. Values compare exactly for
integer weights; for float weights within HiGHS's absolute gap tolerance (1e-6 of the largest
weight, see the module docstring).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import numpy.typing as npt
import pytest
from scipy import sparse

from atm_risk.decisions.patrol import CoverSolution, coverage_matrix, solve_mclp

FloatArray = npt.NDArray[np.float64]
BoolMatrix = npt.NDArray[np.bool_]


def _brute_force(dense: BoolMatrix, weights: FloatArray, k: int) -> float:
    n_sites = dense.shape[1]
    best = 0.0
    for sites in itertools.combinations(range(n_sites), min(k, n_sites)):
        covered = dense[:, list(sites)].any(axis=1)
        best = max(best, math.fsum(weights[covered].tolist()))
    return best


def _reference_greedy(dense: BoolMatrix, weights: FloatArray, k: int) -> list[int]:
    """Plain (not lazy) greedy: largest gain, lowest index on ties; stop at zero gain and
    fill with the lowest unused indices."""
    n_sites = dense.shape[1]
    uncovered = weights.copy()
    chosen: list[int] = []
    while len(chosen) < min(k, n_sites):
        gains = dense.T.astype(np.float64) @ uncovered
        gains[chosen] = -1.0
        best = int(np.argmax(gains))  # first maximum = lowest index
        if gains[best] <= 0:
            break
        chosen.append(best)
        uncovered[dense[:, best]] = 0.0
    unused = [j for j in range(n_sites) if j not in chosen]
    return sorted(chosen + unused[: min(k, n_sites) - len(chosen)])


def _random_instance(
    rng: np.random.Generator, *, integer: bool
) -> tuple[sparse.csr_matrix, BoolMatrix, FloatArray, int]:
    n_demand = int(rng.integers(0, 16))
    n_sites = int(rng.integers(0, 9))
    dense = rng.random((n_demand, n_sites)) < rng.uniform(0.05, 0.6)
    if n_demand >= 2 and n_sites >= 1:  # identical demand patterns and sites
        dense[n_demand - 1] = dense[0]
    if n_sites >= 3:
        dense[:, n_sites - 1] = dense[:, 1]
    if integer:
        weights = rng.integers(0, 10, n_demand).astype(np.float64)
    else:
        weights = np.round(rng.uniform(0, 10, n_demand), int(rng.integers(1, 4)))
        weights[rng.random(n_demand) < 0.15] = 0.0
    k = int(rng.integers(0, 7))
    return sparse.csr_matrix(dense), dense, weights, k


def _assert_valid(solution: CoverSolution, dense: BoolMatrix, weights: FloatArray, k: int) -> None:
    n_demand, n_sites = dense.shape
    assert len(solution.sites) == min(k, n_sites)
    assert np.array_equal(solution.sites, np.unique(solution.sites)), "sorted, no repeats"
    assert np.all((solution.sites >= 0) & (solution.sites < n_sites))
    assert solution.covered.dtype == np.bool_
    assert solution.covered.shape == (n_demand,)
    assert np.array_equal(solution.covered, dense[:, solution.sites].any(axis=1))
    assert solution.value == math.fsum(weights[solution.covered].tolist())
    assert solution.bound is not None
    assert solution.bound >= solution.value


@pytest.mark.parametrize("seed", range(30))
def test_exact_solver_equals_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for integer in (True, False):
        for _ in range(4):
            matrix, dense, weights, k = _random_instance(rng, integer=integer)
            best = _brute_force(dense, weights, k)
            solution = solve_mclp(matrix, weights, k)
            _assert_valid(solution, dense, weights, k)
            tolerance = 1e-9 if integer else 1e-6 * max(1.0, float(weights.max(initial=0)))
            assert solution.value == pytest.approx(best, abs=tolerance)
            assert solution.optimal
            assert solution.bound == pytest.approx(solution.value, abs=tolerance)


@pytest.mark.parametrize("seed", range(30))
def test_greedy_keeps_its_guarantee(seed: int) -> None:
    rng = np.random.default_rng(1000 + seed)
    for integer in (True, False):
        for _ in range(4):
            matrix, dense, weights, k = _random_instance(rng, integer=integer)
            best = _brute_force(dense, weights, k)
            solution = solve_mclp(matrix, weights, k, exact_max_sites=0)
            _assert_valid(solution, dense, weights, k)
            assert solution.method in {"greedy", "trivial"}
            assert solution.value <= best + 1e-9
            assert solution.value >= (1 - 1 / math.e) * best - 1e-9
            assert solution.bound is not None
            assert solution.bound >= best - 1e-9
            if integer and solution.method == "greedy":
                # exact sums: the lazy greedy makes the plain greedy's choices
                assert solution.sites.tolist() == _reference_greedy(dense, weights, k)


def test_same_inputs_give_the_same_plan() -> None:
    rng = np.random.default_rng(11)
    demand = rng.uniform(0, 20_000, (500, 2))
    sites = np.vstack((rng.uniform(0, 20_000, (150, 2)), demand[:50]))  # some coincide
    weights = rng.integers(1, 5, 500).astype(np.float64)  # many ties
    matrix = coverage_matrix(demand, sites, 2_500.0)
    for exact_max_sites in (20_000, 0):
        runs = [solve_mclp(matrix, weights, 6, exact_max_sites=exact_max_sites) for _ in range(3)]
        for other in runs[1:]:
            assert np.array_equal(other.sites, runs[0].sites)
            assert (other.value, other.method) == (runs[0].value, runs[0].method)


def test_coverage_matrix_matches_pairwise_distances() -> None:
    rng = np.random.default_rng(3)
    demand = rng.uniform(0, 10_000, (300, 2))
    sites = rng.uniform(0, 10_000, (120, 2))
    radius = 1_200.0
    matrix = coverage_matrix(demand, sites, radius)
    assert isinstance(matrix, sparse.csr_matrix)
    assert matrix.dtype == np.bool_
    assert matrix.shape == (300, 120)
    distance = np.hypot(
        demand[:, None, 0] - sites[None, :, 0], demand[:, None, 1] - sites[None, :, 1]
    )
    assert np.array_equal(matrix.toarray(), distance <= radius)


def test_coverage_matrix_boundary_and_edge_cases() -> None:
    demand = np.array([[0.0, 0.0], [3.0, 4.0], [3.0, 4.000001]])
    site = np.array([[0.0, 0.0]])
    # exactly at the radius counts as covered
    assert coverage_matrix(demand, site, 5.0).toarray().ravel().tolist() == [True, True, False]
    # radius 0: only coincident points
    assert coverage_matrix(demand, site, 0.0).toarray().ravel().tolist() == [True, False, False]
    # large projected coordinates (EPSG:3035 metres)
    offset = np.array([4_000_000.0, 3_000_000.0])
    assert coverage_matrix(demand + offset, site + offset, 5.0).toarray().ravel()[:2].all()
    assert coverage_matrix(np.empty((0, 2)), site, 5.0).shape == (0, 1)
    assert coverage_matrix(demand, np.empty((0, 2)), 5.0).shape == (3, 0)
    with pytest.raises(ValueError, match="radius"):
        coverage_matrix(demand, site, -1.0)
    assert coverage_matrix([], site, 5.0).shape == (0, 1)
    with pytest.raises(ValueError, match="shape"):
        coverage_matrix(np.zeros((3, 3)), site, 1.0)
    with pytest.raises(ValueError, match="shape"):
        coverage_matrix(np.zeros((3, 0)), site, 1.0)


def test_edge_cases() -> None:
    dense = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0]], dtype=bool)
    matrix = sparse.csr_matrix(dense)
    weights = np.array([1.0, 2.0, 4.0])

    none = solve_mclp(matrix, weights, 0)
    assert none.sites.size == 0
    assert not none.covered.any()
    assert (none.value, none.optimal) == (0.0, True)

    # more units than sites: every site
    every = solve_mclp(matrix, weights, 10)
    assert every.sites.tolist() == [0, 1, 2]
    assert every.value == 7.0

    # fewer useful sites than k: fill with the lowest unused index
    solution = solve_mclp(sparse.csr_matrix(dense[:, [2, 0, 2]]), weights, 2)
    assert solution.sites.tolist() == [0, 1]
    assert solution.value == 5.0

    # all weights zero: nothing to gain, still exactly k sites
    zero = solve_mclp(matrix, np.zeros(3), 2)
    assert zero.sites.tolist() == [0, 1]
    assert zero.value == 0.0

    # no demand / no sites
    assert solve_mclp(sparse.csr_matrix((0, 4), dtype=bool), np.empty(0), 2).sites.size == 2
    empty = solve_mclp(sparse.csr_matrix((3, 0), dtype=bool), weights, 2)
    assert empty.sites.size == 0
    assert empty.value == 0.0

    # explicit zeros in the matrix do not cover; dense arrays are accepted
    explicit = sparse.csr_matrix((np.array([0.0, 1.0]), (np.array([0, 1]), np.array([0, 0]))))
    assert solve_mclp(explicit, np.array([5.0, 1.0]), 1).value == 1.0
    assert solve_mclp(dense, weights, 1).sites.tolist() == [1]

    assert every.sites.flags.writeable is False
    assert every.covered.flags.writeable is False

    with pytest.raises(ValueError, match="weights"):
        solve_mclp(matrix, np.ones(2), 1)
    with pytest.raises(ValueError, match="weights"):
        solve_mclp(matrix, np.array([1.0, -1.0, 1.0]), 1)
    with pytest.raises(ValueError, match="k"):
        solve_mclp(matrix, weights, -1)


def _realistic(seed: int) -> tuple[sparse.csr_matrix, FloatArray]:
    rng = np.random.default_rng(seed)
    towns = rng.uniform(0, 60_000, (12, 2))
    demand = towns[rng.integers(0, 12, 800)] + rng.normal(0, 2_000, (800, 2))
    sites = np.vstack((rng.uniform(0, 60_000, (150, 2)), demand[rng.integers(0, 800, 150)]))
    weights = rng.lognormal(np.log(300), 1.2, 800)
    return coverage_matrix(demand, sites, 4_000.0), weights


def test_medium_instance_is_solved_to_optimality() -> None:
    matrix, weights = _realistic(5)
    dense = matrix.toarray()
    for k in (3, 8):
        exact = solve_mclp(matrix, weights, k)
        greedy = solve_mclp(matrix, weights, k, exact_max_sites=0)
        _assert_valid(exact, dense, weights, k)
        _assert_valid(greedy, dense, weights, k)
        assert exact.method == "milp"
        assert exact.optimal
        assert greedy.value <= exact.value + 1e-6 * weights.max()
        assert greedy.bound is not None
        assert exact.value <= greedy.bound + 1e-6 * weights.max()
        assert greedy.value >= (1 - 1 / math.e) * exact.value


def test_time_limit_falls_back_to_the_greedy() -> None:
    matrix, weights = _realistic(6)
    solution = solve_mclp(matrix, weights, 8, time_limit_s=0.0)
    _assert_valid(solution, matrix.toarray(), weights, 8)
    greedy = solve_mclp(matrix, weights, 8, exact_max_sites=0)
    assert solution.value >= greedy.value
    assert solution.method in {"milp", "milp+greedy"}
