"""A PNG map of machines coloured by risk band, for the digest e-mail.

Pure and thread-safe: every call builds its own :class:`matplotlib.figure.Figure` with an
Agg canvas (never ``pyplot`` and its global figure registry), sets every layout value it
depends on explicitly (so a global ``rcParams`` change to the layout or ``savefig.bbox``
cannot change the picture), reads no files and opens no network connection. Text uses the
font bundled with matplotlib (DejaVu Sans), so nothing is downloaded.

The picture is ``width_px`` wide and ``round(width_px * HEIGHT_RATIO)`` high, whatever the
data: the map frame has a fixed place and the lon/lat extent is widened to fill it. Longitude
is scaled by the cosine of the middle latitude so shapes are not stretched (an
equirectangular view, fine at regional scale). The frame is labelled in degrees; there is no
scale bar, on purpose ("scale-free").

Colours: high ``#d62728`` (red), elevated ``#ff7f0e`` (orange), low ``#8c8c8c`` (grey); high
is drawn on top. A band other than these three (or none) is drawn in light grey and counted
as "unbanded". Red appears in the picture only when a high machine is drawn: the legend lists
only the bands present.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import shapely
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection, PathCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.path import Path
from matplotlib.patheffects import withStroke
from matplotlib.ticker import FuncFormatter, MaxNLocator

__all__ = [
    "BAND_COLOURS",
    "FOOTER",
    "HEIGHT_RATIO",
    "render_risk_map",
]

HEIGHT_RATIO = 1.1
FOOTER = "atm-risk; boundaries: CBS/BKG (see data/PROVENANCE.md)"
BAND_COLOURS = {"high": "#d62728", "elevated": "#ff7f0e", "low": "#8c8c8c"}
UNBANDED_COLOUR = "#c7c7c7"
MIN_WIDTH_PX, MAX_WIDTH_PX = 300, 4000
# Used when there is neither a machine nor a boundary: the Netherlands.
DEFAULT_EXTENT = (3.3, 50.7, 7.3, 53.6)

_REFERENCE_WIDTH_PX = 900  # sizes in points are designed for this width
_BASE_DPI = 100.0
# Figure fractions: left, bottom, width, height of the map frame.
_FRAME = (0.1, 0.065, 0.88, 0.85)
_MIN_PAD_DEG = 0.1  # at least ~11 km around the machines (one machine, or a tight cluster)
_PAD_SHARE = 0.08
_DRAW_ORDER = ("unbanded", "low", "elevated", "high")  # last on top
_LABEL_LIMIT = 25


@dataclass(frozen=True)
class _Extent:
    lon0: float
    lat0: float
    lon1: float
    lat1: float


def render_risk_map(
    machines: pd.DataFrame,
    boundaries: Any | None,
    *,
    title: str,
    width_px: int = 900,
) -> bytes:
    """Render machines (``lon, lat, risk_band``, optional ``label``) over boundaries as PNG.

    ``boundaries`` is a GeoDataFrame of (multi)polygons or ``None``; it is reprojected to
    WGS84 when it has another CRS (none is taken as WGS84), clipped to the view and drawn as
    light grey outlines. The view is the machines' extent with a margin; with no machine it is
    the boundaries' extent (or the Netherlands) with a note "No machines in scope". Machines
    without finite coordinates are left out and counted in the footer. A non-empty ``label``
    is written next to its dot (at most 25 labels, highest bands first).
    """
    if not MIN_WIDTH_PX <= width_px <= MAX_WIDTH_PX:
        raise ValueError(f"width_px must be in [{MIN_WIDTH_PX}, {MAX_WIDTH_PX}], got {width_px}")
    missing = {"lon", "lat", "risk_band"} - set(machines.columns)
    if missing:
        raise ValueError(f"machines lacks column(s) {sorted(missing)}")

    points = _points(machines)
    n_unplaced = len(machines) - len(points)
    polygons = _wgs84_polygons(boundaries)

    height_px = round(width_px * HEIGHT_RATIO)
    # Text and markers grow with the square root of the width: readable at 400 px, not huge at
    # 1800 px; the frame's place is fixed in figure fractions.
    dpi = _BASE_DPI * math.sqrt(width_px / _REFERENCE_WIDTH_PX)
    # +0.5 px: Agg truncates width * dpi to an int, and (w / dpi) * dpi can land just below w.
    fig = Figure(
        figsize=((width_px + 0.5) / dpi, (height_px + 0.5) / dpi),
        dpi=dpi,
        facecolor="white",
    )
    fig.set_layout_engine("none")  # explicit: an rcParams layout must not move the frame
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes(_FRAME)
    ax.set_facecolor("#fbfbfb")

    frame_w = _FRAME[2] * width_px
    frame_h = _FRAME[3] * height_px
    extent = _view(points, polygons, frame_h / frame_w)
    ax.set_xlim(extent.lon0, extent.lon1)
    ax.set_ylim(extent.lat0, extent.lat1)
    ax.set_aspect("auto")
    ax.set_autoscale_on(False)

    _draw_frame(ax)
    if polygons is not None:
        _draw_boundaries(ax, polygons, extent)
    counts = _draw_machines(ax, points)
    if points.empty:
        ax.text(
            0.5,
            0.5,
            "No machines in scope",
            transform=ax.transAxes,
            ha="center",
            va="center",
            fontsize=12,
            color="#444444",
            bbox={"boxstyle": "round,pad=0.4", "facecolor": "white", "edgecolor": "#bbbbbb"},
            zorder=10,
        )
    _draw_legend(fig, counts)

    fig.text(
        0.015,
        0.985,
        title,
        ha="left",
        va="top",
        fontsize=_title_size(title, width_px, dpi),
        fontweight="bold",
    )
    fig.text(0.015, 0.008, FOOTER, ha="left", va="bottom", fontsize=8, color="#666666")
    if n_unplaced:
        fig.text(
            0.985,
            0.008,
            f"{n_unplaced} machine(s) without coordinates not shown",
            ha="right",
            va="bottom",
            fontsize=8,
            color="#666666",
        )

    buffer = io.BytesIO()
    # print_png renders the whole figure as is: no bbox_inches from rcParams, no version stamp.
    canvas.print_png(buffer, metadata={"Software": None})  # type: ignore[no-untyped-call]
    return buffer.getvalue()


def _title_size(title: str, width_px: int, dpi: float) -> float:
    """13 pt, smaller (down to 7 pt) when a long title would not fit on one line."""
    em_px = 0.66 * max(len(title), 1) * dpi / 72  # bold DejaVu Sans: ~0.66 em per character
    return max(7.0, min(13.0, 0.97 * width_px / em_px))


def _points(machines: pd.DataFrame) -> pd.DataFrame:
    lon = pd.to_numeric(machines["lon"], errors="coerce").to_numpy(dtype=float)
    lat = pd.to_numeric(machines["lat"], errors="coerce").to_numpy(dtype=float)
    bands = [
        b if isinstance(b, str) and b in BAND_COLOURS else "unbanded" for b in machines["risk_band"]
    ]
    if "label" in machines.columns:
        labels = ["" if _blank(v) else str(v) for v in machines["label"]]
    else:
        labels = [""] * len(machines)
    frame = pd.DataFrame({"lon": lon, "lat": lat, "band": bands, "label": labels})
    ok = np.isfinite(lon) & np.isfinite(lat) & (np.abs(lat) <= 90) & (np.abs(lon) <= 180)
    placed: pd.DataFrame = frame.loc[ok]
    return placed.reset_index(drop=True)


def _blank(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return str(value).strip() == ""


def _wgs84_polygons(boundaries: Any | None) -> Any | None:
    """The boundary geometries as a GeoSeries in EPSG:4326, or ``None`` when there are none."""
    if boundaries is None or len(boundaries) == 0:
        return None
    geoms = boundaries.geometry
    if geoms.crs is not None and not geoms.crs.equals("EPSG:4326"):
        geoms = geoms.to_crs(4326)
    geoms = geoms[geoms.notna() & ~geoms.is_empty]
    return geoms if len(geoms) else None


def _view(points: pd.DataFrame, polygons: Any | None, box_ratio: float) -> _Extent:
    """The lon/lat rectangle to show: data extent plus margin, widened to the frame's shape."""
    if not points.empty:
        lon0, lon1 = float(points["lon"].min()), float(points["lon"].max())
        lat0, lat1 = float(points["lat"].min()), float(points["lat"].max())
    elif polygons is not None:
        lon0, lat0, lon1, lat1 = (float(v) for v in polygons.total_bounds)
    else:
        lon0, lat0, lon1, lat1 = DEFAULT_EXTENT
    mid_lat = (lat0 + lat1) / 2
    kx = max(math.cos(math.radians(mid_lat)), 0.05)  # ground units: degrees of latitude
    ground_w = (lon1 - lon0) * kx
    ground_h = lat1 - lat0
    pad = max(_PAD_SHARE * max(ground_w, ground_h), _MIN_PAD_DEG)
    ground_w += 2 * pad
    ground_h += 2 * pad
    if ground_h / ground_w < box_ratio:
        ground_h = ground_w * box_ratio
    else:
        ground_w = ground_h / box_ratio
    mid_lon = (lon0 + lon1) / 2
    half_lon = ground_w / kx / 2
    return _Extent(
        mid_lon - half_lon, mid_lat - ground_h / 2, mid_lon + half_lon, mid_lat + ground_h / 2
    )


def _draw_frame(ax: Any) -> None:
    ax.xaxis.set_major_locator(MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10]))
    ax.yaxis.set_major_locator(MaxNLocator(nbins=7, steps=[1, 2, 2.5, 5, 10]))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: _degrees(v, "E", "W")))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: _degrees(v, "N", "S")))
    ax.tick_params(labelsize=8, colors="#555555", length=3)
    ax.grid(True, color="#e4e4e4", linewidth=0.5)
    ax.set_axisbelow("line")  # grid above the land fill, below outlines and machines
    for spine in ax.spines.values():
        spine.set_edgecolor("#999999")
        spine.set_linewidth(0.8)


def _degrees(value: float, positive: str, negative: str) -> str:
    text = f"{abs(value):.3f}".rstrip("0").rstrip(".")
    return f"{text}°{positive if value >= 0 else negative}"


def _draw_boundaries(ax: Any, polygons: Any, extent: _Extent) -> None:
    # a little beyond the view so outlines run to the frame's edge
    dx = (extent.lon1 - extent.lon0) * 0.02
    dy = (extent.lat1 - extent.lat0) * 0.02
    rect = (extent.lon0 - dx, extent.lat0 - dy, extent.lon1 + dx, extent.lat1 + dy)
    near = polygons.cx[rect[0] : rect[2], rect[1] : rect[3]]
    if len(near) == 0:
        return
    geoms = np.asarray(near.values, dtype=object)

    # a faint fill (with holes) so land inside the boundaries reads as an area
    areas = shapely.get_parts(shapely.clip_by_rect(geoms, *rect))
    areas = areas[shapely.get_type_id(areas) == 3]  # polygons
    paths = [_polygon_path(p) for p in areas if not p.is_empty]
    if paths:
        ax.add_collection(PathCollection(paths, facecolors="#f0f0f0", edgecolors="none", zorder=1))

    lines = shapely.get_parts(shapely.clip_by_rect(shapely.boundary(geoms), *rect))
    segments = [shapely.get_coordinates(line) for line in lines if not line.is_empty]
    segments = [s for s in segments if len(s) >= 2]
    if segments:
        ax.add_collection(LineCollection(segments, colors="#a0a0a0", linewidths=0.6, zorder=2))


def _polygon_path(polygon: Any) -> Path:
    rings = [polygon.exterior, *polygon.interiors]
    return Path.make_compound_path(
        *(Path(np.asarray(ring.coords)[:, :2], closed=True) for ring in rings)
    )


def _draw_machines(ax: Any, points: pd.DataFrame) -> dict[str, int]:
    n = len(points)
    size = 30.0 if n <= 300 else 14.0 if n <= 2000 else 6.0
    counts: dict[str, int] = {}
    for z, band in enumerate(_DRAW_ORDER):
        sub = points[points["band"] == band]
        counts[band] = len(sub)
        if sub.empty:
            continue
        ax.scatter(
            sub["lon"].to_numpy(),
            sub["lat"].to_numpy(),
            s=size * (1.5 if band == "high" else 1.0),
            c=BAND_COLOURS.get(band, UNBANDED_COLOUR),
            edgecolors="white",
            linewidths=0.4,
            zorder=3 + z,
        )
    labelled = points[points["label"] != ""]
    if not labelled.empty:
        order = {band: i for i, band in enumerate(reversed(_DRAW_ORDER))}
        labelled = labelled.assign(_o=labelled["band"].map(order)).sort_values("_o", kind="stable")
        top = labelled.head(_LABEL_LIMIT)
        for text, lon, lat in zip(
            top["label"].tolist(), top["lon"].tolist(), top["lat"].tolist(), strict=True
        ):
            ax.annotate(
                str(text),
                (float(lon), float(lat)),
                xytext=(4, 3),
                textcoords="offset points",
                fontsize=7,
                color="#222222",
                path_effects=[withStroke(linewidth=2, foreground="white")],
                zorder=8,
                annotation_clip=True,
            )
    return counts


def _draw_legend(fig: Figure, counts: dict[str, int]) -> None:
    handles = []
    for band in reversed(_DRAW_ORDER):  # high first
        if counts.get(band, 0) == 0:
            continue
        handles.append(
            Line2D(
                [],
                [],
                linestyle="none",
                marker="o",
                markersize=7,
                markerfacecolor=BAND_COLOURS.get(band, UNBANDED_COLOUR),
                markeredgecolor="white",
                label=f"{band} ({counts[band]})",
            )
        )
    if handles:
        fig.legend(
            handles=handles,
            loc="upper left",
            bbox_to_anchor=(_FRAME[0] - 0.01, 0.955),
            ncol=len(handles),
            frameon=False,
            fontsize=9,
            handletextpad=0.3,
            columnspacing=1.2,
            borderaxespad=0.0,
        )
