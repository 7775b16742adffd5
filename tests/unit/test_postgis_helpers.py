"""The lon/lat box PostGIS searches around a metric disc, and the map's bbox parameter."""

from __future__ import annotations

import numpy as np
import pytest
from pyproj import Transformer

from atm_risk.postgis import disc_box, parse_bbox


@pytest.mark.parametrize("crs", ["EPSG:3035", "EPSG:28992", "EPSG:32632"])
def test_disc_box_holds_the_whole_disc_and_little_more(crs: str) -> None:
    to_metric = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    to_lonlat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    rng = np.random.default_rng(3)
    angles = np.linspace(0, 2 * np.pi, 100_000, endpoint=False)
    for lon, lat in zip(rng.uniform(3.5, 7.0, 8), rng.uniform(50.8, 53.4, 8), strict=True):
        for radius in (500.0, 10_000.0, 50_000.0):
            box = disc_box(float(lon), float(lat), radius, crs)
            cx, cy = to_metric.transform(lon, lat)
            ring_lon, ring_lat = to_lonlat.transform(
                cx + radius * np.cos(angles), cy + radius * np.sin(angles)
            )
            tight = (ring_lon.min(), ring_lat.min(), ring_lon.max(), ring_lat.max())
            assert np.all(np.less_equal(box[:2], tight[:2])), (lon, lat, radius)
            assert np.all(np.greater_equal(box[2:], tight[2:])), (lon, lat, radius)
            # the margin: 0.1 % of the radius plus a metre, no more (a few metres at most)
            width, height = tight[2] - tight[0], tight[3] - tight[1]
            assert box[2] - box[0] <= width * 1.0011 + 1e-4
            assert box[3] - box[1] <= height * 1.0011 + 1e-4


def test_parse_bbox() -> None:
    assert parse_bbox("4.7,52.0,5.3,52.2") == (4.7, 52.0, 5.3, 52.2)
    assert parse_bbox(" -180 , -90 , 180 , 90 ") == (-180.0, -90.0, 180.0, 90.0)
    assert parse_bbox("5,52,5,52") == (5.0, 52.0, 5.0, 52.0)  # a point is a box
    for bad, why in {
        "": "four numbers",
        "5,52,6,53,1": "four numbers",
        "5,52,6,x": "must be numbers",
        "5,52,inf,53": "finite",
        "5,52,1e400,53": "finite",
        "5,52,6,\x0053": "must be numbers",
        "6,52,5,53": "min_lon <= max_lon",
        "-181,52,5,53": "-180 <= min_lon",
        "5,53,6,52": "min_lat <= max_lat",
        "5,52,6,91": "max_lat <= 90",
    }.items():
        with pytest.raises(ValueError, match="bbox") as caught:
            parse_bbox(bad)
        assert why in str(caught.value), bad
