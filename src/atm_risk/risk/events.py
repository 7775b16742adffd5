"""Timed points for the hotspot benchmark: any CSV with a timestamp and coordinates."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

TIME_CANDIDATES = (
    "datetime",
    "datetime_local",
    "occurred_at",
    "timestamp",
    "date",
    "time",
    "EVENT_DATE",
)
LON_CANDIDATES = ("longitude", "lon", "lng", "long", "x")
LAT_CANDIDATES = ("latitude", "lat", "y")


class EventsInputError(ValueError):
    """The events file lacks a column or holds a value that cannot be parsed."""


@dataclass(frozen=True)
class Events:
    """Events with local clock times as given (naive), sorted by time."""

    name: str
    time: npt.NDArray[np.datetime64]
    lon: npt.NDArray[np.float64]
    lat: npt.NDArray[np.float64]

    def __len__(self) -> int:
        return len(self.time)


def pick_column(
    columns: list[str], given: str | None, candidates: tuple[str, ...], what: str
) -> str:
    if given is not None:
        if given not in columns:
            raise EventsInputError(
                f"no {what} column {given!r}; the file has: {', '.join(columns)}"
            )
        return given
    lower = {c.lower(): c for c in columns}
    for cand in candidates:
        if cand.lower() in lower:
            return lower[cand.lower()]
    raise EventsInputError(
        f"no {what} column found (looked for {', '.join(candidates)}); name it with "
        f"--{what}-col. The file has: {', '.join(columns)}"
    )


def _first_bad(raw: pd.Series, parsed: pd.Series) -> str:
    bad = parsed.isna()
    position = int(np.flatnonzero(bad.to_numpy())[0])
    return f"line {position + 2}: {raw.iloc[position]!r}"


def load_events(
    path: Path,
    *,
    time_col: str | None = None,
    lon_col: str | None = None,
    lat_col: str | None = None,
) -> Events:
    """Read a CSV of timed points; every row must parse (a clear error names the first bad one)."""
    if not path.is_file():
        raise EventsInputError(f"{path}: no such file")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise EventsInputError(f"{path}: not a readable CSV: {exc}") from exc
    columns = list(frame.columns)
    tcol = pick_column(columns, time_col, TIME_CANDIDATES, "time")
    xcol = pick_column(columns, lon_col, LON_CANDIDATES, "lon")
    ycol = pick_column(columns, lat_col, LAT_CANDIDATES, "lat")
    if frame.empty:
        raise EventsInputError(f"{path}: no rows")
    times = pd.to_datetime(frame[tcol].str.strip(), errors="coerce", format="mixed")
    if times.isna().any():
        raise EventsInputError(
            f"column {tcol!r}: cannot parse as a timestamp at {_first_bad(frame[tcol], times)}"
        )
    if getattr(times.dt, "tz", None) is not None:
        times = times.dt.tz_localize(None)  # local clock times as given
    values = {}
    for col, lo, hi in ((xcol, -180, 180), (ycol, -90, 90)):
        num = pd.to_numeric(frame[col].str.strip(), errors="coerce")
        num = num.where((num >= lo) & (num <= hi))
        if num.isna().any():
            raise EventsInputError(
                f"column {col!r}: not a coordinate in [{lo}, {hi}] at {_first_bad(frame[col], num)}"
            )
        values[col] = num.to_numpy(float)
    order = np.argsort(times.to_numpy(), kind="stable")
    return Events(
        name=path.name,
        time=times.to_numpy()[order],
        lon=values[xcol][order],
        lat=values[ycol][order],
    )
