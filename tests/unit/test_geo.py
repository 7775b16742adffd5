"""Projection helpers: the same answer whichever thread asks, for few points and many."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from atm_risk.geo import CRSMismatchError, project, unproject


def test_few_and_many_points_project_alike_from_any_thread() -> None:
    rng = np.random.default_rng(7)
    lon, lat = rng.uniform(3, 7, 1000), rng.uniform(50.7, 53.5, 1000)
    bulk_x, bulk_y = project(lon, lat, "EPSG:3035")  # > the few-point limit: this thread

    def one(k: int) -> tuple[float, float]:
        x, y = project([lon[k]], [lat[k]], "EPSG:3035")  # handed to the projection thread
        return float(x[0]), float(y[0])

    with ThreadPoolExecutor(8) as pool:
        few = np.array(list(pool.map(one, range(0, 1000, 37))))
    np.testing.assert_allclose(few[:, 0], bulk_x[::37], atol=1e-6)
    np.testing.assert_allclose(few[:, 1], bulk_y[::37], atol=1e-6)
    few_x, few_y = project(lon[:5], lat[:5], "EPSG:3035")  # a few: the projection thread
    np.testing.assert_allclose(few_x, bulk_x[:5], atol=1e-6)
    np.testing.assert_allclose(few_y, bulk_y[:5], atol=1e-6)
    back_lon, back_lat = unproject(few[:, 0], few[:, 1], "EPSG:3035")
    np.testing.assert_allclose(back_lon, lon[::37], atol=1e-9)
    np.testing.assert_allclose(back_lat, lat[::37], atol=1e-9)


def test_a_geographic_crs_is_refused_for_distances() -> None:
    with pytest.raises(CRSMismatchError):
        project([5.0], [52.0], "EPSG:4326")
