"""Pure scoring functions for forecasts (open_cp's evaluation.py is the model): hit rates,
PAI, bootstrap intervals, Brier skill, reliability."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
COVERAGES = (1, 5, 10, 20)


def ranked_cells(risk: FloatArray, tiebreak: npt.ArrayLike | None = None) -> IntArray:
    """Indices by descending risk, ties broken by ascending ``tiebreak`` (default: the
    cell index, as DOMAIN.md fixes for grids)."""
    key = np.arange(len(risk)) if tiebreak is None else np.asarray(tiebreak)
    return np.lexsort((np.arange(len(risk)), key, -risk)).astype(np.int64)


def flagged(
    risk: FloatArray, coverage_pct: float, tiebreak: npt.ArrayLike | None = None
) -> IntArray:
    """The top ceil(k/100 * n) cells (or machines)."""
    k = math.ceil(coverage_pct / 100 * len(risk))
    return ranked_cells(risk, tiebreak)[:k]


def hits(risk: FloatArray, event_cells: IntArray, coverage_pct: float) -> int:
    """Number of events that fall in the flagged cells."""
    mask = np.zeros(len(risk), dtype=bool)
    mask[flagged(risk, coverage_pct)] = True
    return int(mask[event_cells].sum())


def share_flagged_positive(risk: FloatArray, coverage_pct: float) -> float:
    """Share of flagged cells whose risk is above zero (the rest were filled by ties)."""
    top = flagged(risk, coverage_pct)
    return float((risk[top] > 0).mean()) if len(top) else 0.0


def bootstrap_mean_interval(
    values: Sequence[float], *, n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
    """Mean and percentile bootstrap interval of per-origin values."""
    arr = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
    if len(arr) == 0:
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = arr[rng.integers(0, len(arr), size=(n_boot, len(arr)))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(arr.mean()), float(lo), float(hi)


def paired_bootstrap(
    hits_a: Sequence[int],
    hits_b: Sequence[int],
    totals: Sequence[int],
    *,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, float]:
    """Resample origins; pooled hit rate of A minus B with interval and P(A <= B)."""
    a, b, n = (np.asarray(v, dtype=float) for v in (hits_a, hits_b, totals))
    if n.sum() == 0:
        return {"difference": math.nan, "low": math.nan, "high": math.nan, "p_not_better": math.nan}
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(n), size=(n_boot, len(n)))
    tot = n[idx].sum(axis=1)
    ok = tot > 0
    diff = (a[idx].sum(axis=1)[ok] - b[idx].sum(axis=1)[ok]) / tot[ok]
    lo, hi = np.quantile(diff, [0.025, 0.975])
    return {
        "difference": float((a.sum() - b.sum()) / n.sum()),
        "low": float(lo),
        "high": float(hi),
        "p_not_better": float((diff <= 0).mean()),
    }


def brier(prob: FloatArray, outcome: FloatArray) -> float:
    return float(np.mean((prob - outcome) ** 2))


def brier_skill(prob: FloatArray, reference: FloatArray, outcome: FloatArray) -> float:
    """1 - Brier(prob) / Brier(reference); > 0 means better than the reference."""
    ref = brier(reference, outcome)
    return math.nan if ref == 0 else 1.0 - brier(prob, outcome) / ref


def reliability(prob: FloatArray, outcome: FloatArray, bins: int = 10) -> list[dict[str, float]]:
    """Mean predicted vs observed frequency by decile of predicted probability."""
    order = np.argsort(prob, kind="stable")
    out = []
    for part in np.array_split(order, bins):
        if len(part) == 0:
            continue
        out.append(
            {
                "n": float(len(part)),
                "predicted": float(prob[part].mean()),
                "observed": float(outcome[part].mean()),
            }
        )
    return out


def probability_report(
    probs: Sequence[FloatArray],
    attacks: Sequence[FloatArray],
    outcomes: Sequence[FloatArray],
    *,
    base_rate: Sequence[FloatArray],
    prior_counts: Sequence[FloatArray],
    tiebreak: npt.ArrayLike | None = None,
) -> dict[str, object]:
    """Machine-level scores of one method over origins.

    ``probs[o]``: the method's probabilities at origin o; ``attacks[o]``: attacks (or their
    expected number) per machine in the window, for the share in the top k %; ``outcomes[o]``:
    the 0/1 (or soft) outcome per machine, for the Brier scores.
    """
    p, y = np.concatenate(probs), np.concatenate(outcomes)
    total = float(sum(a.sum() for a in attacks))
    share = {}
    for k in COVERAGES:
        got = sum(
            float(a[flagged(pr, k, tiebreak)].sum()) for pr, a in zip(probs, attacks, strict=True)
        )
        share[str(k)] = got / total if total else math.nan
    return {
        "share_in_top": share,
        "brier": brier(p, y),
        "brier_skill_vs_base_rate": brier_skill(p, np.concatenate(base_rate), y),
        "brier_skill_vs_prior_counts": brier_skill(p, np.concatenate(prior_counts), y),
        "reliability_by_decile": reliability(p, y),
    }
