"""Patrol plan: the maximal covering location problem (MCLP), solved exactly or greedily.

Formulation (Church & ReVelle 1974)
-----------------------------------
Demand point ``i`` (a machine, an escape route) carries weight ``w_i >= 0`` (tonight's
expected loss); candidate site ``j`` (a waiting position for a unit) *covers* ``i`` when
``a_ij = 1``, e.g. when ``i`` lies within the distance a unit drives in ``T`` minutes
(:func:`coverage_matrix`). With binaries ``y_j`` (a unit waits at ``j``) and ``z_i``
(``i`` is covered)::

    maximise    sum_i w_i * z_i
    subject to  z_i <= sum_j a_ij * y_j          for every demand point i
                sum_j y_j = k
                y_j in {0, 1},  0 <= z_i <= 1

``z`` may be continuous: for integral ``y`` an optimal ``z_i`` is ``min(1, sum_j a_ij y_j)``,
which is 0 or 1.

Reduction (exact, applied before either solver)
    * demand with zero weight or no covering site is dropped (it adds nothing);
    * demand points covered by exactly the same sites are merged (weights added);
    * sites that cover nothing are dropped, and sites covering exactly the same demand are
      merged into the lowest index (choosing both is never better than one of them).
    If no more than ``k`` sites remain, choosing all of them covers everything coverable.

Exact solver
    ``scipy.optimize.milp`` (HiGHS, presolve off) with a time limit and ``mip_rel_gap=0``;
    weights are divided by the largest weight, so HiGHS's absolute gap tolerance (1e-6)
    reads "within 1e-6 of the largest weight of the optimum", the sense of ``optimal=True``.

Greedy (above ``exact_max_sites`` useful sites or 2 million coverage pairs after the
reduction, where HiGHS no longer keeps to its time limit; or when the MILP hits its time
limit, then the better plan is kept)
    Repeatedly add the site with the largest weight of still uncovered demand (ties: lowest
    index). Coverage is monotone submodular, so this is a (1 - 1/e) approximation (Nemhauser,
    Wolsey & Fisher 1978); gains only shrink, so stale gains in a heap are upper bounds and
    only the top entry needs re-evaluation ("lazy greedy", Minoux 1978). The reported bound
    is the smallest of ``value / (1 - 1/e)``, ``f(S) + (sum of the k largest gains given S)``
    for the empty and the final set ``S``, and the total coverable weight.

Exactly ``min(k, n_sites)`` sites are returned; when fewer are useful, the plan is filled with
the lowest-index unused sites. The greedy breaks ties by site index and HiGHS is
deterministic, so the same inputs give the same plan (unless a MILP time limit is hit).

``method`` is one of ``"trivial"`` (``k = 0``, nothing coverable, or no more useful sites than
``k``), ``"milp"``, ``"greedy"`` or ``"milp+greedy"`` (the MILP stopped without proof and the
greedy plan was better or the MILP had none).
"""

from __future__ import annotations

import heapq
import math
import operator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import sparse
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.spatial import cKDTree

__all__ = ["CoverSolution", "coverage_matrix", "solve_mclp"]

IntArray = npt.NDArray[np.intp]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

_GREEDY_FACTOR = 1.0 - 1.0 / math.e
# Larger models made HiGHS overrun an 8 s time limit by half or more (50,000 x 10,000 with
# 3.4 million coverage pairs: 12 to 16 s without a solution); 1.3 million kept to it.
_MAX_MILP_NONZEROS = 2_000_000


@dataclass(frozen=True, eq=False)
class CoverSolution:
    """A patrol plan.

    ``sites`` holds the sorted indices of the chosen sites (``min(k, n_sites)`` of them),
    ``covered`` whether each demand point is within reach of at least one of them (both
    read-only), ``value`` the weight covered. ``optimal`` is True when the plan is proven
    optimal; ``bound`` is the best known upper bound on the coverable weight with ``k``
    sites, never below ``value``. Compared by identity (``eq=False``): it holds arrays.
    """

    sites: IntArray
    covered: BoolArray
    value: float
    method: str
    optimal: bool
    bound: float | None


def coverage_matrix(
    demand_xy: npt.ArrayLike, site_xy: npt.ArrayLike, radius_m: float
) -> sparse.csr_matrix:
    """Boolean ``n_demand x n_sites`` matrix, True where ``hypot(dx, dy) <= radius_m``.

    Coordinates are planar metres (a projected CRS), shape ``(n, 2)``. Candidate pairs come
    from a k-d tree query with a slightly larger radius and are then filtered with the exact
    ``numpy.hypot`` distance, so the boundary is decided the same way everywhere.
    """
    demand = _xy(demand_xy, "demand_xy")
    site = _xy(site_xy, "site_xy")
    radius = float(radius_m)
    if not math.isfinite(radius) or radius < 0:
        raise ValueError(f"radius_m must be a finite non-negative number, got {radius_m!r}")
    shape = (len(demand), len(site))
    if 0 in shape:
        return sparse.csr_matrix(shape, dtype=bool)
    search = radius * (1.0 + 1e-9) + 1e-9
    pairs = cKDTree(demand).sparse_distance_matrix(cKDTree(site), search, output_type="ndarray")
    i = np.asarray(pairs["i"], dtype=np.intp)
    j = np.asarray(pairs["j"], dtype=np.intp)
    distance = np.hypot(demand[i, 0] - site[j, 0], demand[i, 1] - site[j, 1])
    keep = distance <= radius
    matrix = sparse.csr_matrix(
        (np.ones(int(keep.sum()), dtype=bool), (i[keep], j[keep])), shape=shape
    )
    matrix.sort_indices()
    return matrix


def solve_mclp(
    coverage: sparse.csr_matrix,
    weights: npt.ArrayLike,
    k: int,
    *,
    exact_max_sites: int = 20_000,
    time_limit_s: float = 8.0,
) -> CoverSolution:
    """Choose ``min(k, n_sites)`` sites maximising the weight of demand covered at least once.

    ``coverage`` is an ``n_demand x n_sites`` sparse matrix (any non-zero entry means
    "covers"), ``weights`` the non-negative weight per demand point. ``exact_max_sites``
    caps the number of useful sites (after the reduction in the module docstring) handed to
    the MILP; ``time_limit_s`` limits the MILP.

    Raises ``ValueError`` for a weight vector of the wrong length, negative or non-finite
    weights, or a negative ``k`` or limit.
    """
    matrix = sparse.csr_matrix(coverage, copy=True).astype(bool)
    matrix.eliminate_zeros()
    matrix.sum_duplicates()
    matrix.sort_indices()
    n_demand, n_sites = matrix.shape
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n_demand,):
        raise ValueError(f"weights must have shape ({n_demand},), got {w.shape}")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError("weights must be finite and non-negative")
    k = operator.index(k)
    if k < 0:
        raise ValueError("k must be non-negative")
    if exact_max_sites < 0:
        raise ValueError("exact_max_sites must be non-negative")
    if not time_limit_s >= 0:
        raise ValueError("time_limit_s must be non-negative")
    n_pick = min(k, n_sites)

    red = _reduce(matrix, w)
    n_useful = red.matrix.shape[1]
    if n_pick == 0 or n_useful <= n_pick:
        # Nothing to choose, or every useful site fits: all coverable demand is covered.
        return _solution(matrix, w, red.site, n_pick, "trivial", True, None)

    if n_useful > exact_max_sites or red.matrix.nnz > _MAX_MILP_NONZEROS:
        positions, bound = _greedy(red, n_pick)
        return _solution(matrix, w, red.site[positions], n_pick, "greedy", False, bound)

    milp_positions, optimal, milp_bound = _milp(red, n_pick, time_limit_s)
    if milp_positions is not None and optimal:
        return _solution(matrix, w, red.site[milp_positions], n_pick, "milp", True, milp_bound)
    greedy_positions, greedy_bound = _greedy(red, n_pick)
    bound = greedy_bound if milp_bound is None else min(greedy_bound, milp_bound)
    greedy_plan = _solution(
        matrix, w, red.site[greedy_positions], n_pick, "milp+greedy", False, bound
    )
    if milp_positions is None:
        return greedy_plan
    milp_plan = _solution(matrix, w, red.site[milp_positions], n_pick, "milp", False, bound)
    return milp_plan if milp_plan.value >= greedy_plan.value else greedy_plan


# --------------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class _Reduced:
    """Merged demand (rows, weight ``weight``) x useful distinct sites (columns, original
    index ``site``)."""

    matrix: sparse.csr_matrix
    weight: FloatArray
    site: IntArray


def _xy(x: npt.ArrayLike, name: str) -> FloatArray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.size == 0 and (arr.ndim == 1 or arr.shape[0] == 0):
        return arr.reshape(0, 2)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{name} must have shape (n, 2), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite")
    return arr


def _first_of_identical(indptr: IntArray, indices: IntArray) -> tuple[IntArray, IntArray]:
    """Group the rows of a CSR structure (sorted indices) by identical pattern.

    Returns ``(group, first)``: the group of each row (numbered by first occurrence) and the
    first row of each group.
    """
    seen: dict[bytes, int] = {}
    group = np.empty(len(indptr) - 1, dtype=np.intp)
    bounds = indptr.tolist()
    for r in range(len(bounds) - 1):
        key = indices[bounds[r] : bounds[r + 1]].tobytes()
        group[r] = seen.setdefault(key, len(seen))
    first = np.full(len(seen), len(group), dtype=np.intp)
    np.minimum.at(first, group, np.arange(len(group), dtype=np.intp))
    return group, first


def _reduce(matrix: sparse.csr_matrix, w: FloatArray) -> _Reduced:
    rows = np.flatnonzero((w > 0) & (np.diff(matrix.indptr) > 0))
    sub = matrix[rows]
    sub.sort_indices()
    group, first = _first_of_identical(sub.indptr, sub.indices)
    weight = np.bincount(group, weights=w[rows], minlength=len(first)).astype(np.float64)
    merged = sub[first].tocsc()
    merged.sort_indices()
    useful = np.flatnonzero(np.diff(merged.indptr) > 0)
    merged = merged[:, useful].tocsc()
    merged.sort_indices()
    _, first_site = _first_of_identical(merged.indptr, merged.indices)
    site = useful[first_site].astype(np.intp)
    return _Reduced(merged[:, first_site].tocsr(), weight, site)


def _solution(
    matrix: sparse.csr_matrix,
    w: FloatArray,
    chosen: IntArray,
    n_pick: int,
    method: str,
    optimal: bool,
    bound: float | None,
) -> CoverSolution:
    """Fill the plan up to ``n_pick`` sites with the lowest unused indices and score it."""
    chosen = np.unique(np.asarray(chosen, dtype=np.intp))[:n_pick]
    missing = n_pick - len(chosen)
    if missing > 0:
        unused = np.setdiff1d(np.arange(matrix.shape[1], dtype=np.intp), chosen)
        chosen = np.sort(np.concatenate((chosen, unused[:missing]))).astype(np.intp)
    covered = np.asarray(matrix[:, chosen].sum(axis=1)).reshape(-1) > 0
    value = math.fsum(w[covered].tolist())
    if bound is None:
        bound = value
    chosen.setflags(write=False)
    covered.setflags(write=False)
    return CoverSolution(
        sites=chosen,
        covered=covered,
        value=value,
        method=method,
        optimal=optimal,
        bound=max(float(bound), value),
    )


def _milp(
    red: _Reduced, n_pick: int, time_limit_s: float
) -> tuple[IntArray | None, bool, float | None]:
    """Solve the reduced MCLP with HiGHS; returns (site positions or None, optimal, bound)."""
    a = red.matrix
    n_demand, n_sites = a.shape
    scale = float(red.weight.max())
    objective = np.concatenate((np.zeros(n_sites), -red.weight / scale))
    cover_rows = sparse.hstack(
        (-a.astype(np.float64), sparse.identity(n_demand, format="csr")), format="csr"
    )
    cardinality = sparse.csr_matrix(
        np.concatenate((np.ones(n_sites), np.zeros(n_demand))).reshape(1, -1)
    )
    constraints = [
        LinearConstraint(cover_rows, -np.inf, 0.0),
        LinearConstraint(cardinality, n_pick, n_pick),
    ]
    result = milp(
        objective,
        integrality=np.concatenate((np.ones(n_sites), np.zeros(n_demand))),
        bounds=Bounds(0.0, 1.0),
        constraints=constraints,
        # HiGHS presolve (probing) took 7 s of an 8 s run on 4,000 x 2,000 and ignores the
        # time limit, while the root LP of the unpresolved model is often integral already.
        options={"time_limit": float(time_limit_s), "mip_rel_gap": 0.0, "presolve": False},
    )
    dual = getattr(result, "mip_dual_bound", None)
    bound = None if dual is None or not np.isfinite(dual) else -float(dual) * scale
    if result.x is None:
        return None, False, bound
    y = np.asarray(result.x[:n_sites], dtype=np.float64)
    positions = np.flatnonzero(y > 0.5).astype(np.intp)
    if len(positions) > n_pick:
        return None, False, bound
    return positions, bool(result.status == 0), bound


def _greedy(red: _Reduced, n_pick: int) -> tuple[IntArray, float]:
    """Lazy greedy on the reduced instance; returns site positions and an upper bound."""
    a = red.matrix.tocsc()
    a.sort_indices()
    indptr, indices = a.indptr, a.indices
    uncovered = red.weight.copy()  # weight still uncovered; 0 once covered
    total = math.fsum(red.weight.tolist())

    def gains() -> FloatArray:
        return np.add.reduceat(uncovered[indices], indptr[:-1]).astype(np.float64)

    def gain_bound(covered_weight: float) -> float:
        top = np.sort(gains())[::-1][:n_pick]
        return covered_weight + math.fsum(top.tolist())

    initial = gains()
    bound = min(total, gain_bound(0.0))
    heap = [(-g, j) for j, g in enumerate(initial.tolist())]
    heapq.heapify(heap)
    chosen: list[int] = []
    while len(chosen) < n_pick and heap:
        _, j = heapq.heappop(heap)
        col = indices[indptr[j] : indptr[j + 1]]
        gain = float(uncovered[col].sum())
        entry = (-gain, j)
        if not heap or entry <= heap[0]:
            if gain <= 0.0:
                break  # everything coverable is covered; the caller fills up
            chosen.append(j)
            uncovered[col] = 0.0
        else:
            heapq.heappush(heap, entry)
    value = total - math.fsum(uncovered.tolist())
    bound = min(bound, gain_bound(value), value / _GREEDY_FACTOR)
    return np.asarray(chosen, dtype=np.intp), bound
