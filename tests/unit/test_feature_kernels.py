"""The spatial kernels against brute-force references (full distance matrices, double loops)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.stats import rice

from atm_risk.features import kernels
from tests.unit import feature_reference as ref

FAST = settings(max_examples=50, deadline=None, database=None)
BOX_M = 50_000.0
# Pairs this close to the radius may fall either way in floating point.
BOUNDARY_M = 1e-6


def xy_arrays(min_n: int = 0, max_n: int = 40) -> st.SearchStrategy[np.ndarray]:
    return hnp.arrays(
        np.float64,
        st.tuples(st.integers(min_n, max_n), st.just(2)),
        elements=st.floats(0.0, BOX_M, allow_nan=False, allow_infinity=False),
    )


radii = st.floats(50.0, 30_000.0, allow_nan=False)


# --- nearest -------------------------------------------------------------------------------


@FAST
@given(query=xy_arrays(), points=xy_arrays(min_n=1))
def test_nearest_matches_full_distance_matrix(query: np.ndarray, points: np.ndarray) -> None:
    dist, idx = kernels.nearest(query, points)
    expected = ref.nearest_distance(query, points)
    assert dist.shape == idx.shape == (len(query),)
    np.testing.assert_allclose(dist, expected, rtol=1e-12, atol=1e-9)
    # The index points at a point at that distance (any of several equally near ones).
    assert ((idx >= 0) & (idx < len(points))).all()
    at_index = np.hypot(*(query - points[idx]).T) if len(query) else np.zeros(0)
    np.testing.assert_allclose(at_index, expected, rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("n_query", [0, 3])
def test_nearest_of_no_points_is_infinitely_far(n_query: int) -> None:
    query = np.arange(2 * n_query, dtype=float).reshape(-1, 2)
    dist, idx = kernels.nearest(query, np.zeros((0, 2)))
    assert np.isinf(dist).all()
    assert dist.shape == (n_query,)
    assert (idx == -1).all()
    assert idx.shape == (n_query,)


def test_nearest_small_hand_example() -> None:
    points = np.array([[0.0, 0.0], [3.0, 4.0], [10.0, 0.0]])
    dist, idx = kernels.nearest(np.array([[3.0, 5.0], [9.0, 0.0]]), points)
    np.testing.assert_allclose(dist, [1.0, 1.0])
    assert idx.tolist() == [1, 2]


# --- count_within --------------------------------------------------------------------------


def _bracket(matrix: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Counts certainly within (d <= r - eps) and possibly within (d <= r + eps)."""
    return (
        (matrix <= radius - BOUNDARY_M).sum(axis=1),
        (matrix <= radius + BOUNDARY_M).sum(axis=1),
    )


@FAST
@given(query=xy_arrays(), points=xy_arrays(), radius=radii)
def test_count_within_matches_reference(
    query: np.ndarray, points: np.ndarray, radius: float
) -> None:
    got = kernels.count_within(query, points, radius)
    assert got.shape == (len(query),)
    low, high = _bracket(ref.distance_matrix(query, points), radius)
    assert ((low <= got) & (got <= high)).all()
    unambiguous = low == high
    np.testing.assert_array_equal(
        got[unambiguous], ref.count_within(query, points, radius)[unambiguous]
    )


@FAST
@given(xy=xy_arrays(min_n=1), radius=radii)
def test_count_within_exclude_self_counts_only_the_others(xy: np.ndarray, radius: float) -> None:
    got = kernels.count_within(xy, xy, radius, exclude_self=True)
    matrix = ref.distance_matrix(xy, xy)
    np.fill_diagonal(matrix, np.inf)  # a point is not its own neighbour
    low, high = _bracket(matrix, radius)
    assert ((low <= got) & (got <= high)).all()
    unambiguous = low == high
    expected = ref.count_others_within(xy, radius)
    np.testing.assert_array_equal(got[unambiguous], expected[unambiguous])


def test_count_within_radius_is_inclusive() -> None:
    points = np.array([[0.0, 0.0], [1000.0, 0.0], [0.0, 1000.0], [1000.0, 1000.0]])
    assert kernels.count_within(points[:1], points, 1000.0).tolist() == [3]
    assert kernels.count_within(points, points, 1000.0, exclude_self=True).tolist() == [2] * 4


def test_count_within_empty_inputs() -> None:
    assert kernels.count_within(np.zeros((2, 2)), np.zeros((0, 2)), 10.0).tolist() == [0, 0]
    assert kernels.count_within(np.zeros((0, 2)), np.zeros((2, 2)), 10.0).shape == (0,)


# --- pairs_within --------------------------------------------------------------------------


@FAST
@given(query=xy_arrays(), points=xy_arrays(), radius=radii)
def test_pairs_within_is_exactly_the_pairs_within_radius(
    query: np.ndarray, points: np.ndarray, radius: float
) -> None:
    qi, pj, d = kernels.pairs_within(query, points, radius)
    assert len(qi) == len(pj) == len(d)
    got = list(zip(qi.tolist(), pj.tolist(), strict=True))
    assert len(set(got)) == len(got), "a pair is reported twice"
    matrix = ref.distance_matrix(query, points)
    certain = {tuple(p) for p in np.argwhere(matrix <= radius - BOUNDARY_M).tolist()}
    possible = {tuple(p) for p in np.argwhere(matrix <= radius + BOUNDARY_M).tolist()}
    assert certain <= set(got) <= possible
    np.testing.assert_allclose(d, matrix[qi, pj], rtol=1e-12, atol=1e-9)


def test_pairs_within_includes_coincident_points_and_boundary() -> None:
    query = np.array([[0.0, 0.0]])
    points = np.array([[0.0, 0.0], [30.0, 40.0], [30.0, 40.1]])
    qi, pj, d = kernels.pairs_within(query, points, 50.0)
    assert sorted(zip(qi.tolist(), pj.tolist(), d.tolist(), strict=True)) == [
        (0, 0, 0.0),
        (0, 1, 50.0),
    ]


def test_pairs_within_spanning_several_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    # Force tiny chunks so that the query offsets of later chunks are exercised.
    monkeypatch.setattr(kernels, "MAX_PAIRS_PER_CHUNK", 1)
    rng = np.random.default_rng(7)
    query = rng.uniform(0, 20_000, size=(2_500, 2))
    points = rng.uniform(0, 20_000, size=(60, 2))
    qi, pj, d = kernels.pairs_within(query, points, 1_500.0)
    matrix = ref.distance_matrix(query, points)
    assert set(zip(qi.tolist(), pj.tolist(), strict=True)) == {
        tuple(p) for p in np.argwhere(matrix <= 1_500.0).tolist()
    }
    np.testing.assert_allclose(d, matrix[qi, pj], rtol=1e-12)


# --- gaussian_exposure ---------------------------------------------------------------------


@st.composite
def weighted_points(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    points = draw(xy_arrays())
    n = len(points)
    weights = draw(hnp.arrays(np.float64, n, elements=st.floats(0.0, 10.0, allow_nan=False)))
    sigma = draw(hnp.arrays(np.float64, n, elements=st.sampled_from([0.0, 5_000.0])))
    return points, weights, sigma


@FAST
@given(query=xy_arrays(), data=weighted_points(), h=st.floats(100.0, 30_000.0))
def test_exact_gaussian_exposure_matches_double_loop(
    query: np.ndarray, data: tuple[np.ndarray, np.ndarray, np.ndarray], h: float
) -> None:
    points, weights, sigma = data
    got = kernels.gaussian_exposure(query, points, weights, sigma, h, method="exact")
    expected = ref.gaussian_exposure(query, points, weights, sigma, h)
    assert got.shape == (len(query),)
    # Pairs beyond 6 h_j are left out: each such term is below exp(-18) * w_j.
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-7 * weights.sum() + 1e-300)


def test_exact_gaussian_exposure_hand_values() -> None:
    query = np.array([[0.0, 0.0]])
    h = 1_000.0
    # An exact point 1 km away, and an uncertain (5 km) one at the query point.
    points = np.array([[1_000.0, 0.0], [0.0, 0.0]])
    got = kernels.gaussian_exposure(
        query, points, np.array([2.0, 3.0]), np.array([0.0, 5_000.0]), h, method="exact"
    )
    expected = 2.0 * math.exp(-0.5) + 3.0 * (1.0 / 26.0)  # h^2/(h^2+sigma^2) = 1/26
    assert got[0] == pytest.approx(expected, rel=1e-12)


def test_gaussian_exposure_without_weight_or_query() -> None:
    pts = np.array([[0.0, 0.0]])
    assert kernels.gaussian_exposure(pts, pts, np.zeros(1), np.zeros(1), 100.0).tolist() == [0.0]
    empty = kernels.gaussian_exposure(np.zeros((0, 2)), pts, np.ones(1), np.zeros(1), 100.0)
    assert empty.shape == (0,)


def _peak_weight(weights: np.ndarray, sigma: np.ndarray, h: float) -> float:
    """sum_j w_j h^2 / h_j^2: the summed peaks of the kernels (the grid's error scale)."""
    return float(np.sum(weights * h * h / (h * h + sigma * sigma)))


def test_grid_gaussian_exposure_approximates_reference() -> None:
    rng = np.random.default_rng(11)
    points = rng.uniform(0, BOX_M, size=(300, 2))
    query = rng.uniform(-5_000, BOX_M + 5_000, size=(150, 2))
    weights = rng.uniform(0, 2, size=300)
    sigma = rng.choice([0.0, 5_000.0], size=300)
    h = 10_000.0
    expected = ref.gaussian_exposure(query, points, weights, sigma, h)
    got = kernels.gaussian_exposure(query, points, weights, sigma, h, method="grid")
    bound = kernels.GRID_KERNEL_ERROR * _peak_weight(weights, sigma, h)
    np.testing.assert_allclose(got, expected, rtol=0, atol=bound)
    # In practice far better than the bound: within 0.05 % of the largest value here.
    np.testing.assert_allclose(got, expected, rtol=0, atol=5e-4 * expected.max())
    # "auto" on this small input is the exact method.
    auto = kernels.gaussian_exposure(query, points, weights, sigma, h, method="auto")
    np.testing.assert_allclose(auto, expected, rtol=1e-9, atol=1e-7 * weights.sum())


@pytest.mark.parametrize("sigma_over_h", [0.0, 0.1, 1.0, 3.0])
def test_grid_reproduces_every_kernel_to_the_documented_error(sigma_over_h: float) -> None:
    """One point (weight 1, so peak h^2 / h_j^2 <= 1) at each of 9 x 9 places within a grid
    cell (grid nodes, cell edges and centres included), the kernel checked all around it."""
    h = 1_000.0
    cell = h / kernels.GRID_CELLS_PER_BANDWIDTH
    offsets = np.linspace(0.0, 1.0, 9) * cell
    # Far apart (60 h), so that the kernels do not overlap; the grid origin is the first one.
    centres = np.array(
        [
            (k * 60 * h + ox, oy)
            for k, (ox, oy) in enumerate(np.array(np.meshgrid(offsets, offsets)).reshape(2, -1).T)
        ]
    )
    ring = np.linspace(-3 * h, 3 * h, 25)
    around = np.array(np.meshgrid(ring, ring)).reshape(2, -1).T
    query = (centres[:, None, :] + around[None, :, :]).reshape(-1, 2)
    sigma = np.full(len(centres), sigma_over_h * h)
    weights = np.ones(len(centres))
    got = kernels.gaussian_exposure(query, centres, weights, sigma, h, method="grid")
    exact = kernels.gaussian_exposure(query, centres, weights, sigma, h, method="exact")
    assert np.abs(got - exact).max() <= kernels.GRID_KERNEL_ERROR


@FAST
@given(
    query=xy_arrays(min_n=1, max_n=30),
    data=weighted_points(),
    h=st.sampled_from([400.0, 2_000.0, 10_000.0, 30_000.0]),
    scale=st.sampled_from([0.1, 1.0, 10.0]),
)
def test_grid_gaussian_exposure_within_the_documented_bound(
    query: np.ndarray,
    data: tuple[np.ndarray, np.ndarray, np.ndarray],
    h: float,
    scale: float,
) -> None:
    points, weights, sigma = data
    query, points = query * scale, points * scale  # clustered to spread out
    got = kernels.gaussian_exposure(query, points, weights, sigma, h, method="grid")
    expected = ref.gaussian_exposure(query, points, weights, sigma, h)
    bound = kernels.GRID_KERNEL_ERROR * _peak_weight(weights, sigma, h) + 1e-12
    assert (np.abs(got - expected) <= bound).all()
    assert (got >= 0).all()


def test_grid_exposures_of_several_terms_equal_each_term_alone() -> None:
    rng = np.random.default_rng(5)
    points = rng.uniform(0, 200_000, size=(400, 2))
    query = rng.uniform(0, 200_000, size=(300, 2))
    sigma = rng.choice([0.0, 3_000.0], size=400)
    ages = rng.uniform(0, 400, size=400)
    weights = [np.exp(-ages / d) for d in (7.0, 30.0, 365.0)]
    bandwidths = [10_000.0, 10_000.0, 30_000.0]
    together = kernels.gaussian_exposures(query, points, weights, sigma, bandwidths, method="grid")
    for w, h, got in zip(weights, bandwidths, together, strict=True):
        alone = kernels.gaussian_exposure(query, points, w, sigma, h, method="grid")
        np.testing.assert_allclose(got, alone, rtol=1e-12, atol=1e-12)
        exact = ref.gaussian_exposure(query, points, w, sigma, h)
        assert np.abs(got - exact).max() <= kernels.GRID_KERNEL_ERROR * _peak_weight(w, sigma, h)


# --- expected_within -----------------------------------------------------------------------


@st.composite
def uncertain_points(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    points = draw(xy_arrays())
    sigma = draw(
        hnp.arrays(np.float64, len(points), elements=st.sampled_from([0.0, 50.0, 5_000.0]))
    )
    return points, sigma


@FAST
@given(query=xy_arrays(), data=uncertain_points(), radius=st.floats(1_000.0, 50_000.0))
def test_expected_within_matches_numerical_integral(
    query: np.ndarray, data: tuple[np.ndarray, np.ndarray], radius: float
) -> None:
    points, sigma = data
    qi, pj, prob = kernels.expected_within(query, points, sigma, radius)
    pairs = list(zip(qi.tolist(), pj.tolist(), strict=True))
    assert len(set(pairs)) == len(pairs), "a pair is reported twice"
    assert ((prob > 0) & (prob <= 1 + 1e-12)).all()
    got = np.zeros((len(query), len(points)))
    got[qi, pj] = prob
    matrix = ref.distance_matrix(query, points)
    expected = np.zeros_like(got)
    for j in range(len(points)):
        expected[:, j] = ref.within_probability(matrix[:, j], float(sigma[j]), radius)
    # Exact points: 1 exactly within the radius (ambiguous only right at the boundary).
    exact = sigma == 0
    clear = np.abs(matrix - radius) > BOUNDARY_M
    np.testing.assert_array_equal(
        got[:, exact][clear[:, exact]], expected[:, exact][clear[:, exact]]
    )
    # Uncertain points: the Rice probability; pairs below ~1e-8 may be left out.
    np.testing.assert_allclose(got[:, ~exact], expected[:, ~exact], rtol=1e-7, atol=1e-7)


def test_expected_within_exact_point_is_certain_inside_and_absent_outside() -> None:
    query = np.array([[0.0, 0.0]])
    points = np.array([[0.0, 0.0], [4_999.0, 0.0], [5_000.0, 0.0], [5_001.0, 0.0]])
    qi, pj, prob = kernels.expected_within(query, points, np.zeros(4), 5_000.0)
    assert sorted(zip(pj.tolist(), prob.tolist(), strict=True)) == [(0, 1.0), (1, 1.0), (2, 1.0)]
    assert qi.tolist() == [0, 0, 0]


def test_expected_within_at_the_centre_is_the_rayleigh_cdf() -> None:
    sigma, radius = 5_000.0, 5_000.0
    _, _, prob = kernels.expected_within(
        np.zeros((1, 2)), np.zeros((1, 2)), np.array([sigma]), radius
    )
    assert prob[0] == pytest.approx(1 - math.exp(-(radius**2) / (2 * sigma**2)), rel=1e-12)


@pytest.mark.parametrize("distance", [0.0, 3_000.0, 7_500.0, 15_000.0])
def test_numerical_reference_agrees_with_monte_carlo(distance: float) -> None:
    """The reference itself: the integral agrees with sampling the 2-D Gaussian."""
    sigma, radius = 5_000.0, 5_000.0
    rng = np.random.default_rng(3)
    samples = rng.normal(0.0, sigma, size=(400_000, 2)) + np.array([distance, 0.0])
    monte_carlo = float((np.hypot(samples[:, 0], samples[:, 1]) <= radius).mean())
    integral = float(ref.within_probability([distance], sigma, radius)[0])
    assert integral == pytest.approx(monte_carlo, abs=4e-3)
    _, _, prob = kernels.expected_within(
        np.zeros((1, 2)), np.array([[distance, 0.0]]), np.array([sigma]), radius
    )
    assert prob[0] == pytest.approx(integral, abs=1e-9)


def test_expected_within_decreases_with_distance() -> None:
    distances = np.linspace(0.0, 40_000.0, 4_001)
    points = np.column_stack([distances, np.zeros_like(distances)])
    for sigma, radius in ((5_000.0, 5_000.0), (5_000.0, 25_000.0), (50.0, 5_000.0)):
        _qi, pj, prob = kernels.expected_within(
            np.zeros((1, 2)), points, np.full(len(points), sigma), radius
        )
        by_distance = np.zeros(len(points))
        by_distance[pj] = prob
        assert (np.diff(by_distance) <= 1e-15).all()
        assert by_distance[0] > by_distance[-1]
        # Strictly decreasing where it is neither saturated at 1 nor negligible.
        middle = by_distance[(by_distance > 1e-6) & (by_distance < 1 - 1e-12)]
        assert len(middle) >= 2
        assert (np.diff(middle) < 0).all()


def test_expected_within_keeps_point_indices_across_sigma_groups() -> None:
    points = np.array([[100.0, 0.0], [200.0, 0.0], [300.0, 0.0], [400.0, 0.0]])
    sigma = np.array([5_000.0, 0.0, 5_000.0, 0.0])
    _, pj, prob = kernels.expected_within(np.zeros((1, 2)), points, sigma, 1_000.0)
    got = dict(zip(pj.tolist(), prob.tolist(), strict=True))
    assert got[1] == got[3] == 1.0
    assert got[0] == pytest.approx(ref.within_probability([100.0], 5_000.0, 1_000.0)[0])
    assert got[2] == pytest.approx(ref.within_probability([300.0], 5_000.0, 1_000.0)[0])


# --- expected_counts ----------------------------------------------------------------------


def _reference_counts(
    query: np.ndarray,
    points: np.ndarray,
    sigma: np.ndarray,
    ages: np.ndarray,
    radius: float,
    intervals: list[tuple[float, float]],
) -> list[np.ndarray]:
    matrix = ref.distance_matrix(query, points)
    prob = np.zeros_like(matrix)
    for j in range(len(points)):
        prob[:, j] = ref.within_probability(matrix[:, j], float(sigma[j]), radius)
    return [prob[:, (ages >= lo) & (ages < hi)].sum(axis=1) for lo, hi in intervals]


intervals_st = st.lists(
    st.tuples(st.sampled_from([0.0, 7.0, 30.0]), st.sampled_from([7.0, 30.0, 90.0, 400.0])).filter(
        lambda iv: iv[0] < iv[1]
    ),
    min_size=1,
    max_size=3,
)


@FAST
@given(
    query=xy_arrays(max_n=15),
    data=uncertain_points(),
    ages=st.lists(st.floats(0.0, 500.0), min_size=40, max_size=40),
    requests=st.lists(
        st.tuples(st.sampled_from([1_000.0, 5_000.0, 25_000.0, 50_000.0]), intervals_st),
        min_size=1,
        max_size=3,
        unique_by=lambda r: r[0],
    ),
)
def test_expected_counts_multi_matches_numerical_integral(
    query: np.ndarray,
    data: tuple[np.ndarray, np.ndarray],
    ages: list[float],
    requests: list[tuple[float, list[tuple[float, float]]]],
) -> None:
    points, sigma = data
    age = np.array(ages[: len(points)])
    matrix = ref.distance_matrix(query, points)
    for radius, _ in requests:  # exact points right at a radius may fall either way
        assume(bool((np.abs(matrix[:, sigma == 0] - radius) > BOUNDARY_M).all()))
    got = kernels.expected_counts_multi(query, points, sigma, age, requests)
    assert len(got) == len(requests)
    for (radius, intervals), sums in zip(requests, got, strict=True):
        expected = _reference_counts(query, points, sigma, age, radius, intervals)
        alone = kernels.expected_counts(query, points, sigma, radius, age, intervals)
        assert len(sums) == len(intervals)
        for total, exp, single in zip(sums, expected, alone, strict=True):
            assert total.shape == (len(query),)
            # Pairs with p <= 1e-9 are left out; the reference integral is good to ~1e-9.
            np.testing.assert_allclose(total, exp, rtol=1e-7, atol=1e-7 * max(len(points), 1))
            np.testing.assert_allclose(total, single, rtol=1e-12, atol=1e-12)


def test_expected_counts_multi_at_scale_matches_brute_force() -> None:
    """Enough pairs for the tabulated Rice CDF, several blocks of queries, radii with
    different reaches in one pass, and age bins counted from cumulative sums and rings."""
    rng = np.random.default_rng(3)
    query = rng.normal(0, 20_000, size=(3_000, 2))
    points = rng.normal(0, 30_000, size=(500, 2))
    sigma = rng.choice([0.0, 3_000.0, 500.0], size=500, p=[0.6, 0.3, 0.1])
    ages = rng.uniform(0, 800, size=500)
    requests = [
        (5_000.0, [(0.0, 7.0), (0.0, 365.0), (0.0, 3650.0)]),
        (25_000.0, [(0.0, 30.0), (0.0, 365.0)]),
        (50_000.0, [(0.0, 90.0), (90.0, 365.0)]),
    ]
    got = kernels.expected_counts_multi(query, points, sigma, ages, requests)
    d = ref.distance_matrix(query, points)
    for (radius, intervals), sums in zip(requests, got, strict=True):
        prob = np.where(d <= radius, 1.0, 0.0)
        for s in (3_000.0, 500.0):
            cols = sigma == s
            prob[:, cols] = rice.cdf(radius / s, d[:, cols] / s)
        prob[prob <= 1e-9] = 0.0
        for (lo, hi), total in zip(intervals, sums, strict=True):
            expected = prob[:, (ages >= lo) & (ages < hi)].sum(axis=1)
            np.testing.assert_allclose(total, expected, rtol=1e-10, atol=1e-9)


def test_expected_counts_without_points_queries_or_intervals() -> None:
    q = np.zeros((2, 2))
    none = np.zeros((0, 2))
    got = kernels.expected_counts_multi(q, none, np.zeros(0), np.zeros(0), [(1_000.0, [(0, 7)])])
    assert [t.tolist() for t in got[0]] == [[0.0, 0.0]]
    got = kernels.expected_counts_multi(none, q, np.zeros(2), np.zeros(2), [(1_000.0, [(0, 7)])])
    assert got[0][0].shape == (0,)
    got = kernels.expected_counts_multi(q, q, np.zeros(2), np.zeros(2), [(1_000.0, [])])
    assert got == [[]]


# --- points_in_boxes -----------------------------------------------------------------------


@FAST
@given(
    # Coordinates on a coarse lattice, so that many points lie exactly on box edges.
    points=hnp.arrays(
        np.float64, st.tuples(st.integers(0, 40), st.just(2)), elements=st.integers(0, 20)
    ),
    boxes=st.lists(
        st.tuples(st.integers(0, 20), st.integers(0, 20), st.integers(0, 8), st.integers(0, 8)),
        max_size=25,
    ),
)
def test_points_in_boxes_matches_brute_force(
    points: np.ndarray, boxes: list[tuple[int, int, int, int]]
) -> None:
    bounds = np.array([(x, y, x + w, y + h) for x, y, w, h in boxes], dtype=float).reshape(-1, 4)
    if len(bounds):
        bounds[::5] = np.nan  # empty geometries have no bounds
    qi, bi = kernels.points_in_boxes(points, bounds)
    expected = [
        (i, j)
        for i, (x, y) in enumerate(points)
        for j, (x0, y0, x1, y1) in enumerate(bounds)
        if x0 <= x <= x1 and y0 <= y <= y1
    ]
    assert list(zip(qi.tolist(), bi.tolist(), strict=True)) == expected  # sorted


# --- group_min -----------------------------------------------------------------------------


@FAST
@given(
    n=st.integers(0, 12),
    data=st.data(),
)
def test_group_min_matches_dict_reference(n: int, data: st.DataObject) -> None:
    size = data.draw(st.integers(0, 40)) if n else 0
    index = data.draw(st.lists(st.integers(0, max(n - 1, 0)), min_size=size, max_size=size))
    values = data.draw(
        st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=size, max_size=size)
    )
    got = kernels.group_min(np.array(index, dtype=np.intp), np.array(values, dtype=float), n)
    np.testing.assert_array_equal(got, ref.group_min(index, values, n))
