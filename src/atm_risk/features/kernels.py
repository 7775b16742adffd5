"""Vectorised spatial kernels on projected coordinates (metres). No Python loop over points.

Every function takes plain arrays so that it can be tested against a brute-force reference
and used at continental scale: pairs of points are generated in blocks of bounded size and
reduced block by block (never all held at once), in two threads, from a "row index" (points
sorted by horizontal band and x, so that the points of a band within an x-interval are one
contiguous run, found in a look-up table). Blocks are small (65k candidates: their
temporaries stay in the core's cache).

Counting needs no pairs for the points certainly within the radius (whole runs, counted per
age bin from cumulative sums); only a ring of candidates is checked. Expected counts of
uncertain points evaluate every radius on one pass over their pairs. Wide Gaussian
exposures with very many pairs may use a grid (``GRID_KERNEL_ERROR`` states its error);
everything else is exact.
"""

from __future__ import annotations

import math
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Literal, TypeVar

import numpy as np
import numpy.typing as npt
import shapely
from scipy import fft as sp_fft
from scipy import ndimage, optimize, special
from scipy.spatial import cKDTree
from scipy.stats import rice

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]
_T = TypeVar("_T")
_R = TypeVar("_R")

KERNEL_CUTOFF = 6.0  # Gaussian kernels are evaluated to 6 bandwidths (exp(-18) ~ 1.5e-8)
MAX_PAIRS_PER_CHUNK = 20_000_000
# Candidate pairs examined at once per thread: small enough that a block's temporaries stay in
# the core's cache (2 MB blocks were about twice as slow, memory-bound).
MAX_CANDIDATES_PER_BLOCK = 65_536
THREADS = min(2, os.cpu_count() or 1)  # numpy releases the GIL in the heavy steps
MAX_GRID_CELLS = 30_000_000  # about 32 bytes a cell at the peak (grid and transforms)
GRID_CELLS_PER_BANDWIDTH = 4
# The grid method reproduces each point's kernel (peak 1) to within this, anywhere (measured
# 3.0e-4 at worst over positions within a cell, distances and location errors; tested), so
# a grid exposure is within GRID_KERNEL_ERROR * sum_j w_j h^2 / h_j^2 of the exact sum.
GRID_KERNEL_ERROR = 5e-4
QUERY_BLOCK = 2_048
MAX_LOOKUP_CELLS = 8_000_000  # (row, x-cell) table of a row index (int32)
LOOKUP_CELLS_PER_POINT = 8
# Candidate runs are widened by this much (metres) so that rounding never drops a pair; every
# candidate is then checked against the exact squared distance.
_MARGIN_M = 1.0
_SLACK_M = 1e-3
BORDER_STAGES = (8, 24, 64)  # nearest segments looked at, then GEOS
RICE_TABLE_STEP = 1.0 / 512  # in units of sigma; cubic Hermite error ~1e-13


def _tree(xy: FloatArray) -> cKDTree:
    return cKDTree(xy, balanced_tree=False, compact_nodes=False)


def spatial_order(xy: FloatArray, cell: float = 5_000.0) -> IntArray:
    """An order of the points that keeps neighbours close (bands of ``cell`` metres, by x)."""
    if len(xy) == 0:
        return np.zeros(0, dtype=np.intp)
    y0, x0 = float(xy[:, 1].min()), float(xy[:, 0].min())
    width = float(xy[:, 0].max()) - x0 + 2.0
    key = np.floor((xy[:, 1] - y0) / cell) * width + (xy[:, 0] - x0)
    return np.argsort(key, kind="stable")


def nearest(query_xy: FloatArray, points_xy: FloatArray) -> tuple[FloatArray, IntArray]:
    """Distance to and index of the nearest point for each query point (inf/-1 if none)."""
    n = len(query_xy)
    if len(points_xy) == 0:
        return np.full(n, np.inf), np.full(n, -1, dtype=np.intp)
    # Queries in spatial order visit the same tree nodes one after the other (cache).
    order = spatial_order(query_xy)
    dist_sorted, idx_sorted = _tree(points_xy).query(query_xy[order], k=1, workers=-1)
    dist, idx = np.empty(n), np.empty(n, dtype=np.intp)
    dist[order], idx[order] = dist_sorted, idx_sorted
    return dist, idx


# --- row index and streamed pairs ----------------------------------------------------------


class _RowIndex:
    """Points sorted by row (band of height ``row_height``) and x, with a look-up table of
    the first point of each (row, x-cell): the points of a row within an x-interval are one
    contiguous run, found with two table look-ups (a superset, widened to whole cells, or a
    subset, narrowed to whole cells)."""

    def __init__(self, points_xy: FloatArray, row_height: float, *, size_for: int = 0) -> None:
        x, y = points_xy[:, 0], points_xy[:, 1]
        self.n = len(points_xy)
        self.row_height = float(row_height)
        self.y0 = float(y.min()) if self.n else 0.0
        self.x0 = (float(x.min()) if self.n else 0.0) - 1.0
        self.width = (float(x.max()) if self.n else 0.0) - self.x0 + 2.0
        row = np.floor((y - self.y0) / self.row_height)
        self.n_rows = int(row.max()) + 1 if self.n else 1
        # x-cells of about a quarter row, within a bound on the table size.
        budget = max(min(MAX_LOOKUP_CELLS, LOOKUP_CELLS_PER_POINT * max(self.n, size_for)), 1)
        budget //= self.n_rows
        self.n_cols = int(max(1, min(math.ceil(self.width / (self.row_height / 4)), budget)))
        self.col_width = self.width / self.n_cols
        col = np.minimum(np.floor((x - self.x0) / self.col_width), self.n_cols - 1)
        cell = (row * self.n_cols + col).astype(np.intp)
        self.order = np.lexsort((x, cell))  # by cell (row-major), then x
        self.x = np.ascontiguousarray(x[self.order])
        self.y = np.ascontiguousarray(y[self.order])
        table = np.int32 if self.n < 2**31 - 1 else np.intp
        self.start = np.zeros(self.n_rows * self.n_cols + 1, dtype=table)
        np.cumsum(np.bincount(cell, minlength=self.n_rows * self.n_cols), out=self.start[1:])

    def query_order(self, query_xy: FloatArray) -> IntArray:
        row = np.floor((query_xy[:, 1] - self.y0) / self.row_height)
        return np.argsort(row * (self.width + 4e7) + (query_xy[:, 0] - self.x0), kind="stable")

    def _cell(self, base: FloatArray, rel: FloatArray, shift: int) -> IntArray:
        """Table positions ``base + clip(floor(rel / col_width), 0, n_cols - 1) + shift``."""
        col = np.floor(rel / self.col_width)
        np.clip(col, 0, self.n_cols - 1, out=col)
        col += base
        if shift:
            col += shift
        return col.astype(np.intp)

    def _lookup(self, cells: IntArray) -> IntArray:
        return self.start.take(cells).astype(np.intp, copy=False)

    def runs(
        self,
        qx: FloatArray,
        qy: FloatArray,
        radius: float,
        *,
        inner: bool,
    ) -> tuple[IntArray, IntArray, IntArray, IntArray]:
        """For each row offset and query: the run of candidates [lo, hi) (a superset of the
        points within ``radius``) and, if ``inner``, a sub-run [lo_in, hi_in) of points
        certainly within ``radius`` (else empty). Arrays of shape (rows, queries)."""
        g = self.row_height
        reach = math.ceil(radius / g) + 1
        offsets = np.arange(-reach, reach + 1, dtype=float)[:, None]
        row = np.floor((qy - self.y0) / g)[None, :] + offsets
        band_lo = self.y0 + row * g
        band_hi = band_lo + g
        dy_min = np.maximum(np.maximum(band_lo - qy, qy - band_hi), 0.0)
        valid = (row >= 0) & (row < self.n_rows) & (dy_min <= radius + _SLACK_M)
        half = np.maximum(dy_min - _SLACK_M, 0.0)
        half *= half
        np.subtract(radius**2, half, out=half)
        np.maximum(half, 0.0, out=half)
        np.sqrt(half, out=half)
        half += _MARGIN_M
        base = np.where(valid, row, 0.0)
        base *= self.n_cols
        rel = qx[None, :] - self.x0
        lo = self._lookup(self._cell(base, rel - half, 0))
        hi = self._lookup(self._cell(base, rel + half, 1))
        lo *= valid
        hi *= valid
        if not inner:
            return lo, hi, lo, lo
        dy_max = np.maximum(np.abs(band_lo - qy), np.abs(band_hi - qy))
        dy_max += _SLACK_M
        half_in = np.sqrt(np.maximum(radius**2 - dy_max**2, 0.0))
        half_in -= _MARGIN_M
        lo_in = self._lookup(self._cell(base, rel - half_in, 1))
        hi_in = self._lookup(self._cell(base, rel + half_in, 0))
        has_in = valid & (dy_max < radius) & (half_in > 0) & (lo_in < hi_in)
        lo_in = np.where(has_in, lo_in, lo)
        hi_in = np.where(has_in, hi_in, lo)
        return lo, hi, lo_in, hi_in


class _Pairs:
    """The candidates of some runs [lo, hi): owner (local query index) and index position of
    each, and the owner and length of each non-empty run (to repeat per-query values, much
    cheaper than gathering them)."""

    def __init__(self, lo: IntArray, hi: IntArray, owner: IntArray) -> None:
        length = hi - lo
        nonzero = np.flatnonzero(length > 0)
        lo = lo.take(nonzero)
        self.run_owner, self.run_length = owner.take(nonzero), length.take(nonzero)
        total = int(self.run_length.sum())
        self.qi = np.repeat(self.run_owner, self.run_length)
        self.pos = np.arange(total, dtype=np.intp)
        lo -= np.cumsum(self.run_length)
        lo += self.run_length
        self.pos += np.repeat(lo, self.run_length)

    def per_pair(self, per_query: FloatArray) -> FloatArray:
        return np.repeat(per_query.take(self.run_owner), self.run_length)

    def squared_distances(self, index: _RowIndex, qx: FloatArray, qy: FloatArray) -> FloatArray:
        d2 = index.x.take(self.pos)
        d2 -= self.per_pair(qx)
        d2 *= d2
        dy = index.y.take(self.pos)
        dy -= self.per_pair(qy)
        dy *= dy
        d2 += dy
        return d2


def _candidates(
    index: _RowIndex, qx: FloatArray, qy: FloatArray, lo: IntArray, hi: IntArray
) -> tuple[IntArray, IntArray, FloatArray]:
    """(local query index, index position, squared distance) of every candidate in the runs
    [lo, hi) of shape (rows, queries), grouped by query (local query index ascending); in
    place where possible (fewer large temporaries). Gathers use ``take`` and selections
    ``flatnonzero`` (much faster than fancy or boolean indexing in numpy)."""
    rows, n = lo.shape
    owner = np.repeat(np.arange(n), rows)
    pairs = _Pairs(lo.T.ravel(), hi.T.ravel(), owner)
    return pairs.qi, pairs.pos, pairs.squared_distances(index, qx, qy)


def _per_query(
    reduce: np.ufunc, values: FloatArray, qi: IntArray, n: int, empty: float
) -> FloatArray:
    """``reduce`` (np.add, np.minimum) of the values of each query 0..n-1, the values
    grouped by query (``qi`` ascending); ``empty`` for a query without values. Much faster
    than ``np.bincount`` or ``ufunc.at``."""
    out = np.full(n, empty)
    if len(qi):
        starts = np.searchsorted(qi, np.arange(n))
        ends = np.append(starts[1:], len(qi))
        some = np.flatnonzero(ends > starts)
        out[some] = reduce.reduceat(values, starts.take(some))
    return out


def _rows_per_radius(
    points_xy: FloatArray, query_xy: FloatArray, radius: float, *, inner: bool = False
) -> int:
    """Rows per radius: more rows cost more look-ups but fewer surplus candidates. Chosen
    from the pairs per query, estimated on a sample (tuned on clustered data)."""
    if len(points_xy) == 0 or len(query_xy) == 0:
        return 1
    step = max(1, len(points_xy) // 100_000)
    probe = _RowIndex(points_xy[::step], radius, size_for=len(points_xy))
    sample = query_xy[:: max(1, len(query_xy) // 2_000)]
    lo, hi, _, _ = probe.runs(sample[:, 0], sample[:, 1], radius, inner=False)
    # With one row per radius the candidates cover about 6 R^2 for pi R^2 of pairs.
    pairs = float((hi - lo).sum()) * step / len(sample) * math.pi / 6.0
    if inner:  # counting: only a ring is checked
        return int(np.clip(round(math.sqrt(pairs) / 5), 1, 4))
    # Cost per query ~ 1.5 (2n + 3) row look-ups + pairs (1 + 1.3 / n) candidates.
    return min(range(1, 17), key=lambda n: 1.5 * (2 * n + 3) + pairs * (1 + 1.3 / n))


def _index_for(
    points_xy: FloatArray, query_xy: FloatArray, radius: float, *, inner: bool = False
) -> _RowIndex:
    n = _rows_per_radius(points_xy, query_xy, radius, inner=inner)
    return _RowIndex(points_xy, radius / n)


def _query_blocks(
    index: _RowIndex, query_xy: FloatArray, order: IntArray | None = None
) -> Iterator[tuple[IntArray, FloatArray, FloatArray]]:
    """Blocks of queries in spatial order (``order``, e.g. one :func:`spatial_order` for
    all the passes of a call, or the index's bands)."""
    if order is None:
        order = index.query_order(query_xy)
    for start in range(0, len(order), QUERY_BLOCK):
        ids = order[start : start + QUERY_BLOCK]
        yield ids, query_xy[ids, 0], query_xy[ids, 1]


def _sub_blocks(
    index: _RowIndex,
    block: tuple[IntArray, FloatArray, FloatArray],
    radius: float,
    *,
    inner: bool = False,
) -> Iterator[tuple[IntArray, FloatArray, FloatArray, tuple[IntArray, ...]]]:
    """A block's candidate runs, split so that each part has a bounded number of candidates."""
    ids, qx, qy = block
    runs = index.runs(qx, qy, radius, inner=inner)
    lo, hi, lo_in, hi_in = runs
    bounds = np.cumsum(((hi - lo) - (hi_in - lo_in)).sum(axis=0))
    limit = max(1, min(MAX_CANDIDATES_PER_BLOCK, MAX_PAIRS_PER_CHUNK))
    cut = 0
    while cut < len(ids):
        end = int(np.searchsorted(bounds, (bounds[cut - 1] if cut else 0) + limit, "right"))
        end = max(end, cut + 1)
        yield ids[cut:end], qx[cut:end], qy[cut:end], tuple(r[:, cut:end] for r in runs)
        cut = end


def _parallel(fn: Callable[[_T], _R], items: Iterable[_T]) -> Iterator[_R]:
    """``map(fn, items)`` in THREADS threads (numpy releases the GIL in the heavy steps),
    results in order, at most 2 * THREADS items in flight (memory bound)."""
    if THREADS <= 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(THREADS) as pool:
        pending: deque[Future[_R]] = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= 2 * THREADS:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _map_pairs(
    index: _RowIndex,
    query_xy: FloatArray,
    radius: float,
    fn: Callable[[int, IntArray, IntArray, FloatArray], _R],
    *,
    filtered: bool = True,
    order: IntArray | None = None,
) -> Iterator[tuple[IntArray, _R]]:
    """(query ids, fn(n ids, local query index, index position, squared distance)) for each
    block of pairs with distance <= radius (positions refer to the index's sorted points),
    grouped by query (local query index ascending). With ``filtered=False`` fn gets every
    candidate and must ignore those beyond radius."""
    r2 = radius * radius

    def work(block: tuple[IntArray, FloatArray, FloatArray]) -> list[tuple[IntArray, _R]]:
        out = []
        for ids, qx, qy, (lo, hi, _, _) in _sub_blocks(index, block, radius):
            qi, pos, d2 = _candidates(index, qx, qy, lo, hi)
            if filtered:
                keep = np.flatnonzero(d2 <= r2)
                out.append((ids, fn(len(ids), qi.take(keep), pos.take(keep), d2.take(keep))))
            else:
                out.append((ids, fn(len(ids), qi, pos, d2)))
        return out

    for parts in _parallel(work, _query_blocks(index, query_xy, order)):
        yield from parts


def _count_in_index(index: _RowIndex, query_xy: FloatArray, radius: float) -> npt.NDArray[np.int64]:
    return _bin_counts_in_index(index, query_xy, radius, None, 1)[:, 0]


def _bin_counts_in_index(
    index: _RowIndex,
    query_xy: FloatArray,
    radius: float,
    point_bin: IntArray | None,
    n_bins: int,
    order: IntArray | None = None,
) -> npt.NDArray[np.int64]:
    """Per query and bin, the index's points of that bin within ``radius`` (``point_bin``
    in the index's sorted order; None: one bin). Points certainly within are counted per
    run from cumulative counts of each bin; only the ring between the runs is checked."""
    counts = np.zeros((len(query_xy), n_bins), dtype=np.int64)
    r2 = radius * radius
    cum: npt.NDArray[np.int64] | None = None
    if point_bin is not None:
        cum = np.zeros((n_bins, index.n + 1), dtype=np.int64)
        for b in range(n_bins):
            np.cumsum(point_bin == b, out=cum[b, 1:])

    def work(
        block: tuple[IntArray, FloatArray, FloatArray],
    ) -> list[tuple[IntArray, npt.NDArray[np.int64]]]:
        out = []
        for ids, qx, qy, (lo, hi, lo_in, hi_in) in _sub_blocks(index, block, radius, inner=True):
            n = len(ids)
            if cum is None:
                sure = (hi_in - lo_in).sum(axis=0)[:, None]
            else:
                sure = (cum.take(hi_in, axis=1) - cum.take(lo_in, axis=1)).sum(axis=1).T
            owner = np.broadcast_to(np.arange(n), lo.shape).ravel()
            ring = _Pairs(
                np.concatenate([lo.ravel(), hi_in.ravel()]),
                np.concatenate([lo_in.ravel(), hi.ravel()]),
                np.concatenate([owner, owner]),
            )
            within = np.flatnonzero(ring.squared_distances(index, qx, qy) <= r2)
            slot = ring.qi.take(within)
            if point_bin is not None:
                slot *= n_bins
                slot += point_bin.take(ring.pos.take(within))
            found = np.bincount(slot, minlength=n * n_bins).reshape(n, n_bins)
            out.append((ids, sure + found))
        return out

    for parts in _parallel(work, _query_blocks(index, query_xy, order)):
        for ids, total in parts:
            counts[ids] = total
    return counts


def count_within(
    query_xy: FloatArray, points_xy: FloatArray, radius: float, *, exclude_self: bool = False
) -> npt.NDArray[np.int64]:
    """Number of points within ``radius`` (inclusive) of each query point."""
    if len(points_xy) == 0 or len(query_xy) == 0:
        return np.zeros(len(query_xy), dtype=np.int64)
    index = _index_for(points_xy, query_xy, radius, inner=True)
    counts = _count_in_index(index, query_xy, radius)
    return counts - 1 if exclude_self else counts


Bounds = tuple[FloatArray, FloatArray]


def _bounds(*arrays: FloatArray, known: Bounds | None = None) -> Bounds:
    """Minimum and maximum (x, y) over the non-empty arrays and ``known`` bounds."""
    lows = [a.min(axis=0) for a in arrays if len(a)]
    highs = [a.max(axis=0) for a in arrays if len(a)]
    if known is not None:
        lows.append(known[0])
        highs.append(known[1])
    return np.min(lows, axis=0), np.max(highs, axis=0)


def _bbox_area(*arrays: FloatArray, known: Bounds | None = None) -> float:
    low, high = _bounds(*arrays, known=known)
    span = high - low
    return float(max(span[0], 1.0) * max(span[1], 1.0))


def pairs_within(
    query_xy: FloatArray, points_xy: FloatArray, radius: float
) -> tuple[IntArray, IntArray, FloatArray]:
    """All (query index, point index, distance) with distance <= radius.

    Holds every pair in memory: for small inputs and tests; the features reduce the pairs
    block by block instead.
    """
    if len(points_xy) == 0 or len(query_xy) == 0:
        empty = np.zeros(0, dtype=np.intp)
        return empty, empty, np.zeros(0)
    index = _index_for(points_xy, query_xy, radius)
    qs, ps, ds = [], [], []
    for ids, (qi, pos, d2) in _map_pairs(
        index, query_xy, radius, lambda _, qi, pos, d2: (qi, pos, d2)
    ):
        qs.append(ids[qi])
        ps.append(index.order[pos])
        ds.append(np.sqrt(d2))
    if not qs:
        empty = np.zeros(0, dtype=np.intp)
        return empty, empty, np.zeros(0)
    return np.concatenate(qs), np.concatenate(ps), np.concatenate(ds)


# --- Gaussian exposure ---------------------------------------------------------------------


def gaussian_exposure(
    query_xy: FloatArray,
    points_xy: FloatArray,
    weights: FloatArray,
    location_sigma: FloatArray,
    bandwidth: float,
    *,
    method: Literal["auto", "exact", "grid"] = "auto",
) -> FloatArray:
    """sum_j w_j * (h^2 / h_j^2) * exp(-d_ij^2 / (2 h_j^2)),  h_j^2 = h^2 + sigma_j^2.

    A point known only to within ``sigma_j`` metres is spread over a wider kernel with the
    same total weight, never counted as exact. ``exact`` evaluates every pair within
    6 h_j; ``grid`` bins the points onto a grid of h/4 cells (quadratic B-spline weights),
    smooths with the Gaussians in Fourier space, undoing the binning's own spread, and
    interpolates with cubic B-splines: every point's kernel is reproduced to within
    ``GRID_KERNEL_ERROR`` (0.05 %) of its peak, so the result is within
    GRID_KERNEL_ERROR * sum_j w_j h^2 / h_j^2 of the exact sum (in practice within about
    0.03 % of max(1, value), as measured by benchmarks/features.py);
    ``auto`` picks ``grid`` when the pair count would be large.
    """
    return gaussian_exposures(
        query_xy, points_xy, [weights], location_sigma, bandwidth, method=method
    )[0]


def gaussian_exposures(
    query_xy: FloatArray,
    points_xy: FloatArray,
    weight_sets: Sequence[FloatArray],
    location_sigma: FloatArray,
    bandwidth: float | Sequence[float],
    *,
    method: Literal["auto", "exact", "grid"] = "auto",
) -> list[FloatArray]:
    """:func:`gaussian_exposure` for several weightings (e.g. decays) and bandwidths (one
    for all, or one per weighting), each exactly as if computed alone; the exact method finds
    the pairs once for weightings with the same points and similar reach."""
    bandwidths = (
        [float(bandwidth)] * len(weight_sets)
        if isinstance(bandwidth, (int, float))
        else [float(b) for b in bandwidth]
    )
    outs = [np.zeros(len(query_xy)) for _ in weight_sets]
    if len(query_xy) == 0:
        return outs
    query_bounds = _bounds(query_xy)
    order = spatial_order(query_xy)  # one query order for every pass
    # Per term, the groups (points, weights, h_eff, norm) evaluated on one grid.
    grid_groups: dict[int, list[tuple[FloatArray, FloatArray, float, float]]] = {}
    # Weightings with the same positive points can share their pairs.
    shared: dict[bytes, list[int]] = {}
    for i, weights in enumerate(weight_sets):
        shared.setdefault(np.packbits(weights > 0).tobytes(), []).append(i)
    for members in shared.values():
        keep = weight_sets[members[0]] > 0
        if not keep.any():
            continue
        points, sigmas = points_xy[keep], location_sigma[keep]
        kept = {i: weight_sets[i][keep] for i in members}
        for sigma in np.unique(sigmas):
            group = sigmas == sigma
            exact: list[tuple[int, float, float]] = []  # (term, h_eff, norm)
            for i in members:
                h_eff = math.sqrt(bandwidths[i] ** 2 + float(sigma) ** 2)
                norm = bandwidths[i] ** 2 / h_eff**2
                chosen: str = method
                if method == "auto":
                    chosen = _choose_method(query_xy, points[group], h_eff, query_bounds)
                if chosen == "grid":
                    grid_groups.setdefault(i, []).append(
                        (points[group], kept[i][group], h_eff, norm)
                    )
                else:
                    exact.append((i, h_eff, norm))
            # Terms whose cutoffs differ by less than 25 % share one pass over the pairs.
            exact.sort(key=lambda term: term[1])
            while exact:
                first = exact[0][1]
                batch = [t for t in exact if t[1] <= 1.25 * first]
                exact = exact[len(batch) :]
                sums = _exact_exposures_multi(
                    query_xy, points[group], [(h, kept[i][group]) for i, h, _ in batch], order
                )
                for (i, _, norm), total in zip(batch, sums, strict=True):
                    outs[i] += norm * total
    for i, groups in grid_groups.items():
        outs[i] += _grid_exposure_groups(query_xy, groups, query_bounds)
    return outs


def _choose_method(
    query_xy: FloatArray, points_xy: FloatArray, h: float, query_bounds: Bounds | None = None
) -> str:
    if query_bounds is not None:
        area = _bbox_area(points_xy, known=query_bounds)
    else:
        area = _bbox_area(query_xy, points_xy)
    radius = KERNEL_CUTOFF * h
    expected_pairs = len(query_xy) * len(points_xy) * min(math.pi * radius**2 / area, 1.0)
    cells = _grid_cells(query_xy, points_xy, h, query_bounds)
    return (
        "grid" if expected_pairs > 2 * MAX_PAIRS_PER_CHUNK and cells <= MAX_GRID_CELLS else "exact"
    )


def _exact_exposure(
    query_xy: FloatArray, points_xy: FloatArray, weights: FloatArray, h: float
) -> FloatArray:
    return _exact_exposures_multi(query_xy, points_xy, [(h, weights)])[0]


def _exact_exposures_multi(
    query_xy: FloatArray,
    points_xy: FloatArray,
    terms: Sequence[tuple[float, FloatArray]],
    order: IntArray | None = None,
) -> list[FloatArray]:
    """For each (h, weights): sum_j w_j exp(-d^2 / 2h^2) over pairs within 6 h, in one pass
    over the pairs within the largest cutoff."""
    outs = [np.zeros(len(query_xy)) for _ in terms]
    if len(query_xy) == 0 or len(points_xy) == 0 or not terms:
        return outs
    radius = KERNEL_CUTOFF * max(h for h, _ in terms)
    index = _index_for(points_xy, query_xy, radius)
    by_h: dict[float, list[tuple[int, FloatArray]]] = {}
    for i, (h, weights) in enumerate(terms):
        by_h.setdefault(h, []).append((i, weights[index.order]))

    def sums(n: int, qi: IntArray, pos: IntArray, d2: FloatArray) -> list[FloatArray]:
        result: list[FloatArray] = [np.zeros(0)] * len(terms)
        for h, members in by_h.items():
            kernel = np.exp(d2 * (-0.5 / (h * h)))
            kernel *= d2 <= (KERNEL_CUTOFF * h) ** 2  # 0 beyond this term's cutoff
            for i, weights in members:
                result[i] = _per_query(np.add, weights.take(pos) * kernel, qi, n, 0.0)
        return result

    for ids, block in _map_pairs(index, query_xy, radius, sums, filtered=False, order=order):
        for out, total in zip(outs, block, strict=True):
            out[ids] += total
    return outs


def _grid_geometry(
    query_xy: FloatArray,
    point_sets: Sequence[FloatArray],
    h_min: float,
    h_max: float,
    query_bounds: Bounds | None = None,
) -> tuple[FloatArray, float, tuple[int, int]]:
    """Origin, cell and shape of a grid of h_min/4 cells over the queries and points, padded
    by 7 h_max (so that a circular convolution never wraps onto a query), each side a
    size the FFT is fast for."""
    cell = h_min / GRID_CELLS_PER_BANDWIDTH
    pad = (KERNEL_CUTOFF + 1) * h_max
    if query_bounds is not None:
        low, high = _bounds(*point_sets, known=query_bounds)
    else:
        low, high = _bounds(query_xy, *point_sets)
    origin = low - pad
    extent = high + pad - origin
    shape = (
        sp_fft.next_fast_len(math.ceil(extent[1] / cell) + 2, real=True),
        sp_fft.next_fast_len(math.ceil(extent[0] / cell) + 2, real=True),
    )
    return origin, cell, shape


def _grid_cells(
    query_xy: FloatArray, points_xy: FloatArray, h: float, query_bounds: Bounds | None = None
) -> int:
    _, _, shape = _grid_geometry(query_xy, [points_xy], h, h, query_bounds)
    return shape[0] * shape[1]


def _grid_exposure(
    query_xy: FloatArray,
    points_xy: FloatArray,
    weights: FloatArray,
    h: float,
    query_bounds: Bounds | None = None,
) -> FloatArray:
    return _grid_exposure_groups(query_xy, [(points_xy, weights, h, 1.0)], query_bounds)


def _grid_exposure_groups(
    query_xy: FloatArray,
    groups: Sequence[tuple[FloatArray, FloatArray, float, float]],
    query_bounds: Bounds | None = None,
) -> FloatArray:
    """sum over groups (points, weights, h, norm) of norm * sum_j w_j exp(-d^2 / 2h^2), on
    one grid of (smallest h)/4 cells: each group binned (quadratic B-spline weights) and
    smoothed with its own Gaussian in Fourier space (the exact transfer function), the
    groups summed before one inverse transform, then interpolated with cubic B-splines
    (their prefilter also applied in Fourier space). See ``GRID_KERNEL_ERROR``."""
    groups = [g for g in groups if len(g[0])]
    if not groups or len(query_xy) == 0:
        return np.zeros(len(query_xy))
    h_min = min(h for _, _, h, _ in groups)
    h_max = max(h for _, _, h, _ in groups)
    points = [p for p, _, _, _ in groups]
    origin, cell, shape = _grid_geometry(query_xy, points, h_min, h_max, query_bounds)
    if len(groups) > 1 and shape[0] * shape[1] > MAX_GRID_CELLS:  # one grid per group
        total = np.zeros(len(query_xy))
        for group in groups:
            total += _grid_exposure_groups(query_xy, [group], query_bounds)
        return total
    fy = sp_fft.fftfreq(shape[0])
    fx = sp_fft.rfftfreq(shape[1])
    spectrum: npt.NDArray[np.complex128] | None = None
    for group_xy, weights, h, norm in groups:
        sigma_cells = h / cell
        # The filter sums to 1 and the kernel peaks at 1: scale by 2 pi sigma^2.
        scale = norm * 2 * math.pi * sigma_cells**2
        grid = _bin_quadratic(group_xy, weights * scale, origin, cell, shape)
        transformed = sp_fft.rfft2(grid, workers=THREADS)
        del grid
        transformed *= _grid_transfer(fy, sigma_cells)[:, None]
        transformed *= _grid_transfer(fx, sigma_cells)[None, :]
        if spectrum is None:
            spectrum = transformed
        else:
            spectrum += transformed
            del transformed
    assert spectrum is not None
    smoothed = sp_fft.irfft2(spectrum, s=shape, workers=THREADS)
    del spectrum
    qx = (query_xy[:, 0] - origin[0]) / cell
    qy = (query_xy[:, 1] - origin[1]) / cell
    values = np.asarray(
        ndimage.map_coordinates(smoothed, [qy, qx], order=3, mode="constant", prefilter=False),
        dtype=float,
    )
    # Rounding in the transforms leaves about 1e-16 of the total weight where there is none.
    np.maximum(values, 0.0, out=values)
    return values


def _grid_transfer(freq: FloatArray, sigma_cells: float) -> FloatArray:
    """Along one axis (frequencies in cycles per cell): the Gaussian filter, divided by the
    transfer function of the quadratic B-spline binning (sinc^3: undoes its spread) and by
    that of cubic B-spline interpolation (3 / (2 + cos 2 pi f): the spline prefilter)."""
    gauss = np.exp(-2.0 * math.pi**2 * sigma_cells**2 * freq**2)
    return gauss / np.sinc(freq) ** 3 * (3.0 / (2.0 + np.cos(2.0 * math.pi * freq)))


def _bin_quadratic(
    points_xy: FloatArray,
    weights: FloatArray,
    origin: FloatArray,
    cell: float,
    shape: tuple[int, int],
) -> FloatArray:
    """Quadratic B-spline ("triangular shaped cloud") binning: each point's weight goes to
    the 3 x 3 nodes around it. Its spread (variance 1/4 cell^2 per axis) does not depend on
    where the point lies within its cell, so dividing by its transfer function sinc^3
    undoes it for every point alike (linear binning spreads a point on a node less than one
    in the middle of a cell)."""
    gx = (points_xy[:, 0] - origin[0]) / cell
    gy = (points_xy[:, 1] - origin[1]) / cell
    x0, y0 = np.rint(gx).astype(np.intp), np.rint(gy).astype(np.intp)
    fx, fy = gx - x0, gy - y0  # in [-1/2, 1/2]
    wx = (0.5 * (0.5 - fx) ** 2, 0.75 - fx**2, 0.5 * (0.5 + fx) ** 2)
    wy = (0.5 * (0.5 - fy) ** 2, 0.75 - fy**2, 0.5 * (0.5 + fy) ** 2)
    base = y0 * shape[1] + x0
    flat = np.concatenate([base + dy * shape[1] + dx for dy in (-1, 0, 1) for dx in (-1, 0, 1)])
    share = np.concatenate([weights * a * b for a in wy for b in wx])
    grid = np.bincount(flat, weights=share, minlength=shape[0] * shape[1])
    return grid.astype(np.float64, copy=False).reshape(shape)


# --- probability of lying within a radius ---------------------------------------------------


class _RiceTable:
    """P(|X| <= a), X ~ N((u, 0), I), as a function of u in [0, a + 6] (or further, to
    ``nodes`` steps), tabulated with its derivative (cubic Hermite interpolation, error
    ~1e-13)."""

    def __init__(self, a: float, nodes: int = 0) -> None:
        self.a = a
        self.step = RICE_TABLE_STEP
        n = max(_rice_nodes(a), nodes)
        u = np.arange(n) * self.step
        self.value = np.asarray(rice.cdf(a, u), dtype=float)
        # d/du P = -a exp(-(a^2 + u^2) / 2) I1(a u), with I1 scaled for range.
        self.slope = -a * special.ive(1, a * u) * np.exp(-((a - u) ** 2) / 2) * self.step
        self.nodes = n
        f0, f1 = self.value[:-1], self.value[1:]
        m0, m1 = self.slope[:-1], self.slope[1:]
        # p(t) = f0 + t (m0 + t (c2 + t c3)) on each step, t in [0, 1].
        self.c0, self.c1 = f0.copy(), m0.copy()
        self.c2 = 3.0 * (f1 - f0) - 2.0 * m0 - m1
        self.c3 = 2.0 * (f0 - f1) + m0 + m1

    def locate(self, u: FloatArray) -> tuple[IntArray, FloatArray]:
        return _rice_locate(u, self.nodes)

    def at(self, i: IntArray, t: FloatArray) -> FloatArray:
        p: FloatArray = self.c3.take(i)
        p *= t
        p += self.c2.take(i)
        p *= t
        p += self.c1.take(i)
        p *= t
        p += self.c0.take(i)
        return p

    def __call__(self, u: FloatArray) -> FloatArray:
        return self.at(*self.locate(u))


def _rice_locate(u: FloatArray, nodes: int) -> tuple[IntArray, FloatArray]:
    """Step and position within it (t in [0, 1]) of each u, in any table of at least
    ``nodes`` nodes (the last step extended beyond)."""
    t = u * (1.0 / RICE_TABLE_STEP)
    i = t.astype(np.intp)
    np.minimum(i, nodes - 2, out=i)
    t -= i
    return i, t


def _rice_nodes(a: float) -> int:
    return math.ceil((a + KERNEL_CUTOFF + 1.0) / RICE_TABLE_STEP) + 2


def _rice_table(a: float, nodes: int = 0) -> _RiceTable:
    """The (cached) table for ``a`` with at least ``nodes`` nodes."""
    table = _RICE_TABLES.get(a)
    if table is None or table.nodes < nodes:
        if len(_RICE_TABLES) > 64:
            _RICE_TABLES.clear()
        table = _RICE_TABLES[a] = _RiceTable(a, nodes)
    return table


_RICE_TABLES: dict[float, _RiceTable] = {}


def _last_u_at_least(a: float, p: float) -> float | None:
    """The u where P(|X| <= a), X ~ N((u, 0), I), falls to p (it decreases in u); None if
    it is below p even at u = 0."""
    if -math.expm1(-(a**2) / 2) < p:  # the Rayleigh CDF at the centre
        return None
    high = a + KERNEL_CUTOFF
    if float(rice.cdf(a, high)) >= p:
        return high
    return float(optimize.brentq(lambda u: float(rice.cdf(a, u)) - p, 0.0, high, xtol=1e-12))


def _within_probability(d2: FloatArray, sigma: float, radius: float) -> FloatArray:
    """P(within radius) for pairs at squared distances d2 from a point with error sigma."""
    return _rice_cdf(radius / sigma, np.sqrt(d2) / sigma)


def _rice_cdf(a: float, u: FloatArray) -> FloatArray:
    """P(|X| <= a), X ~ N((u, 0), I), for u in [0, a + 7]: from a table of the Rice CDF when
    there are enough values to pay for it, else directly."""
    if a not in _RICE_TABLES and len(u) < _rice_nodes(a):
        return np.asarray(rice.cdf(a, u), dtype=float)
    return _rice_table(a)(u)


def expected_within(
    query_xy: FloatArray,
    points_xy: FloatArray,
    location_sigma: FloatArray,
    radius: float,
) -> tuple[IntArray, IntArray, FloatArray]:
    """Pairs (query, point, probability that the point lies within ``radius``).

    For an exactly located point the probability is 1 within the radius; for a point known
    to within a circular Gaussian error sigma it is the Rice CDF P(|X| <= R), X ~ N(mu, sigma^2 I).
    Pairs with probability below 1e-9 are left out. Holds every pair in memory (see
    :func:`expected_counts` for the block-wise sums).
    """
    qs, ps, probs = [], [], []
    for sigma in np.unique(location_sigma):
        group = np.flatnonzero(location_sigma == sigma)
        reach = radius + (KERNEL_CUTOFF * float(sigma))
        qi, pj, d = pairs_within(query_xy, points_xy[group], reach)
        p = np.ones(len(d)) if sigma == 0 else rice.cdf(radius / sigma, d / sigma)
        keep = p > 1e-9
        qs.append(qi[keep])
        ps.append(group[pj[keep]])
        probs.append(p[keep])
    if not qs:
        empty = np.zeros(0, dtype=np.intp)
        return empty, empty, np.zeros(0)
    return np.concatenate(qs), np.concatenate(ps), np.concatenate(probs)


def expected_counts(
    query_xy: FloatArray,
    points_xy: FloatArray,
    location_sigma: FloatArray,
    radius: float,
    values: FloatArray,
    intervals: Sequence[tuple[float, float]],
) -> list[FloatArray]:
    """For each interval [lo, hi): sum over points with lo <= value < hi of the probability
    that the point lies within ``radius`` (as :func:`expected_within`, pairs below 1e-9 left
    out), without holding the pairs. ``values`` are e.g. ages in days."""
    return expected_counts_multi(
        query_xy, points_xy, location_sigma, values, [(radius, intervals)]
    )[0]


def expected_counts_multi(
    query_xy: FloatArray,
    points_xy: FloatArray,
    location_sigma: FloatArray,
    values: FloatArray,
    requests: Sequence[tuple[float, Sequence[tuple[float, float]]]],
) -> list[list[FloatArray]]:
    """:func:`expected_counts` for several (radius, intervals) requests at once, each
    exactly as if computed alone.

    Exactly located points: per radius, one counting pass for all intervals (per query,
    the points of each age bin certainly within the radius are counted per run; only a ring
    of candidates is checked). Uncertain points: one pass over the pairs within the largest
    reach (R + 6 sigma) of the requests that use them, the Rice probability of every radius
    evaluated on the same pairs.
    """
    n = len(query_xy)
    plans: list[tuple[FloatArray, IntArray]] = []  # (bin edges, bin of each point or -1)
    for _, intervals in requests:
        edges = np.unique(np.array([b for iv in intervals for b in iv], dtype=float))
        n_bins = max(len(edges) - 1, 0)
        which = np.searchsorted(edges, values, side="right") - 1
        which[(which < 0) | (which >= n_bins)] = -1
        plans.append((edges, which.astype(np.intp)))
    bins = [np.zeros((n, max(len(edges) - 1, 0))) for edges, _ in plans]
    if n and len(points_xy):
        order = spatial_order(query_xy)  # one query order for every pass
        exact = location_sigma == 0
        for (radius, _), (edges, which), out in zip(requests, plans, bins, strict=True):
            members = np.flatnonzero(exact & (which >= 0))
            if len(members):
                index = _index_for(points_xy[members], query_xy, radius, inner=True)
                out += _bin_counts_in_index(
                    index, query_xy, radius, which[members][index.order], len(edges) - 1, order
                )
        # Uncertain points, grouped by error and by the requests that use them (e.g. old
        # incidents only for the longest window): one pass per group.
        uses = np.zeros(len(points_xy), dtype=np.int64)
        for k, (_, which) in enumerate(plans):
            uses |= (which >= 0).astype(np.int64) << k
        uncertain = ~exact & (uses > 0)
        keys = np.unique(np.column_stack([location_sigma[uncertain], uses[uncertain]]), axis=0)
        for sigma, mask in keys:
            group = np.flatnonzero(uncertain & (location_sigma == sigma) & (uses == mask))
            chosen = [k for k in range(len(requests)) if int(mask) >> k & 1]
            sums = _rice_sums(
                query_xy,
                points_xy[group],
                float(sigma),
                [(requests[k][0], plans[k][1][group], len(plans[k][0]) - 1) for k in chosen],
                order,
            )
            for k, total in zip(chosen, sums, strict=True):
                bins[k] += total
    result: list[list[FloatArray]] = []
    for (_, intervals), (edges, _), per_bin in zip(requests, plans, bins, strict=True):
        sums_per_interval = []
        for lo, hi in intervals:
            first, last = np.searchsorted(edges, lo), np.searchsorted(edges, hi)
            total = np.zeros(n)
            for b in range(first, last):
                total += per_bin[:, b]
            sums_per_interval.append(total)
        result.append(sums_per_interval)
    return result


def _rice_sums(
    query_xy: FloatArray,
    points_xy: FloatArray,
    sigma: float,
    specs: Sequence[tuple[float, IntArray, int]],
    order: IntArray | None = None,
) -> list[FloatArray]:
    """For each (radius, bin of each point (-1: not counted), number of bins): per query and
    bin, the sum of the probabilities (Rice CDF, below 1e-9 left out) that the points lie
    within the radius, from one pass over the pairs within the largest reach."""
    n = len(query_xy)
    reaches = [radius + KERNEL_CUTOFF * sigma for radius, _, _ in specs]
    reach = max(reaches)
    index = _index_for(points_xy, query_xy, reach)
    # Tables of one length (a step and position shared by all radii) when the pairs may be
    # many; the Rice CDF itself for a few pairs.
    nodes = max(_rice_nodes(radius / sigma) for radius, _, _ in specs)
    tables = len(query_xy) * len(points_xy) >= nodes
    # (a = radius / sigma, its table, squared reach, bin of each sorted point, slots per query)
    terms = []
    for (radius, which, n_bins), term_reach in zip(specs, reaches, strict=True):
        point_bin = np.where(which >= 0, which, n_bins)[index.order]  # n_bins: not counted
        a = radius / sigma
        table = _rice_table(a, nodes) if tables else None
        terms.append((a, table, term_reach**2, point_bin, n_bins + 1))

    def sums(nq: int, qi: IntArray, pos: IntArray, d2: FloatArray) -> list[FloatArray]:
        u = np.sqrt(d2)
        u *= 1.0 / sigma
        step, frac = _rice_locate(u, nodes) if tables else (qi, u)
        result = []
        for a, table, reach2, point_bin, slots in terms:
            if reach2 < reach * reach:
                keep = np.flatnonzero(d2 <= reach2)
                k_pos, slot = pos.take(keep), qi.take(keep)
                k_step, k_frac, k_u = step.take(keep), frac.take(keep), u.take(keep)
            else:
                k_pos, slot, k_step, k_frac, k_u = pos, qi.copy(), step, frac, u
            if table is not None:
                q = table.at(k_step, k_frac)
            else:
                q = np.asarray(rice.cdf(a, k_u), dtype=float)
            q *= q > 1e-9  # as expected_within: negligible pairs left out
            slot *= slots
            slot += point_bin.take(k_pos)
            per_slot = np.bincount(slot, weights=q, minlength=nq * slots)
            result.append(per_slot.astype(np.float64, copy=False).reshape(nq, slots)[:, :-1])
        return result

    outs = [np.zeros((n, slots - 1)) for _, _, _, _, slots in terms]
    for ids, block in _map_pairs(index, query_xy, reach, sums, order=order):
        for out, total in zip(outs, block, strict=True):
            out[ids] += total
    return outs


def likely_min(
    query_xy: FloatArray,
    points_xy: FloatArray,
    location_sigma: FloatArray,
    radius: float,
    values: FloatArray,
    *,
    probability: float = 0.5,
) -> FloatArray:
    """Minimum of ``values`` over points that lie within ``radius`` with at least the given
    probability (inf where none)."""
    out = np.full(len(query_xy), np.inf)
    if len(query_xy) == 0:
        return out
    order = spatial_order(query_xy)  # one query order for every pass
    for sigma in np.unique(location_sigma):
        group = np.flatnonzero(location_sigma == sigma)
        if sigma == 0:
            reach = radius
        else:
            u = _last_u_at_least(radius / float(sigma), probability)
            if u is None:
                continue
            reach = min(u * float(sigma) * (1 + 1e-6) + 1e-3, radius + KERNEL_CUTOFF * sigma)
        index = _index_for(points_xy[group], query_xy, reach)
        group_values = values[group][index.order]

        def least(
            n: int,
            qi: IntArray,
            pos: IntArray,
            d2: FloatArray,
            sigma: float = float(sigma),
            group_values: FloatArray = group_values,
        ) -> FloatArray:
            if sigma != 0:
                p = _within_probability(d2, sigma, radius)
                likely = np.flatnonzero((p > 1e-9) & (p >= probability))
                qi, pos = qi.take(likely), pos.take(likely)
            return _per_query(np.minimum, group_values.take(pos), qi, n, np.inf)

        for ids, block in _map_pairs(index, query_xy, reach, least, order=order):
            out[ids] = np.minimum(out[ids], block)
    return out


def group_min(index: IntArray, values: FloatArray, n: int) -> FloatArray:
    """Minimum of ``values`` per group ``index`` in 0..n-1 (inf for empty groups)."""
    out = np.full(n, np.inf)
    np.minimum.at(out, index, values)
    return out


# --- points in boxes ----------------------------------------------------------------------


MAX_BUCKET_ENTRIES = 4_000_000


def points_in_boxes(query_xy: FloatArray, bounds: FloatArray) -> tuple[IntArray, IntArray]:
    """All pairs (point, box) with the point inside the box, edges included (the candidates
    an STRtree query of the points would give for geometries with these bounds), sorted by
    point then box. Through a uniform grid of buckets: no geometry object per point."""
    empty = np.zeros(0, dtype=np.intp)
    bounds = np.asarray(bounds, dtype=float).reshape(-1, 4)
    box_ids = np.flatnonzero(np.isfinite(bounds).all(axis=1))
    if len(query_xy) == 0 or len(box_ids) == 0:
        return empty, empty
    b = bounds[box_ids]
    x, y = query_xy[:, 0], query_xy[:, 1]
    x0, y0 = min(float(x.min()), float(b[:, 0].min())), min(float(y.min()), float(b[:, 1].min()))
    x1, y1 = max(float(x.max()), float(b[:, 2].max())), max(float(y.max()), float(b[:, 3].max()))
    size = np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])
    cell = max(float(np.median(size)), max(x1 - x0, y1 - y0) / 4096, 1e-6)
    while True:  # buckets of about the typical box, coarser if the boxes would fill too many
        cx0, cx1 = np.floor((b[:, 0] - x0) / cell), np.floor((b[:, 2] - x0) / cell)
        cy0, cy1 = np.floor((b[:, 1] - y0) / cell), np.floor((b[:, 3] - y0) / cell)
        wide = (cx1 - cx0 + 1).astype(np.intp)
        counts = wide * (cy1 - cy0 + 1).astype(np.intp)
        if int(counts.sum()) <= MAX_BUCKET_ENTRIES + 4 * len(b):
            break
        cell *= 2
    n_x = int(np.floor((x1 - x0) / cell)) + 1
    owner = np.repeat(np.arange(len(b)), counts)
    k = np.arange(len(owner)) - np.repeat(np.cumsum(counts) - counts, counts)
    key = (cy0.astype(np.intp).take(owner) + k // wide.take(owner)) * n_x
    key += cx0.astype(np.intp).take(owner) + k % wide.take(owner)
    order = np.argsort(key, kind="stable")  # by bucket, then box
    key, owner = key.take(order), owner.take(order)
    query_key = np.floor((y - y0) / cell).astype(np.intp) * n_x
    query_key += np.floor((x - x0) / cell).astype(np.intp)
    lo = np.searchsorted(key, query_key, side="left")
    hi = np.searchsorted(key, query_key, side="right")
    pairs = _Pairs(lo, hi, np.arange(len(query_xy)))
    box = owner.take(pairs.pos)
    px, py = x.take(pairs.qi), y.take(pairs.qi)
    inside = (b[:, 0].take(box) <= px) & (px <= b[:, 2].take(box))
    inside &= (b[:, 1].take(box) <= py) & (py <= b[:, 3].take(box))
    keep = np.flatnonzero(inside)
    return pairs.qi.take(keep), box_ids.take(box.take(keep))


# --- distance to lines ---------------------------------------------------------------------


def _segments(lines: npt.NDArray[np.object_]) -> tuple[FloatArray, FloatArray] | None:
    """Start and end points of every segment of the (multi)line geometries; None if a
    geometry is not linear (the caller then falls back on GEOS)."""
    parts = shapely.get_parts(np.asarray(lines, dtype=object))
    parts = parts[~shapely.is_empty(parts)]
    kinds = shapely.get_type_id(parts)
    if not np.isin(kinds, (1, 2)).all():  # LineString, LinearRing
        return None
    coords, owner = shapely.get_coordinates(parts, return_index=True)
    same = owner[1:] == owner[:-1]
    return coords[:-1][same], coords[1:][same]


class _Segments:
    def __init__(self, a: FloatArray, b: FloatArray) -> None:
        self.ax, self.ay = np.ascontiguousarray(a[:, 0]), np.ascontiguousarray(a[:, 1])
        self.bx, self.by = np.ascontiguousarray(b[:, 0]), np.ascontiguousarray(b[:, 1])
        self.ex, self.ey = self.bx - self.ax, self.by - self.ay
        self.len2 = self.ex * self.ex + self.ey * self.ey

    def distance(self, px: FloatArray, py: FloatArray, seg: IntArray) -> FloatArray:
        """Distance from points to segments, as GEOS computes it (Distance::pointToSegment)."""
        ex, ey, len2 = self.ex.take(seg), self.ey.take(seg), self.len2.take(seg)
        dax, day = px - self.ax.take(seg), py - self.ay.take(seg)
        with np.errstate(invalid="ignore", divide="ignore"):
            r = (dax * ex + day * ey) / len2
            s = (-day * ex + dax * ey) / len2  # ((ay - py) ex - (ax - px) ey) / len2
        out = np.abs(s)
        out *= np.sqrt(len2)
        dbx, dby = px - self.bx.take(seg), py - self.by.take(seg)
        out = np.where(r >= 1, np.sqrt(dbx * dbx + dby * dby), out)
        return np.where((len2 == 0) | (r <= 0), np.sqrt(dax**2 + day**2), out)


def distance_to_lines(query_xy: FloatArray, lines: npt.NDArray[np.object_]) -> FloatArray:
    """Distance from each query point to the nearest of the line geometries.

    Exactly GEOS's distance (the same point-to-segment formula), found without a per-point
    tree search where possible: the distances to the segments whose midpoints are the k
    nearest are certain once every other segment is provably farther (its midpoint at least
    the k-th distance away, less half the longest segment); GEOS for the rest.
    """
    n = len(query_xy)
    found = _segments(lines) if n else None
    if found is None or len(found[0]) == 0:
        return _geos_distance(query_xy, lines)
    a, b = found
    segments = _Segments(a, b)
    # The search runs on pieces no longer than the median segment (long segments cut into
    # equal parts), each standing for its segment: a tighter bound than the longest segment.
    length = np.sqrt(segments.len2)
    parts = np.maximum(np.ceil(length / max(float(np.median(length)), 1e-9)), 1).astype(np.intp)
    owner = np.repeat(np.arange(len(a)), parts)
    step = np.arange(len(owner)) - np.repeat(np.cumsum(parts) - parts, parts)
    t = (step + 0.5) / parts[owner]
    piece_mid = a[owner] + (b - a)[owner] * t[:, None]
    half_max = float((length / parts).max()) / 2
    tree = _tree(piece_mid)
    best = np.full(n, np.inf)
    todo = spatial_order(query_xy)
    for k in BORDER_STAGES:
        k = min(k, len(owner))
        still = []
        for chunk in np.array_split(todo, max(1, len(todo) * k // 2_000_000)):
            dist, idx = tree.query(query_xy[chunk], k=k, workers=-1)
            dist, idx = dist.reshape(len(chunk), k), idx.reshape(len(chunk), k)
            px = np.repeat(query_xy[chunk, 0], k)
            py = np.repeat(query_xy[chunk, 1], k)
            d = segments.distance(px, py, owner[idx.ravel()]).reshape(len(chunk), k)
            best[chunk] = d.min(axis=1)
            if k < len(owner):
                still.append(chunk[best[chunk] > dist[:, -1] - half_max])
        todo = np.concatenate(still) if still else todo[:0]
        if not len(todo):
            return best
    best[todo] = _geos_distance(query_xy[todo], shapely.linestrings(np.stack([a, b], axis=1)))
    return best


def _geos_distance(query_xy: FloatArray, lines: npt.NDArray[np.object_]) -> FloatArray:
    tree = shapely.STRtree(lines)
    (_, _), dist = tree.query_nearest(
        shapely.points(query_xy), return_distance=True, all_matches=False
    )
    return np.asarray(dist, dtype=float)
