"""Read CSV, GeoJSON and GeoPackage files (optionally gzip-compressed) row by row.

Every row carries its location in the file so that a bad row can be reported precisely:
``line N`` for CSV (the header is line 1; a quoted field spanning lines reports the line the
record starts on) and ``feature N`` (1-based) for GeoJSON and GeoPackage.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from pyproj import CRS, Transformer
from shapely.geometry.base import BaseGeometry

from atm_risk.ingest.errors import IngestError
from atm_risk.ingest.report import Rejection

WGS84 = CRS.from_epsg(4326)
CSV_FIELD_LIMIT = 1_000_000  # characters; a longer field is a rejected row, not a crash


@dataclass(frozen=True)
class SourceRow:
    location: str
    values: dict[str, Any]
    geometry: BaseGeometry | None = None


@dataclass
class Source:
    """An opened source: its columns, a CRS for its geometries, and its rows."""

    path: Path
    format: str
    columns: list[str]
    crs: str
    rows: Iterator[SourceRow]
    # Rows that could not even be parsed (malformed CSV, bad encoding, broken feature JSON);
    # filled while ``rows`` is consumed.
    unreadable: list[Rejection] = field(default_factory=list)


def detect_format(path: Path) -> str:
    name = path.name.lower().removesuffix(".gz")
    if name.endswith(".csv"):
        return "csv"
    if name.endswith((".geojson", ".json")):
        return "geojson"
    if name.endswith(".gpkg"):
        return "gpkg"
    raise IngestError(
        f"{path}: unknown file type; expected .csv, .geojson/.json or .gpkg (optionally .gz)"
    )


def read_source(path: Path) -> Source:
    """Open ``path`` and return its rows lazily; raise :class:`IngestError` if it can't be."""
    if not path.is_file():
        raise IngestError(f"{path}: no such file")
    fmt = detect_format(path)
    if fmt == "csv":
        return _read_csv(path)
    if fmt == "geojson":
        return _read_geojson(path)
    return _read_gpkg(path)


def _read_bytes(path: Path) -> bytes:
    try:
        if path.name.lower().endswith(".gz"):
            with gzip.open(path, "rb") as fh:
                return fh.read()
        return path.read_bytes()
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
        raise IngestError(f"{path}: cannot read file: {exc}") from exc


_UNDECODABLE = re.compile("[\udc80-\udcff]")


def _has_undecodable(text: str) -> bool:
    """True when ``text`` holds bytes that were not valid UTF-8 (kept as surrogates)."""
    return _UNDECODABLE.search(text) is not None


def _has_nul(values: dict[str, Any]) -> bool:
    """True when a text value holds NUL, which PostgreSQL text columns cannot store."""
    return any(isinstance(v, str) and "\x00" in v for v in values.values())


def _clean(value: str) -> str | None:
    value = value.strip()
    return value or None


def _read_csv(path: Path) -> Source:
    text = _read_bytes(path).decode("utf-8", errors="surrogateescape").removeprefix("\ufeff")
    if not text.strip():
        raise IngestError(f"{path}: the file is empty")
    csv.field_size_limit(CSV_FIELD_LIMIT)
    try:
        dialect = csv.Sniffer().sniff(text[:8192], delimiters=",;\t")
        delimiter = dialect.delimiter
    except csv.Error:
        delimiter = ","
    # Physical lines as the csv module counts them; a record that cannot be parsed is
    # reported at its first line and reading starts again on the line after it, so that an
    # unclosed quote does not swallow the rest of the file.
    lines = io.StringIO(text, newline="").readlines()
    reader = csv.reader(iter(lines), delimiter=delimiter, strict=True)
    try:
        header = next(reader)
    except csv.Error as exc:
        raise IngestError(f"{path}: line 1: the header cannot be parsed: {exc}") from exc
    if _has_undecodable("".join(header)):
        raise IngestError(f"{path}: line 1: the header is not valid UTF-8")
    columns = [c.strip() for c in header]
    if any(not c for c in columns):
        raise IngestError(f"{path}: line 1: the header has an empty column name")
    dupes = sorted({c for c in columns if columns.count(c) > 1})
    if dupes:
        raise IngestError(f"{path}: line 1: duplicate column(s) {', '.join(dupes)}")

    source = Source(path=path, format="csv", columns=columns, crs="EPSG:4326", rows=iter(()))
    # Per-row checks only when the file holds something to find (most files hold neither).
    check_encoding = _has_undecodable(text)
    check_nul = "\x00" in text

    def rows() -> Iterator[SourceRow]:
        nonlocal reader
        base = 0  # physical lines before the current reader's first line
        last_line = reader.line_num

        def resync(start: int) -> int:
            """After a broken record that ran over later lines (an unclosed quote), read
            them again on their own, from the line after the record's first line."""
            nonlocal reader, base
            if base + reader.line_num != start:
                base = start
                reader = csv.reader(iter(lines[start:]), delimiter=delimiter, strict=True)
            return base + reader.line_num

        while True:
            start = last_line + 1
            try:
                record = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                source.unreadable.append(Rejection(f"line {start}", f"malformed CSV: {exc}"))
                last_line = resync(start)
                continue
            last_line = base + reader.line_num
            if not record or all(not f.strip() for f in record):
                continue  # blank line
            location = f"line {start}"
            if check_encoding and any(_has_undecodable(f) for f in record):
                source.unreadable.append(Rejection(location, "not valid UTF-8 text"))
                continue
            if check_nul and any("\x00" in f for f in record):
                # Python >= 3.11's csv accepts NUL as data; PostgreSQL text cannot hold it.
                source.unreadable.append(Rejection(location, "contains a NUL byte"))
                continue
            if len(record) != len(columns):
                source.unreadable.append(
                    Rejection(
                        location,
                        f"has {len(record)} fields, the header has {len(columns)}",
                    )
                )
                last_line = resync(start)
                continue
            yield SourceRow(location, {c: _clean(v) for c, v in zip(columns, record, strict=True)})

    source.rows = rows()
    return source


def _geojson_crs(doc: dict[str, Any], path: Path) -> CRS:
    """The CRS of a GeoJSON document: WGS84 (RFC 7946) unless a legacy ``crs`` names another."""
    member = doc.get("crs")
    if member is None:
        return WGS84
    try:
        name = member["properties"]["name"]
        return CRS.from_user_input(name)
    except (KeyError, TypeError) as exc:
        raise IngestError(f"{path}: unreadable 'crs' member: {member!r}") from exc
    except Exception as exc:  # pyproj.exceptions.CRSError
        raise IngestError(f"{path}: unknown CRS in 'crs' member: {exc}") from exc


def _to_wgs84(geometry: BaseGeometry, crs: CRS) -> BaseGeometry:
    if crs.equals(WGS84, ignore_axis_order=True) or crs.to_string() == "OGC:CRS84":
        return geometry
    transformer = Transformer.from_crs(crs, WGS84, always_xy=True)
    return shapely.transform(
        geometry, lambda xy: np.column_stack(transformer.transform(xy[:, 0], xy[:, 1]))
    )


def _read_geojson(path: Path) -> Source:
    try:
        doc = json.loads(_read_bytes(path).decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise IngestError(f"{path}: not valid UTF-8 at byte {exc.start}") from exc
    except json.JSONDecodeError as exc:
        raise IngestError(f"{path}: not valid JSON: line {exc.lineno}: {exc.msg}") from exc
    if not isinstance(doc, dict):
        raise IngestError(f"{path}: a GeoJSON document must be an object")
    if doc.get("type") == "Feature":
        features: list[Any] = [doc]
    elif doc.get("type") == "FeatureCollection" and isinstance(doc.get("features"), list):
        features = doc["features"]
    else:
        raise IngestError(f"{path}: expected a GeoJSON FeatureCollection or Feature")
    crs = _geojson_crs(doc, path)
    columns: list[str] = []
    for feat in features[:1000]:
        if isinstance(feat, dict) and isinstance(feat.get("properties"), dict):
            columns.extend(k for k in feat["properties"] if k not in columns)

    source = Source(
        path=path, format="geojson", columns=columns, crs=crs.to_string(), rows=iter(())
    )

    def rows() -> Iterator[SourceRow]:
        for n, feat in enumerate(features, start=1):
            location = f"feature {n}"
            if not isinstance(feat, dict) or feat.get("type") != "Feature":
                source.unreadable.append(Rejection(location, "not a GeoJSON Feature object"))
                continue
            props = feat.get("properties") or {}
            if not isinstance(props, dict):
                source.unreadable.append(Rejection(location, "'properties' is not an object"))
                continue
            geometry = None
            if feat.get("geometry") is not None:
                try:
                    geometry = _to_wgs84(shapely.geometry.shape(feat["geometry"]), crs)
                except Exception as exc:  # shapely raises several types for bad input
                    source.unreadable.append(Rejection(location, f"invalid geometry: {exc}"))
                    continue
            values = {str(k): (_clean(v) if isinstance(v, str) else v) for k, v in props.items()}
            if _has_nul(values):
                source.unreadable.append(Rejection(location, "contains a NUL character"))
                continue
            yield SourceRow(location, values, geometry)

    source.rows = rows()
    return source


def _read_gpkg(path: Path) -> Source:
    import pyogrio

    try:
        frame = pyogrio.read_dataframe(path)
    except Exception as exc:  # pyogrio.errors.DataSourceError and friends
        raise IngestError(f"{path}: cannot read GeoPackage: {exc}") from exc
    if frame.crs is None:
        raise IngestError(f"{path}: the layer has no CRS; set one before ingesting")
    crs = CRS.from_user_input(frame.crs)
    if not crs.equals(WGS84, ignore_axis_order=True):
        frame = frame.to_crs(WGS84)
    columns = [c for c in frame.columns if c != frame.geometry.name]

    def rows() -> Iterator[SourceRow]:
        for n, (geom, record) in enumerate(
            zip(frame.geometry, frame[columns].to_dict("records"), strict=True), start=1
        ):
            values = {
                k: (None if (isinstance(v, float) and math.isnan(v)) else v)
                for k, v in record.items()
            }
            values = {k: (_clean(v) if isinstance(v, str) else v) for k, v in values.items()}
            if _has_nul(values):
                source.unreadable.append(Rejection(f"feature {n}", "contains a NUL character"))
                continue
            yield SourceRow(f"feature {n}", values, geom if geom is not None else None)

    source = Source(path=path, format="gpkg", columns=columns, crs=crs.to_string(), rows=iter(()))
    source.rows = rows()
    return source
