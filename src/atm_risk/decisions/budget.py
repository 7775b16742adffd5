"""Hardening budget plan: a multiple-choice knapsack, solved exactly or greedily.

Formulation
-----------
There are ``n`` *options*; option ``k`` is one way of hardening machine ``item[k]`` (a measure
or a bundle of measures) that costs ``cost[k]`` and averts ``value[k]`` of expected loss.
With a binary ``x_k`` per option (1 = carry it out), the plan solves::

    maximise    sum_k value[k] * x_k
    subject to  sum_k cost[k] * x_k <= budget
                sum_{k : item[k] = i} x_k <= 1      for every machine i
                x_k in {0, 1}

which is the *multiple-choice knapsack problem* (MCKP; Sinha & Zoltners 1979). It is NP-hard
but well behaved in practice: its LP relaxation has at most two fractional variables, so the
LP bound is tight and few machines are really in question.

Reduction (exact, applied before either solver)
    * options with ``value <= 0`` or ``cost > budget`` are dropped (never chosen);
    * within a machine, an option that costs at least as much as another and averts no more
      (a *dominated* option) is dropped, keeping the lowest index among exact duplicates.
      Swapping a dominated option for its dominator never loses value or breaks the budget.

Exact solver
    ``scipy.optimize.milp`` (HiGHS branch and cut) on the model above, with a time limit
    and ``mip_rel_gap=0``. The objective is divided by the largest value before solving, so
    HiGHS's fixed absolute gap tolerance (1e-6) means "within 1e-6 of the largest single
    value of the optimum"; ``optimal=True`` is reported in that sense. If the time limit is
    reached, the better of the MILP incumbent and the greedy plan is returned.

    Before the MILP, Lagrangian variable fixing (the classical MCKP core reduction) uses the
    LP multiplier of the budget row and the greedy plan's value as a lower bound to drop
    options that cannot be part of any plan at least as good as the greedy one, and to fix
    machines whose choice is then forced (see ``_core``). Every optimal plan survives, and
    the MILP is left with the machines near the LP split: typically tens to a few thousand
    options out of 100,000. If more than 5,000 options are left, the greedy plan is returned
    instead, because HiGHS does not check its time limit while solving the root LP and
    overran it by several times on such cores.

Greedy (fallback above ``exact_max_options`` options, and a safety net)
    The classical LP-greedy for the MCKP (Sinha & Zoltners; Dyer & Zemel): per machine, keep
    the options on the upper convex hull of ``(cost, value)`` together with "do nothing" at
    ``(0, 0)``; every step along a hull is an *increment* with efficiency
    ``d value / d cost``, decreasing along the hull. Increments of all machines are taken in
    order of decreasing efficiency while they fit (a machine whose next increment does not
    fit is frozen, the others go on). Taking the increments up to the first one that does not
    fit, plus that one in part, is the optimum of the LP relaxation, so the greedy also
    yields an upper bound (``bound``). The result is compared with the best single option;
    ``max(greedy, best single)`` is at least half of the optimum. When every machine's most
    valuable option fits, the greedy plan is optimal and is returned without a MILP.

The budget is never exceeded
    A plan is *feasible* when the exact (rational) sum of the chosen costs is at most
    ``budget`` and the ``numpy`` sum ``cost[chosen].sum()`` is too; the reported ``cost`` is
    the correctly rounded sum (``math.fsum``), hence at most ``budget``. Solvers work with
    tolerances (HiGHS accepts a constraint violation of about 1e-7), so every plan is checked
    against this rule. When HiGHS returns a plan that is over the budget within its
    tolerance, that set of options (and so every superset, all infeasible) is forbidden by a
    cut ``sum_{k in S} x_k <= |S| - 1`` and the MILP solved again, so the exact optimum is
    still found. Any plan still infeasible (the greedy's, or the MILP's after the time limit
    or too many rounds) is repaired: the least efficient chosen option (value per cost,
    highest index first among ties) is dropped until the plan fits, then machines left
    without an option are refilled greedily where they fit. A repaired plan is not claimed
    optimal and its ``method`` ends in ``+repair``.

Determinism
    The greedy breaks ties by option index; HiGHS is deterministic for a given model. Only a
    MILP stopped by its time limit can depend on the machine's speed.

``method`` is one of ``"trivial"`` (nothing can be chosen), ``"greedy"`` (no MILP: proven
optimal, too many options or too large a core), ``"milp"`` and
``"milp+greedy"`` (the MILP ran but the greedy plan was better, e.g. after a time-out),
possibly followed by ``"+repair"``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from fractions import Fraction
from typing import Final

import numpy as np
import numpy.typing as npt
from scipy import sparse
from scipy.optimize import Bounds, LinearConstraint, milp

__all__ = ["KnapsackSolution", "solve_budget"]

IntArray = npt.NDArray[np.intp]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

_MAX_VECTOR_HULL_PASSES: Final = 32
_MAX_CUT_ROUNDS: Final = 50
# HiGHS does not check its time limit while solving the root LP; on MCKP cores of 14,000 to
# 42,000 options that alone took 10 to 40 s (scipy 1.17, HiGHS 1.12), on 3,500 it kept to it.
_MAX_CORE_OPTIONS: Final = 5_000


@dataclass(frozen=True, eq=False)
class KnapsackSolution:
    """A hardening plan.

    ``chosen`` holds sorted indices into the option arrays (read-only), at most one per
    machine. ``value`` and ``cost`` are the sums over the chosen options (``cost`` never
    exceeds the budget). ``optimal`` is True when the plan is proven optimal; ``bound`` is the
    best known upper bound on the attainable value (the MILP dual bound or the LP bound of
    the greedy), never below ``value``. Compared by identity (``eq=False``): it holds arrays.
    """

    chosen: IntArray
    value: float
    cost: float
    method: str
    optimal: bool
    bound: float | None


@dataclass(frozen=True)
class _Reduced:
    """Eligible, undominated options, sorted by machine then cost (both strictly increasing
    in value and cost within a machine)."""

    option: IntArray  # original option index
    group: IntArray  # machine, renumbered 0..G-1, non-decreasing
    cost: FloatArray
    value: FloatArray
    n_groups: int


def solve_budget(
    item: npt.ArrayLike,
    cost: npt.ArrayLike,
    value: npt.ArrayLike,
    budget: float,
    *,
    exact_max_options: int = 100_000,
    time_limit_s: float = 8.0,
) -> KnapsackSolution:
    """Choose at most one option per item to maximise the total value within the budget.

    ``item[k]`` identifies the machine of option ``k`` (any sortable values), ``cost[k] >= 0``
    its cost and ``value[k]`` the expected loss it averts. ``exact_max_options`` caps the
    number of options (after the reduction described in the module docstring) handed to the
    MILP; above it the greedy is used. ``time_limit_s`` limits the MILP.

    Raises ``ValueError`` for arrays of different lengths, non-finite or negative costs,
    non-finite values, a negative or NaN budget, or negative limits.
    """
    items = np.asarray(item)
    costs = _float_vector(cost, "cost")
    values = _float_vector(value, "value")
    if items.ndim != 1 or not (len(items) == len(costs) == len(values)):
        raise ValueError("item, cost and value must be 1-D arrays of the same length")
    if np.any(costs < 0):
        raise ValueError("costs must be non-negative")
    budget = float(budget)
    if math.isnan(budget) or budget < 0:
        raise ValueError(f"budget must be a non-negative number, got {budget!r}")
    if exact_max_options < 0:
        raise ValueError("exact_max_options must be non-negative")
    if not time_limit_s >= 0:
        raise ValueError("time_limit_s must be non-negative")

    red = _reduce(items, costs, values, budget)
    if red.option.size == 0:
        return _solution(np.empty(0, np.intp), costs, values, "trivial", True, 0.0)

    greedy_pos, lp_bound, greedy_proven, multiplier = _greedy(red, budget)
    greedy_plan, greedy_repaired = _finish(red.option[greedy_pos], items, costs, values, budget)
    greedy_value = _value(greedy_plan, values)
    if greedy_proven and not greedy_repaired:
        return _solution(greedy_plan, costs, values, "greedy", True, greedy_value)
    if red.option.size > exact_max_options:
        method = "greedy+repair" if greedy_repaired else "greedy"
        return _solution(greedy_plan, costs, values, method, False, lp_bound)

    fixed, keep, must = _core(red, budget, greedy_value, multiplier)
    if int(keep.sum()) > _MAX_CORE_OPTIONS:
        method = "greedy+repair" if greedy_repaired else "greedy"
        return _solution(greedy_plan, costs, values, method, False, lp_bound)
    milp_pos, milp_optimal, milp_bound = _milp(red, budget, time_limit_s, fixed, keep, must)
    bound = lp_bound if milp_bound is None else min(lp_bound, milp_bound)
    if milp_pos is not None:
        milp_plan, milp_repaired = _finish(red.option[milp_pos], items, costs, values, budget)
        milp_value = _value(milp_plan, values)
        if milp_value >= greedy_value:
            method = "milp+repair" if milp_repaired else "milp"
            optimal = milp_optimal and not milp_repaired
            return _solution(milp_plan, costs, values, method, optimal, bound)
        # Only reachable after a time-out or within HiGHS's gap tolerance.
        optimal = milp_optimal
    else:
        optimal = False
    method = "milp+greedy+repair" if greedy_repaired else "milp+greedy"
    return _solution(greedy_plan, costs, values, method, optimal, bound)


# --------------------------------------------------------------------------- helpers


def _float_vector(x: npt.ArrayLike, name: str) -> FloatArray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite")
    return arr


def _value(chosen: IntArray, values: FloatArray) -> float:
    return math.fsum(values[chosen].tolist())


def _solution(
    chosen: IntArray,
    costs: FloatArray,
    values: FloatArray,
    method: str,
    optimal: bool,
    bound: float | None,
) -> KnapsackSolution:
    chosen = np.sort(chosen).astype(np.intp)
    chosen.setflags(write=False)
    value = _value(chosen, values)
    if bound is not None:
        bound = max(float(bound), value)
    return KnapsackSolution(
        chosen=chosen,
        value=value,
        cost=math.fsum(costs[chosen].tolist()),
        method=method,
        optimal=optimal,
        bound=bound,
    )


def _fits(chosen_costs: FloatArray, budget: float) -> bool:
    """True when the costs (in index order) sum to at most ``budget`` exactly and in numpy."""
    if chosen_costs.size == 0 or math.isinf(budget):
        return True
    if float(chosen_costs.sum()) > budget:
        return False
    as_list = chosen_costs.tolist()
    rounded = math.fsum(as_list)  # correctly rounded, so the comparison is exact unless equal
    if rounded != budget:
        return rounded < budget
    return sum(map(Fraction, as_list), Fraction(0)) <= Fraction(budget)


def _group_exclusive_running_max_rank(group: IntArray, x: FloatArray) -> tuple[IntArray, IntArray]:
    """Dense rank (1-based) of ``x`` and, per position, the largest rank at earlier positions
    of the same group (0 if none). ``group`` must be non-decreasing."""
    _, inverse = np.unique(x, return_inverse=True)
    rank = inverse.astype(np.int64).reshape(-1) + 1
    stride = np.int64(len(x) + 1)
    key = group.astype(np.int64) * stride + rank
    running = np.maximum.accumulate(key)
    previous = np.empty_like(running)
    previous[0] = 0
    previous[1:] = running[:-1]
    previous_rank = np.maximum(previous - group.astype(np.int64) * stride, 0)
    return rank.astype(np.intp), previous_rank.astype(np.intp)


def _reduce(
    items: npt.NDArray[np.generic], costs: FloatArray, values: FloatArray, budget: float
) -> _Reduced:
    eligible = np.flatnonzero((values > 0) & (costs <= budget)).astype(np.intp)
    if eligible.size == 0:
        empty_f = np.empty(0, np.float64)
        return _Reduced(eligible, eligible.copy(), empty_f, empty_f.copy(), 0)
    _, group = np.unique(items[eligible], return_inverse=True)
    group = group.reshape(-1).astype(np.intp)
    c, v = costs[eligible], values[eligible]
    # machine, then cost ascending, value descending, index ascending
    order = np.lexsort((eligible, -v, c, group))
    eligible, group, c, v = eligible[order], group[order], c[order], v[order]
    rank, previous_rank = _group_exclusive_running_max_rank(group, v)
    keep = rank > previous_rank
    eligible, group, c, v = eligible[keep], group[keep], c[keep], v[keep]
    _, group = np.unique(group, return_inverse=True)  # every machine keeps >= 1 option
    group = group.reshape(-1).astype(np.intp)
    return _Reduced(eligible, group, c, v, int(group[-1]) + 1)


def _increments(
    group: IntArray, cost: FloatArray, value: FloatArray, idx: IntArray
) -> tuple[FloatArray, FloatArray, FloatArray, BoolArray]:
    """Cost and value steps from the previous alive point of the same group (or the origin)
    to each alive point ``idx``, their efficiency, and last-of-group flags."""
    g = group[idx]
    first = np.ones(len(idx), dtype=bool)
    first[1:] = g[1:] != g[:-1]
    last = np.ones(len(idx), dtype=bool)
    last[:-1] = g[1:] != g[:-1]
    c, v = cost[idx], value[idx]
    prev_c = np.where(first, 0.0, np.concatenate(([0.0], c[:-1])))
    prev_v = np.where(first, 0.0, np.concatenate(([0.0], v[:-1])))
    dc, dv = c - prev_c, v - prev_v
    eff = np.full(len(idx), np.inf)
    np.divide(dv, dc, out=eff, where=dc > 0)
    return dc, dv, eff, last


def _upper_hull_python(
    group: IntArray, cost: FloatArray, value: FloatArray, idx: IntArray
) -> IntArray:
    """Monotone-chain upper hull per group (with the origin), for degenerate inputs with
    very many options per machine."""
    kept: list[int] = []
    current_group = -1
    start = 0
    for p in idx.tolist():
        if group[p] != current_group:
            current_group, start = int(group[p]), len(kept)
        while len(kept) - start >= 1:
            b = kept[-1]
            ax, ay = (0.0, 0.0) if len(kept) - start == 1 else (cost[kept[-2]], value[kept[-2]])
            cross = (cost[b] - ax) * (value[p] - ay) - (value[b] - ay) * (cost[p] - ax)
            if cross >= 0:  # b on or below the segment from a to p
                kept.pop()
            else:
                break
        kept.append(p)
    return np.asarray(kept, dtype=np.intp)


def _greedy(red: _Reduced, budget: float) -> tuple[IntArray, float, bool, float]:
    """LP-greedy for the MCKP on reduced options.

    Returns the chosen positions (into ``red``), the LP-relaxation bound, whether the greedy
    plan is provably optimal (every machine at its most valuable option) and the efficiency
    of the split increment (the LP-optimal multiplier of the budget row; 0 without split).
    """
    group, cost, value = red.group, red.cost, red.value
    alive = np.arange(len(cost), dtype=np.intp)
    passes = 0
    while True:
        dc, dv, eff, last = _increments(group, cost, value, alive)
        eff_next = np.concatenate((eff[1:], [-np.inf]))
        remove = ~last & (eff <= eff_next)
        if not remove.any():
            break
        alive = alive[~remove]
        passes += 1
        if passes == _MAX_VECTOR_HULL_PASSES:
            alive = _upper_hull_python(group, cost, value, alive)

    order = np.lexsort((red.option[alive], -eff))
    pos, inc_c, inc_v = alive[order], dc[order], dv[order]
    inc_g = group[pos]
    cumulative = np.cumsum(inc_c)
    split = int(np.searchsorted(cumulative, budget, side="right"))
    level = np.full(red.n_groups, -1, dtype=np.intp)
    # positions grow along each machine's hull, so the largest taken one is the furthest
    np.maximum.at(level, inc_g[:split], pos[:split])
    if split == len(pos):
        chosen = level[level >= 0]
        return chosen, math.fsum(value[chosen].tolist()), True, 0.0

    used = float(cumulative[split - 1]) if split > 0 else 0.0
    lp_bound = math.fsum(inc_v[:split].tolist()) + (budget - used) / inc_c[split] * inc_v[split]
    remaining = budget - math.fsum(cost[level[level >= 0]].tolist())

    # Continue past the split: skip increments that no longer fit and freeze their machine.
    tail = np.arange(split, len(pos))
    too_big = inc_c[tail] > remaining
    frozen_from = np.full(red.n_groups, len(pos), dtype=np.intp)
    np.minimum.at(frozen_from, inc_g[tail[too_big]], tail[too_big])
    candidates = tail[tail < frozen_from[inc_g[tail]]]
    frozen: set[int] = set()
    for t, g, c in zip(
        candidates.tolist(), inc_g[candidates].tolist(), inc_c[candidates].tolist(), strict=True
    ):
        if g in frozen:
            continue
        if c <= remaining:
            remaining -= c
            level[g] = pos[t]
        else:
            frozen.add(g)
    chosen = level[level >= 0]

    # Best single option: together with the greedy at least half of the optimum.
    best = int(np.lexsort((red.option, -value))[0])
    if value[best] > math.fsum(value[chosen].tolist()):
        chosen = np.array([best], dtype=np.intp)
    return chosen, lp_bound, False, float(inc_v[split] / inc_c[split])


def _finish(
    chosen: IntArray,
    items: npt.NDArray[np.generic],
    costs: FloatArray,
    values: FloatArray,
    budget: float,
) -> tuple[IntArray, bool]:
    """Sort the plan and make sure it fits; returns the plan and whether it was repaired."""
    chosen = np.sort(chosen).astype(np.intp)
    if _fits(costs[chosen], budget):
        return chosen, False
    plan = chosen.tolist()
    while plan and not _fits(costs[np.asarray(plan, dtype=np.intp)], budget):
        worst = min(plan, key=lambda k: (values[k] / costs[k] if costs[k] > 0 else math.inf, -k))
        plan.remove(worst)
    # Refill machines left without an option, most efficient first, where they fit.
    item_ids = items.tolist()
    taken_items = {item_ids[k] for k in plan}
    spare = budget - math.fsum(costs[np.asarray(plan, dtype=np.intp)].tolist())
    candidates = np.flatnonzero((values > 0) & (costs <= spare))
    with np.errstate(divide="ignore"):
        efficiency = np.where(costs[candidates] > 0, values[candidates] / costs[candidates], np.inf)
    # Once an option does not fit, dearer ones will not either (the plan only grows).
    failed_at = math.inf
    current = np.asarray(plan, dtype=np.intp)
    for k in candidates[np.lexsort((candidates, -efficiency))].tolist():
        if item_ids[k] in taken_items or costs[k] > spare or costs[k] >= failed_at:
            continue
        trial = np.sort(np.append(current, k))
        if _fits(costs[trial], budget):
            current = trial
            taken_items.add(item_ids[k])
            spare = budget - math.fsum(costs[trial].tolist())
        else:
            failed_at = float(costs[k])
    return np.sort(current), True


def _core(
    red: _Reduced, budget: float, lower: float, multiplier: float
) -> tuple[IntArray, BoolArray, BoolArray]:
    """Lagrangian variable fixing: the options and "nothing" choices that can be part of a
    plan worth at least ``lower``.

    For any multiplier ``lam >= 0`` of the budget row, with ``p_k = value_k - lam * cost_k``
    and ``mu_i = max(0, max_{k in i} p_k)``, every plan ``S`` satisfies
    ``value(S) <= L + sum_{k in S} (p_k - mu_i(k)) - sum_{i without option} mu_i`` where
    ``L = lam * budget + sum_i mu_i`` (the LP bound when ``lam`` is the efficiency of the
    split increment). All terms of the sum are <= 0, so an option with
    ``L + p_k - mu_i < lower`` is in no plan worth ``lower`` or more, and a machine with
    ``L - mu_i < lower`` must get an option in any such plan. As ``lower`` is the value of a
    feasible plan, every optimal plan survives.

    Returns ``(fixed, keep, must)``: positions that are certainly chosen (a machine that must
    get an option and has one left), the options left free for the MILP, and per machine
    whether it must get one of them (no reduction at all if rounding made it inconsistent).
    """
    starts = np.flatnonzero(np.concatenate(([True], red.group[1:] != red.group[:-1])))
    profit = red.value - multiplier * red.cost
    mu = np.maximum(np.maximum.reduceat(profit, starts), 0.0)
    lagrangian = multiplier * budget + math.fsum(mu.tolist())
    slack = lagrangian - lower + 1e-9 * max(1.0, abs(lagrangian))
    keep = profit - mu[red.group] >= -slack
    must = mu > slack
    n_keep = np.bincount(red.group, weights=keep, minlength=red.n_groups)
    if np.any(must & (n_keep == 0)):
        nothing_fixed = np.empty(0, dtype=np.intp)
        return nothing_fixed, np.ones(len(red.cost), dtype=bool), np.zeros(red.n_groups, bool)
    fixed_group = must & (n_keep == 1)
    fixed = np.flatnonzero(keep & fixed_group[red.group]).astype(np.intp)
    keep &= ~fixed_group[red.group]
    must &= ~fixed_group
    return fixed, keep, must


def _milp(
    red: _Reduced,
    budget: float,
    time_limit_s: float,
    fixed: IntArray,
    keep: BoolArray,
    must: BoolArray,
) -> tuple[IntArray | None, bool, float | None]:
    """Solve the reduced MCKP with HiGHS on the core left by :func:`_core`.

    Returns the chosen positions (or ``None`` without a usable solution), whether they are
    proven optimal and an upper bound on the optimum.
    """
    fixed_value = math.fsum(red.value[fixed].tolist())
    remaining = budget - math.fsum(red.cost[fixed].tolist())
    free = np.flatnonzero(keep).astype(np.intp)
    if remaining < 0:
        return None, False, None
    if free.size == 0:
        return fixed, True, fixed_value

    group, cost, value = red.group[free], red.cost[free], red.value[free]
    n = len(free)
    scale = float(value.max())
    counts = np.bincount(group, minlength=red.n_groups)
    row_groups = np.flatnonzero((counts >= 2) | (must & (counts >= 1)))
    in_row = np.isin(group, row_groups)
    row_of_group = np.zeros(red.n_groups, dtype=np.intp)
    row_of_group[row_groups] = np.arange(1, len(row_groups) + 1)
    rows = np.concatenate((np.zeros(n, dtype=np.intp), row_of_group[group[in_row]]))
    cols = np.concatenate((np.arange(n, dtype=np.intp), np.flatnonzero(in_row)))
    data = np.concatenate((cost, np.ones(int(in_row.sum()))))
    matrix = sparse.csr_array((data, (rows, cols)), shape=(len(row_groups) + 1, n))
    lower_rows = np.concatenate(([-np.inf], np.where(must[row_groups], 1.0, -np.inf)))
    upper_rows = np.concatenate(([remaining], np.ones(len(row_groups))))
    base = LinearConstraint(matrix, lower_rows, upper_rows)
    deadline = time.monotonic() + time_limit_s
    cuts: list[IntArray] = []
    positions: IntArray | None = None
    optimal, bound = False, None
    for _ in range(_MAX_CUT_ROUNDS):
        constraints = [base]
        if cuts:
            cut_rows = np.repeat(np.arange(len(cuts)), [len(c) for c in cuts])
            cut_matrix = sparse.csr_array(
                (np.ones(len(cut_rows)), (cut_rows, np.concatenate(cuts))), shape=(len(cuts), n)
            )
            sizes = np.array([len(c) for c in cuts], dtype=np.float64)
            constraints.append(LinearConstraint(cut_matrix, -np.inf, sizes - 1.0))
        result = milp(
            -value / scale,
            integrality=np.ones(n),
            bounds=Bounds(0.0, 1.0),
            constraints=constraints,
            # HiGHS presolve (probing) can take longer than the whole solve and ignores the
            # time limit on large knapsack rows; the core is small, so it is not needed.
            options={
                "time_limit": max(0.0, deadline - time.monotonic()),
                "mip_rel_gap": 0.0,
                "presolve": False,
            },
        )
        dual = getattr(result, "mip_dual_bound", None)
        if dual is not None and np.isfinite(dual):
            bound = fixed_value - float(dual) * scale  # cuts only remove infeasible plans
        if result.x is None:
            return positions, False, bound
        chosen = np.flatnonzero(np.asarray(result.x, dtype=np.float64) > 0.5).astype(np.intp)
        positions = np.concatenate((fixed, free[chosen])).astype(np.intp)
        # at most one option per machine, whatever the tolerances did
        if np.unique(red.group[positions]).size != positions.size:
            return None, False, bound
        optimal = bool(result.status == 0)
        in_order = positions[np.argsort(red.option[positions])]
        if _fits(red.cost[in_order], budget) or not optimal or chosen.size == 0:
            break
        # HiGHS accepted a plan over the budget within its tolerance: forbid this set of
        # options (and so its supersets, all infeasible) and solve again.
        cuts.append(chosen)
        optimal = False
    return positions, optimal, bound
