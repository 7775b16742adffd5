"""Vectorised spatial kernels on projected coordinates (metres). No Python loop over points.

Every function takes plain arrays so that it can be tested against a brute-force reference
and used at continental scale: pairs of points are generated in blocks of bounded size and
reduced block by block (never all held at once), in two threads, from a "row index" (points
sorted by horizontal band and x, so that the points of a band within an x-interval are one
contiguous run, found in a look-up table).
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
from scipy import ndimage, optimize, special
from scipy.spatial import cKDTree
from scipy.stats import rice

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]
_T = TypeVar("_T")
_R = TypeVar("_R")

KERNEL_CUTOFF = 6.0  # Gaussian kernels are evaluated to 6 bandwidths (exp(-18) ~ 1.5e-8)
MAX_PAIRS_PER_CHUNK = 20_000_000
MAX_CANDIDATES_PER_BLOCK = 2_000_000  # candidate pairs examined at once per thread
THREADS = min(2, os.cpu_count() or 1)  # numpy releases the GIL in the heavy steps
MAX_GRID_CELLS = 60_000_000
GRID_CELLS_PER_BANDWIDTH = 8
QUERY_BLOCK = 16_384
MAX_LOOKUP_CELLS = 8_000_000  # (row, x-cell) table of a row index (int32)
SMALL_BIN_SHARE = 0.05  # exact points in a smaller age bin are counted from their side
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
        budget = max(min(MAX_LOOKUP_CELLS, 8 * max(self.n, size_for)), 1) // self.n_rows
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

    def _col(self, rel: FloatArray) -> FloatArray:
        return np.clip(np.floor(rel / self.col_width), 0, self.n_cols - 1)

    def runs(
        self, qx: FloatArray, qy: FloatArray, radius: float, *, inner: bool
    ) -> tuple[IntArray, IntArray, IntArray, IntArray]:
        """For each row offset and query: the run of candidates [lo, hi) (a superset of the
        points within ``radius``) and, if ``inner``, a sub-run [lo_in, hi_in) of points
        certainly within ``radius`` (else empty). Arrays of shape (rows, queries)."""
        g = self.row_height
        reach = math.ceil(radius / g) + 1
        offsets = np.arange(-reach, reach + 1)[:, None]
        row = np.floor((qy - self.y0) / g)[None, :] + offsets
        band_lo = self.y0 + row * g
        band_hi = band_lo + g
        dy_min = np.maximum(np.maximum(band_lo - qy, qy - band_hi), 0.0)
        valid = (row >= 0) & (row < self.n_rows) & (dy_min <= radius + _SLACK_M)
        half = np.sqrt(np.maximum(radius**2 - np.maximum(dy_min - _SLACK_M, 0.0) ** 2, 0.0))
        half += _MARGIN_M
        base = np.where(valid, row, 0.0) * self.n_cols
        rel = qx[None, :] - self.x0
        lo = self.start[(base + self._col(rel - half)).astype(np.intp)].astype(np.intp)
        hi = self.start[(base + self._col(rel + half) + 1).astype(np.intp)].astype(np.intp)
        lo[~valid] = 0
        hi[~valid] = 0
        if not inner:
            return lo, hi, lo, lo
        dy_max = np.maximum(np.abs(band_lo - qy), np.abs(band_hi - qy)) + _SLACK_M
        half_in = np.sqrt(np.maximum(radius**2 - dy_max**2, 0.0)) - _MARGIN_M
        lo_in = self.start[(base + self._col(rel - half_in) + 1).astype(np.intp)].astype(np.intp)
        hi_in = self.start[(base + self._col(rel + half_in)).astype(np.intp)].astype(np.intp)
        has_in = valid & (dy_max < radius) & (half_in > 0) & (lo_in < hi_in)
        lo_in = np.where(has_in, lo_in, lo)
        hi_in = np.where(has_in, hi_in, lo)
        return lo, hi, lo_in, hi_in


def _expand(lo: IntArray, hi: IntArray, owner: IntArray) -> tuple[IntArray, IntArray]:
    """All (owner, position) for the runs [lo, hi)."""
    length = hi - lo
    nonzero = length > 0
    lo, length, owner = lo[nonzero], length[nonzero], owner[nonzero]
    total = int(length.sum())
    if total == 0:
        empty = np.zeros(0, dtype=np.intp)
        return empty, empty
    qi = np.repeat(owner, length)
    pos = np.arange(total, dtype=np.intp)
    pos += np.repeat(lo - (np.cumsum(length) - length), length)
    return qi, pos


def _candidates(
    index: _RowIndex, qx: FloatArray, qy: FloatArray, lo: IntArray, hi: IntArray
) -> tuple[IntArray, IntArray, FloatArray]:
    """(local query index, index position, squared distance) of every candidate in the runs
    [lo, hi) of shape (rows, queries); in place where possible (fewer large temporaries)."""
    length = (hi - lo).ravel()
    run = np.flatnonzero(length)
    length = length[run]
    owner = run % lo.shape[1]  # runs are (row offset, query) in row-major order
    total = int(length.sum())
    pos = np.arange(total, dtype=np.intp)
    pos += np.repeat(lo.ravel()[run] - (np.cumsum(length) - length), length)
    qi = np.repeat(owner, length)
    d2 = index.x[pos]
    d2 -= np.repeat(qx[owner], length)
    d2 *= d2
    dy = index.y[pos]
    dy -= np.repeat(qy[owner], length)
    dy *= dy
    d2 += dy
    return qi, pos, d2


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
    index: _RowIndex, query_xy: FloatArray
) -> Iterator[tuple[IntArray, FloatArray, FloatArray]]:
    """Blocks of queries in spatial order."""
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
) -> Iterator[tuple[IntArray, _R]]:
    """(query ids, fn(n ids, local query index, index position, squared distance)) for each
    block of pairs with distance <= radius (positions refer to the index's sorted points).
    With ``filtered=False`` fn gets every candidate and must ignore those beyond radius."""
    r2 = radius * radius

    def work(block: tuple[IntArray, FloatArray, FloatArray]) -> list[tuple[IntArray, _R]]:
        out = []
        for ids, qx, qy, (lo, hi, _, _) in _sub_blocks(index, block, radius):
            qi, pos, d2 = _candidates(index, qx, qy, lo, hi)
            if filtered:
                keep = d2 <= r2
                out.append((ids, fn(len(ids), qi[keep], pos[keep], d2[keep])))
            else:
                out.append((ids, fn(len(ids), qi, pos, d2)))
        return out

    for parts in _parallel(work, _query_blocks(index, query_xy)):
        yield from parts


def _count_in_index(index: _RowIndex, query_xy: FloatArray, radius: float) -> npt.NDArray[np.int64]:
    counts = np.zeros(len(query_xy), dtype=np.int64)
    r2 = radius * radius

    def work(block: tuple[IntArray, FloatArray, FloatArray]) -> list[tuple[IntArray, IntArray]]:
        out = []
        for ids, qx, qy, (lo, hi, lo_in, hi_in) in _sub_blocks(index, block, radius, inner=True):
            sure = (hi_in - lo_in).sum(axis=0)
            owner = np.broadcast_to(np.arange(len(ids)), lo.shape).ravel()
            qi, pos = _expand(
                np.concatenate([lo.ravel(), hi_in.ravel()]),
                np.concatenate([lo_in.ravel(), hi.ravel()]),
                np.concatenate([owner, owner]),
            )
            dx = index.x[pos] - qx[qi]
            dy = index.y[pos] - qy[qi]
            ring = np.bincount(qi[dx * dx + dy * dy <= r2], minlength=len(ids))
            out.append((ids, sure + ring))
        return out

    for parts in _parallel(work, _query_blocks(index, query_xy)):
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
    6 h_j; ``grid`` bins the points linearly onto a grid of h/8 cells, smooths with
    a Gaussian filter and interpolates bilinearly (differences up to about 1 % of the value,
    measured by benchmarks/features.py);
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
                    outs[i] += norm * _grid_exposure(
                        query_xy, points[group], kept[i][group], h_eff, query_bounds
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
                    query_xy, points[group], [(h, kept[i][group]) for i, h, _ in batch]
                )
                for (i, _, norm), total in zip(batch, sums, strict=True):
                    outs[i] += norm * total
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
    query_xy: FloatArray, points_xy: FloatArray, terms: Sequence[tuple[float, FloatArray]]
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
            kernel[d2 > (KERNEL_CUTOFF * h) ** 2] = 0.0  # beyond this term's cutoff
            for i, weights in members:
                total = np.bincount(qi, weights=weights[pos] * kernel, minlength=n)
                result[i] = total.astype(np.float64, copy=False)
        return result

    for ids, block in _map_pairs(index, query_xy, radius, sums, filtered=False):
        for out, total in zip(outs, block, strict=True):
            out[ids] += total
    return outs


def _grid_geometry(
    query_xy: FloatArray, points_xy: FloatArray, h: float, query_bounds: Bounds | None = None
) -> tuple[FloatArray, float, tuple[int, int]]:
    cell = h / GRID_CELLS_PER_BANDWIDTH
    pad = (KERNEL_CUTOFF + 1) * h
    if query_bounds is not None:
        low, high = _bounds(points_xy, known=query_bounds)
    else:
        low, high = _bounds(query_xy, points_xy)
    origin = low - pad
    extent = high + pad - origin
    shape = (math.ceil(extent[1] / cell) + 2, math.ceil(extent[0] / cell) + 2)
    return origin, cell, shape


def _grid_cells(
    query_xy: FloatArray, points_xy: FloatArray, h: float, query_bounds: Bounds | None = None
) -> int:
    _, _, shape = _grid_geometry(query_xy, points_xy, h, query_bounds)
    return shape[0] * shape[1]


def _grid_exposure(
    query_xy: FloatArray,
    points_xy: FloatArray,
    weights: FloatArray,
    h: float,
    query_bounds: Bounds | None = None,
) -> FloatArray:
    origin, cell, shape = _grid_geometry(query_xy, points_xy, h, query_bounds)
    grid = np.zeros(shape)
    # Linear ("cloud in cell") binning: each point's weight goes to its 4 surrounding nodes.
    gx = (points_xy[:, 0] - origin[0]) / cell
    gy = (points_xy[:, 1] - origin[1]) / cell
    x0, y0 = np.floor(gx).astype(np.intp), np.floor(gy).astype(np.intp)
    fx, fy = gx - x0, gy - y0
    for dy, dx, share in (
        (0, 0, (1 - fx) * (1 - fy)),
        (0, 1, fx * (1 - fy)),
        (1, 0, (1 - fx) * fy),
        (1, 1, fx * fy),
    ):
        np.add.at(grid, (y0 + dy, x0 + dx), weights * share)
    sigma_cells = h / cell
    smoothed = ndimage.gaussian_filter(
        grid, sigma=sigma_cells, mode="constant", truncate=KERNEL_CUTOFF
    )
    smoothed *= 2 * math.pi * sigma_cells**2  # filter sums to 1; the kernel peaks at 1
    qx = (query_xy[:, 0] - origin[0]) / cell
    qy = (query_xy[:, 1] - origin[1]) / cell
    return np.asarray(
        ndimage.map_coordinates(smoothed, [qy, qx], order=1, mode="constant"), dtype=float
    )


# --- probability of lying within a radius ---------------------------------------------------


class _RiceTable:
    """P(|X| <= a), X ~ N((u, 0), I), as a function of u in [0, a + 6], tabulated with its
    derivative (cubic Hermite interpolation, error ~1e-13)."""

    def __init__(self, a: float) -> None:
        self.a = a
        self.step = RICE_TABLE_STEP
        n = math.ceil((a + KERNEL_CUTOFF + 1.0) / self.step) + 2
        u = np.arange(n) * self.step
        self.value = np.asarray(rice.cdf(a, u), dtype=float)
        # d/du P = -a exp(-(a^2 + u^2) / 2) I1(a u), with I1 scaled for range.
        self.slope = -a * special.ive(1, a * u) * np.exp(-((a - u) ** 2) / 2) * self.step
        self.last = n - 2
        f0, f1 = self.value[:-1], self.value[1:]
        m0, m1 = self.slope[:-1], self.slope[1:]
        # p(t) = f0 + t (m0 + t (c2 + t c3)) on each step, t in [0, 1].
        self.c0, self.c1 = f0.copy(), m0.copy()
        self.c2 = 3.0 * (f1 - f0) - 2.0 * m0 - m1
        self.c3 = 2.0 * (f0 - f1) + m0 + m1

    def __call__(self, u: FloatArray) -> FloatArray:
        s = u * (1.0 / self.step)
        i = s.astype(np.intp)
        np.minimum(i, self.last, out=i)
        t = s - i
        p: FloatArray = self.c3[i] * t
        p += self.c2[i]
        p *= t
        p += self.c1[i]
        p *= t
        p += self.c0[i]
        return p


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
    """P(within radius) for pairs at squared distances d2 from a point with error sigma:
    from a table of the Rice CDF when there are enough pairs to pay for it, else directly."""
    a = radius / sigma
    u = np.sqrt(d2) / sigma
    table = _RICE_TABLES.get(a)
    if table is None:
        if len(u) < (a + KERNEL_CUTOFF + 1.0) / RICE_TABLE_STEP:
            return np.asarray(rice.cdf(a, u), dtype=float)
        if len(_RICE_TABLES) > 64:
            _RICE_TABLES.clear()
        table = _RICE_TABLES.setdefault(a, _RiceTable(a))
    return table(u)


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
    n = len(query_xy)
    edges = np.unique(np.array([b for iv in intervals for b in iv], dtype=float))
    n_bins = max(len(edges) - 1, 0)
    bins = np.zeros((n, n_bins))
    if n_bins and len(points_xy) and n:
        which = np.searchsorted(edges, values, side="right") - 1  # bin of each point
        useful = (which >= 0) & (which < n_bins)
        for sigma in np.unique(location_sigma[useful]):
            group = np.flatnonzero(useful & (location_sigma == sigma))
            if sigma == 0:
                # Large bins: counted per query (only a ring of candidates checked); small
                # bins together from the points' side (little work for few points).
                small = []
                for b in range(n_bins):
                    members = group[which[group] == b]
                    if len(members) > SMALL_BIN_SHARE * len(points_xy):
                        bins[:, b] = count_within(query_xy, points_xy[members], radius)
                    elif len(members):
                        small.append(members)
                if small:
                    members = np.concatenate(small)
                    bins += _counts_from_points(
                        query_xy, points_xy[members], which[members], n_bins, radius
                    )
                continue
            reach = radius + KERNEL_CUTOFF * float(sigma)
            index = _index_for(points_xy[group], query_xy, reach)
            point_bin = which[group][index.order]

            def sums(
                n: int,
                qi: IntArray,
                pos: IntArray,
                d2: FloatArray,
                sigma: float = float(sigma),
                point_bin: IntArray = point_bin,
            ) -> FloatArray:
                p = _within_probability(d2, sigma, radius)
                p[p <= 1e-9] = 0.0  # as expected_within: negligible pairs left out
                slot = qi * n_bins + point_bin[pos]
                per_slot = np.bincount(slot, weights=p, minlength=n * n_bins)
                return per_slot.astype(np.float64, copy=False).reshape(n, n_bins)

            for ids, block in _map_pairs(index, query_xy, reach, sums):
                bins[ids] += block
    out = []
    for lo, hi in intervals:
        first, last = np.searchsorted(edges, lo), np.searchsorted(edges, hi)
        total = np.zeros(n)
        for b in range(first, last):
            total += bins[:, b]
        out.append(total)
    return out


def _counts_from_points(
    query_xy: FloatArray, points_xy: FloatArray, point_bin: IntArray, n_bins: int, radius: float
) -> FloatArray:
    """Per query and bin: the points of that bin within ``radius``, found from the points'
    side (an index over the queries), for few points and many queries."""
    n = len(query_xy)
    index = _index_for(query_xy, points_xy, radius)
    flat = np.zeros(n * n_bins)
    for ids, (local, pos) in _map_pairs(index, points_xy, radius, lambda _, qi, p, d2: (qi, p)):
        flat += np.bincount(pos * n_bins + point_bin[ids[local]], minlength=n * n_bins)
    out = np.empty((n, n_bins))
    out[index.order] = flat.reshape(n, n_bins)
    return out


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
                likely = (p > 1e-9) & (p >= probability)
                qi, pos = qi[likely], pos[likely]
            block = np.full(n, np.inf)
            np.minimum.at(block, qi, group_values[pos])
            return block

        for ids, block in _map_pairs(index, query_xy, reach, least):
            out[ids] = np.minimum(out[ids], block)
    return out


def group_min(index: IntArray, values: FloatArray, n: int) -> FloatArray:
    """Minimum of ``values`` per group ``index`` in 0..n-1 (inf for empty groups)."""
    out = np.full(n, np.inf)
    np.minimum.at(out, index, values)
    return out


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
        ax, ay, bx, by = self.ax[seg], self.ay[seg], self.bx[seg], self.by[seg]
        ex, ey, len2 = self.ex[seg], self.ey[seg], self.len2[seg]
        dax, day = px - ax, py - ay
        with np.errstate(invalid="ignore", divide="ignore"):
            r = (dax * ex + day * ey) / len2
            s = (-day * ex + dax * ey) / len2  # ((ay - py) ex - (ax - px) ey) / len2
        out = np.abs(s)
        out *= np.sqrt(len2)
        before = (len2 == 0) | (r <= 0)
        after = ~before & (r >= 1)
        out[before] = np.sqrt(dax[before] ** 2 + day[before] ** 2)
        dbx, dby = px[after] - bx[after], py[after] - by[after]
        out[after] = np.sqrt(dbx * dbx + dby * dby)
        return out


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
