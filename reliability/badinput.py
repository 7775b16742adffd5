"""Bad input: property-based fuzzing of every ingest format and of the API.

Ingest: for each format the CLI accepts (ATM CSV, incident CSV / GeoJSON, ATM GeoPackage,
area layers as GeoJSON polygons and CSV points; plain or .gz) hypothesis builds files that
mix known-valid rows with bad ones (wrong types, out-of-range values, missing ids, unknown
enums, fields longer than the schema allows or than the CSV field limit, NUL bytes, invalid
UTF-8, wrong quoting, wrong field counts, another delimiter, duplicates, truncated last
rows, broken features and geometries, projected coordinates without a CRS) and file-level
damage (BOM, CRLF, latin-1, UTF-16, gzip, truncated JSON or GeoPackage, a declared CRS that
is not WGS84, no CRS). Each file is ingested through the real ``atm-risk ingest`` command
(typer, in-process) into a database of each backend, and checked:

- crash: an exception escaped the command, or a traceback was printed (goal 0);
- valid rows lost: a valid row not committed, unless the file as a whole was refused for
  damage that really makes it unreadable (goal 0);
- bad rows unreported: a bad row not listed with its line/feature and a reason (goal 0);
- half-written: a refused file (exit 2) that changed the database (goal 0);
- misplaced: a row of a file with a declared CRS stored more than 1e-6 degrees away.

API: tests/api_probe.py's fuzz of every OpenAPI operation (hostile and schema values) on
the two-bank world of tests/two_banks.py, counting requests and 5xx answers (goal 0).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from reliability.common import Options, Scenario, part_result, scenario_table

N_EXAMPLES = {False: 40, True: 6}  # files per format and backend (full, quick)
API_EXAMPLES = {False: 25, True: 3}  # requests per operation

SITE_TYPES = ["", "branch", "foyer", "shop", "free_standing", "wall", "other", "unknown"]
METHODS = ["explosive_gas", "explosive_solid", "explosive_unspecified", "ram_raid", "burglary"]
TEXT = st.text(
    st.characters(blacklist_categories=("Cs", "Cc", "Cn")) | st.sampled_from(list(',;"\t\n ')),
    max_size=30,
)


def _rd(lon: float, lat: float) -> tuple[float, float]:
    from pyproj import Transformer

    x, y = Transformer.from_crs("EPSG:4326", "EPSG:28992", always_xy=True).transform(lon, lat)
    return float(x), float(y)


# ------------------------------------------------------------------------------ rows


@dataclass
class Row:
    """One row (CSV record, GeoJSON feature, GeoPackage feature) of a generated file."""

    key: str  # the id the database will hold (atm_id / incident_id / area name)
    values: dict[str, Any]
    lonlat: tuple[float, float] | None = None
    expect: str = "ok"  # ok | bad | ambiguous
    why: str = ""  # the kind of damage (bad rows)
    raw: str | bytes | None = None  # CSV: the record as written, bypassing the csv writer
    geometry: Any = "point"  # GeoJSON: "point" | "polygon" | "bowtie" | None | raw object
    feature: Any = None  # GeoJSON: a raw feature replacing the whole object


@dataclass
class Case:
    target: str
    variant: str
    rows: list[Row]
    refusal_ok: bool = False  # the file as a whole may be refused (exit 2)
    cut: Row | None = None  # CSV "truncated": the last record, cut in its second field
    prefix: str = ""


@dataclass
class Target:
    name: str
    kind: str  # atms | incidents | area
    fmt: str  # csv | geojson | gpkg
    columns: list[str]
    valid: Callable[[Any, str], Row]
    bad_kinds: list[str]
    variants: list[str]


def _valid_atm(draw: Any, key: str) -> Row:
    lon = draw(st.floats(3.4, 7.2))
    lat = draw(st.floats(50.8, 53.5))
    values = {
        "atm_id": key,
        "operator": draw(st.sampled_from(["BankA", "Bank B", "Sparkasse Köln", "Crédit Agricole"])),
        "lat": repr(lat),
        "lon": repr(lon),
        "site_type": draw(st.sampled_from(SITE_TYPES)),
        "country": "NL",
        "address": draw(TEXT),
        "city": draw(TEXT),
    }
    return Row(key, values, (lon, lat))


def _valid_incident(draw: Any, key: str) -> Row:
    lon = draw(st.floats(3.4, 7.2))
    lat = draw(st.floats(50.8, 53.5))
    day = draw(st.integers(1, 28))
    values = {
        "incident_id": key,
        "occurred_at": f"2024-03-{day:02d}T03:15",
        "country": "NL",
        "lat": repr(lat),
        "lon": repr(lon),
        "geocode_precision": "address",
        "method": draw(st.sampled_from(METHODS)),
        "locality": draw(TEXT),
        "notes": draw(TEXT),
    }
    return Row(key, values, (lon, lat))


def _valid_area(draw: Any, key: str) -> Row:
    lon = draw(st.floats(3.4, 7.2))
    lat = draw(st.floats(50.8, 53.5))
    shape = draw(st.sampled_from(["polygon", "polygon", "bowtie"]))  # bowtie: repaired, kept
    values = {"name": key, "lat": repr(lat), "lon": repr(lon), "note": draw(TEXT)}
    return Row(key, values, (lon, lat), geometry=shape)


TARGETS = [
    Target(
        "atms.csv",
        "atms",
        "csv",
        ["atm_id", "operator", "lat", "lon", "site_type", "country", "address", "city"],
        _valid_atm,
        [
            "wrong_type",
            "out_of_range",
            "missing_id",
            "bad_enum",
            "too_long",
            "huge_field",
            "nul",
            "invalid_utf8",
            "extra_field",
            "fewer_fields",
            "other_delimiter",
            "bad_quote",
            "duplicate",
            "unterminated_quote",
        ],
        ["plain", "gzip", "bom", "crlf", "latin1", "utf16", "truncated"],
    ),
    Target(
        "incidents.csv",
        "incidents",
        "csv",
        [
            "incident_id",
            "occurred_at",
            "country",
            "lat",
            "lon",
            "geocode_precision",
            "method",
            "locality",
            "notes",
        ],
        _valid_incident,
        [
            "wrong_type",
            "out_of_range",
            "missing_id",
            "bad_enum",
            "too_long",
            "bad_date",
            "future_date",
            "nul",
            "invalid_utf8",
            "extra_field",
            "other_delimiter",
            "duplicate",
        ],
        ["plain", "gzip", "crlf", "latin1", "truncated"],
    ),
    Target(
        "incidents.geojson",
        "incidents",
        "geojson",
        ["incident_id", "occurred_at", "country", "geocode_precision", "method", "notes"],
        _valid_incident,
        [
            "out_of_range",
            "missing_id",
            "bad_enum",
            "too_long",
            "nul",
            "not_a_feature",
            "properties_not_object",
            "invalid_geometry",
            "not_a_point",
            "projected",
            "duplicate",
        ],
        ["plain", "gzip", "declared_crs", "broken_json", "utf16", "latin1"],
    ),
    Target(
        "atms.gpkg",
        "atms",
        "gpkg",
        ["atm_id", "operator", "site_type", "country", "address", "city"],
        _valid_atm,
        # (OGR cuts a text at a NUL when writing, so a GeoPackage cannot carry one)
        ["missing_id", "bad_enum", "too_long", "no_geometry", "out_of_range"],
        ["plain", "declared_crs", "no_crs", "truncated"],
    ),
    Target(
        "area.geojson",
        "area",
        "geojson",
        ["name", "note"],
        _valid_area,
        [
            "no_geometry",
            "invalid_geometry",
            "out_of_range",
            "not_a_feature",
            "properties_not_object",
            "nul",
            "projected",
        ],
        ["plain", "gzip", "declared_crs", "broken_json", "utf16"],
    ),
    Target(
        "area.csv",
        "area",
        "csv",
        ["name", "lat", "lon", "note"],
        _valid_area,
        ["wrong_type", "out_of_range", "nul", "invalid_utf8", "extra_field", "fewer_fields"],
        ["plain", "gzip", "bom", "crlf", "latin1", "utf16", "truncated"],
    ),
]


def _id_column(target: Target) -> str:
    return {"atms": "atm_id", "incidents": "incident_id", "area": "name"}[target.kind]


def _text_column(target: Target) -> str:
    return {"atms": "address", "incidents": "notes", "area": "note"}[target.kind]


def _bad(target: Target, kind: str, draw: Any, key: str, valid: list[Row]) -> Row:
    """A row damaged in one way; ``expect`` is bad (or ambiguous where unknowable)."""
    row = target.valid(draw, key)
    row.expect, row.why = "bad", kind
    v, idc, txt = row.values, _id_column(target), _text_column(target)
    if kind == "wrong_type":
        v["lat"] = draw(st.sampled_from(["north", "52,1", "1e", "--5", "0x34"]))
    elif kind == "out_of_range":
        lat = draw(st.sampled_from([95.0, -91.0, 1e308]))
        v["lat"] = repr(lat)
        row.lonlat = (row.lonlat[0] if row.lonlat else 5.0, lat)
    elif kind == "missing_id":
        v[idc] = ""
    elif kind == "bad_enum":
        v["site_type" if target.kind == "atms" else "method"] = "spaceship"
    elif kind == "too_long":
        v[txt] = "x" * (5000 if target.kind == "incidents" else 400)
    elif kind == "huge_field":
        v[txt] = "y" * 1_200_000  # beyond the CSV field limit
    elif kind == "bad_date":
        v["occurred_at"] = draw(st.sampled_from(["2024-02-30T01:00", "yesterday", "24/13/2024"]))
    elif kind == "future_date":
        v["occurred_at"] = "2099-01-01T00:00"
    elif kind == "nul":
        v[txt] = "before\x00after"
    elif kind == "not_a_feature":
        row.feature = draw(st.sampled_from([1, "feature", [], {"type": "Point"}]))
    elif kind == "properties_not_object":
        row.feature = {"type": "Feature", "properties": [1, 2], "geometry": None}
    elif kind == "invalid_geometry":
        row.geometry = {"type": "Point", "coordinates": ["a", None]}
        if target.kind == "area":
            row.geometry = {"type": "Polygon", "coordinates": [[[0, 0], [1]]]}
    elif kind == "not_a_point":
        row.geometry = "polygon"
    elif kind == "no_geometry":
        row.geometry = None
    elif kind == "projected":
        row.geometry = "projected"  # RD New metres in a file that declares nothing
    elif kind == "duplicate":
        if valid:
            first = draw(st.sampled_from(valid))
            row.key = first.key
            v[idc] = first.key
            if target.kind == "atms":  # the key is (operator, atm_id)
                v["operator"] = first.values["operator"]
        else:
            row.expect = "ok"  # nothing to duplicate: an ordinary valid row
    elif target.fmt == "csv":
        cols = target.columns
        cells = [str(v.get(c, "")) for c in cols]
        if kind == "invalid_utf8":
            # bytes that are not UTF-8 inside the last field, the field count kept
            line = _csv_line([*cells[:-1], "z\udcff\udcfe"])
            row.raw = line.encode("utf-8", "surrogateescape")
        elif kind == "extra_field":
            row.raw = _csv_line([*cells, "surplus"])
        elif kind == "fewer_fields":
            row.raw = _csv_line(cells[:-2])
        elif kind == "other_delimiter":
            row.raw = _csv_line(cells, delimiter=";")
        elif kind == "bad_quote":
            row.raw = _csv_line(cells[:-1]).rstrip("\n") + ',"abc"def\n'
        elif kind == "unterminated_quote":
            row.raw = _csv_line(cells[:-1]).rstrip("\n") + ',"never closed\n'
        else:
            raise ValueError(kind)
    else:
        raise ValueError(kind)
    return row


def _raw(target: Target, row: Row) -> str:
    """The row as a CSV record (for the quote check)."""
    if row.raw is not None:
        return row.raw if isinstance(row.raw, str) else row.raw.decode("utf-8", "replace")
    return _csv_line([str(row.values.get(c, "")) for c in target.columns])


def _csv_line(cells: list[str], delimiter: str = ",") -> str:
    buf = io.StringIO()
    csv.writer(buf, delimiter=delimiter, lineterminator="\n").writerow(cells)
    return buf.getvalue()


@st.composite
def cases(draw: Any, target: Target, counter: list[int], variant: str) -> Case:
    counter[0] += 1
    prefix = f"fz{counter[0]}"
    valid = [target.valid(draw, f"{prefix}v{i}") for i in range(draw(st.integers(1, 6)))]
    rows: list[Row] = list(valid)
    kinds = draw(st.lists(st.sampled_from(target.bad_kinds), max_size=4))
    for j, kind in enumerate(kinds):
        bad = _bad(target, kind, draw, f"{prefix}b{j}", valid)
        if kind == "duplicate":
            rows.append(bad)  # after every valid row: a duplicate rejects the later one
        else:
            rows.insert(draw(st.integers(0, len(rows))), bad)
    for at, row in enumerate(rows):
        if row.why == "unterminated_quote" and any('"' in _raw(target, r) for r in rows[at + 1 :]):
            # a later '"' may close the open quote where the record still has the right
            # number of fields: what follows cannot be known from outside
            for r in rows[at + 1 :]:
                r.expect = "ambiguous"
    case = Case(target.name, variant, rows, prefix=prefix)
    if case.variant == "truncated" and target.fmt == "csv":
        case.cut = target.valid(draw, f"{prefix}t")
    return case


# ------------------------------------------------------------------------------ writing


def _encode(text: str, variant: str) -> bytes:
    if variant == "latin1":
        return text.encode("latin-1", errors="replace")
    if variant == "utf16":
        return text.encode("utf-16")
    return text.encode("utf-8", errors="surrogateescape")


def _write_csv(target: Target, case: Case) -> tuple[bytes, dict[int, str]]:
    """The file's bytes and the location of each row (by index)."""
    newline = "\r\n" if case.variant == "crlf" else "\n"
    pieces: list[bytes] = []
    locations: dict[int, str] = {}
    line = 2
    header = ",".join(target.columns) + newline
    pieces.append(_encode(header, case.variant))
    for i, row in enumerate(case.rows):
        if isinstance(row.raw, bytes):
            data = row.raw
        else:
            text = (
                row.raw
                if row.raw is not None
                else _csv_line([str(row.values.get(c, "")) for c in target.columns])
            )
            if case.variant == "crlf":
                text = text[:-1] + "\r\n"
            data = _encode(text, case.variant)
        locations[i] = f"line {line}"
        line += data.count(b"\n") if case.variant != "utf16" else 1
        pieces.append(data)
        if case.variant == "latin1" and row.expect == "ok":
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                row.expect, row.why = "bad", "latin-1 text"
    if case.cut is not None:
        # a last record cut before its second delimiter: too few fields
        text = _csv_line([str(case.cut.values.get(c, "")) for c in target.columns])
        second = [m.start() for m in re.finditer(",", text)][1]
        pieces.append(_encode(text[:second], case.variant))
        case.rows.append(Row(case.cut.key, {}, expect="bad", why="truncated"))
        locations[len(case.rows) - 1] = f"line {line}"
    body = b"".join(pieces)
    if case.variant == "bom":
        body = b"\xef\xbb\xbf" + body
    if case.variant == "utf16":
        # one BOM for the file, not one per piece
        body = "".join(
            p.decode("utf-16") for p in pieces if isinstance(p, bytes) and p[:2] == b"\xff\xfe"
        ).encode("utf-16")
        case.refusal_ok = True
    return body, locations


def _geometry(row: Row, target: Target, crs: str | None) -> Any:
    lon, lat = row.lonlat or (5.0, 52.0)
    d = 0.01

    def pt(x: float, y: float) -> list[float]:
        if crs == "EPSG:28992":
            return list(_rd(x, y))
        return [x, y]

    if row.geometry is None:
        return None
    if isinstance(row.geometry, dict):
        return row.geometry
    if row.geometry == "projected":
        return (
            {"type": "Point", "coordinates": list(_rd(lon, lat))}
            if target.kind != "area"
            else {
                "type": "Polygon",
                "coordinates": [[list(_rd(x, y)) for x, y in _square(lon, lat, d)]],
            }
        )
    if row.geometry == "point" and target.kind != "area":
        return {"type": "Point", "coordinates": pt(lon, lat)}
    if row.geometry == "bowtie":
        ring = [(lon, lat), (lon + d, lat + d), (lon + d, lat), (lon, lat + d), (lon, lat)]
        return {"type": "Polygon", "coordinates": [[pt(x, y) for x, y in ring]]}
    return {"type": "Polygon", "coordinates": [[pt(x, y) for x, y in _square(lon, lat, d)]]}


def _square(lon: float, lat: float, d: float) -> list[tuple[float, float]]:
    return [(lon, lat), (lon + d, lat), (lon + d, lat + d), (lon, lat + d), (lon, lat)]


def _write_geojson(target: Target, case: Case) -> tuple[bytes, dict[int, str]]:
    crs = "EPSG:28992" if case.variant == "declared_crs" else None
    if crs:
        for row in case.rows:
            if row.why == "projected":  # RD New metres are right in a file that says so
                row.expect, row.why = "ok", ""
                row.geometry = "polygon" if target.kind == "area" else "point"
    features = []
    for row in case.rows:
        if row.feature is not None:
            features.append(row.feature)
            continue
        props = {c: row.values.get(c) for c in target.columns}
        props = {k: (None if v == "" else v) for k, v in props.items()}
        features.append(
            {"type": "Feature", "properties": props, "geometry": _geometry(row, target, crs)}
        )
    doc: dict[str, Any] = {"type": "FeatureCollection", "features": features}
    if crs:
        doc["crs"] = {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::28992"}}
    text = json.dumps(doc, ensure_ascii=False)
    locations = {i: f"feature {i + 1}" for i in range(len(case.rows))}
    if case.variant == "broken_json":
        text = text[: max(1, len(text) * 2 // 3)]
        case.refusal_ok = True
    if case.variant == "utf16":
        case.refusal_ok = True
    body = _encode(text, case.variant)
    if case.variant == "latin1":
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            case.refusal_ok = True  # JSON text must be UTF-8 as a whole
    return body, locations


def _write_gpkg(target: Target, case: Case, path: Path) -> dict[int, str]:
    import geopandas as gpd
    import shapely

    crs = {"declared_crs": "EPSG:28992", "no_crs": None}.get(case.variant, "EPSG:4326")
    geoms, records = [], []
    for row in case.rows:
        lon, lat = row.lonlat or (5.0, 52.0)
        if row.geometry is None:
            geoms.append(None)
        elif crs == "EPSG:28992":
            geoms.append(shapely.Point(*_rd(lon, lat)))
        else:
            geoms.append(shapely.Point(lon, lat))
        records.append({c: (row.values.get(c) or None) for c in target.columns})
    frame = gpd.GeoDataFrame(records, geometry=geoms, crs=crs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "'crs' was not provided": that is the point
        frame.to_file(path, driver="GPKG", engine="pyogrio")
    if case.variant == "no_crs":
        case.refusal_ok = True
    if case.variant == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 3])
        case.refusal_ok = True
    return {i: f"feature {i + 1}" for i in range(len(case.rows))}


# ------------------------------------------------------------------------------ checking


@dataclass
class Tally:
    cases: int = 0
    crashes: int = 0
    valid_rows: int = 0
    valid_rows_lost: int = 0
    bad_rows: int = 0
    bad_rows_unreported: int = 0
    refused: int = 0
    half_written: int = 0
    misplaced: int = 0
    examples: list[str] = field(default_factory=list)
    variants: dict[str, int] = field(default_factory=dict)

    def note(self, text: str) -> None:
        if len(self.examples) < 8:
            self.examples.append(text[:600])


REPORTED = re.compile(r"^((?:line|feature) \d+): (.+)$", re.M)


class Store:
    """Reads what an ingest left in the database."""

    def __init__(self, url: str) -> None:
        from atm_risk.db import make_engine

        self.engine = make_engine(url)

    def count(self) -> int:
        from sqlalchemy import func, select

        from atm_risk.areas.models import AreaFeature
        from atm_risk.atms.models import Atm
        from atm_risk.incidents.models import Incident

        with self.engine.connect() as conn:
            return sum(
                int(conn.scalar(select(func.count()).select_from(t)) or 0)
                for t in (Atm, Incident, AreaFeature)
            )

    def found(self, target: Target, case: Case, layer: str) -> dict[str, tuple[float, float]]:
        """Stored keys of this case with their lon/lat."""
        from sqlalchemy import select

        from atm_risk.areas.models import AreaFeature, AreaLayer
        from atm_risk.atms.models import Atm
        from atm_risk.incidents.models import Incident

        keys = [r.key for r in case.rows]
        with self.engine.connect() as conn:
            if target.kind == "atms":
                q = select(Atm.atm_id, Atm.lon, Atm.lat).where(Atm.atm_id.in_(keys))
            elif target.kind == "incidents":
                q = select(Incident.incident_id, Incident.lon, Incident.lat).where(
                    Incident.incident_id.in_(keys)
                )
            else:
                q = (
                    select(AreaFeature.name, AreaFeature.minx, AreaFeature.miny)
                    .join(AreaLayer, AreaLayer.id == AreaFeature.layer_id)
                    .where(AreaLayer.name == layer)
                )
            return {k: (x, y) for k, x, y in conn.execute(q)}

    def dispose(self) -> None:
        self.engine.dispose()


def run_case(target: Target, case: Case, url: str, work: Path, store: Store, tally: Tally) -> None:
    from typer.testing import CliRunner

    from atm_risk.cli import app

    tally.cases += 1
    tally.variants[case.variant] = tally.variants.get(case.variant, 0) + 1
    ext = {"csv": ".csv", "geojson": ".geojson", "gpkg": ".gpkg"}[target.fmt]
    gz = case.variant == "gzip"
    path = work / f"{case.prefix}_{target.kind}{ext}{'.gz' if gz else ''}"
    if target.fmt == "gpkg":
        locations = _write_gpkg(target, case, path)
    else:
        writer = _write_csv if target.fmt == "csv" else _write_geojson
        body, locations = writer(target, case)
        path.write_bytes(gzip.compress(body) if gz else body)
    if target.kind == "area":
        outside = sum(r.why in ("projected", "out_of_range") for r in case.rows)
        if outside > sum(r.expect == "ok" for r in case.rows):
            case.refusal_ok = True  # "most coordinates outside WGS84: CRS not declared"
    layer = f"fz_{case.prefix}"
    args = {
        "atms": ["ingest", "atms", str(path)],
        "incidents": ["ingest", "incidents", str(path)],
        "area": ["ingest", "area", layer, str(path)],
    }[target.kind]
    before = store.count()
    env = {"ATM_RISK_DATABASE_URL": url, "ATM_RISK_MODEL_PATH": "", "ATM_RISK_CONFIG": ""}
    result = CliRunner().invoke(app, args, env=env)
    output = result.output  # stdout and stderr (click >= 8.2)
    label = f"{target.name}/{case.variant} ({path.name})"
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        tally.crashes += 1
        tally.note(f"{label}: {type(result.exception).__name__}: {result.exception}")
        return
    if "Traceback" in output:
        tally.crashes += 1
        tally.note(f"{label}: traceback printed")
        return
    code = result.exit_code
    ok_rows = [r for r in case.rows if r.expect == "ok"]
    bad_rows = [i for i, r in enumerate(case.rows) if r.expect == "bad"]
    tally.valid_rows += len(ok_rows)
    tally.bad_rows += len(bad_rows)
    if code == 2:
        if not output.strip().splitlines() or "error:" not in output:
            tally.crashes += 1
            tally.note(f"{label}: exit 2 without an error message")
        if store.count() != before:
            tally.half_written += 1
            tally.note(f"{label}: refused but the database changed")
        if case.refusal_ok:
            tally.refused += 1
        else:
            tally.valid_rows_lost += len(ok_rows)
            tally.note(f"{label}: whole file refused: {output.strip()[-300:]}")
        return
    found = store.found(target, case, layer)
    lost = [r.key for r in ok_rows if r.key not in found]
    if lost:
        tally.valid_rows_lost += len(lost)
        tally.note(f"{label}: valid rows not stored {lost[:5]}; output: {output.strip()[-400:]}")
    reported = dict(REPORTED.findall(output))
    unreported = [locations[i] for i in bad_rows if locations.get(i) not in reported]
    if unreported:
        tally.bad_rows_unreported += len(unreported)
        why = [case.rows[i].why for i in bad_rows if locations.get(i) not in reported]
        tally.note(f"{label}: bad rows not reported {unreported[:5]} ({why[:5]})")
    if case.variant == "declared_crs" and target.kind != "area":
        for r in ok_rows:
            got = found.get(r.key)
            if (
                got
                and r.lonlat
                and max(abs(got[0] - r.lonlat[0]), abs(got[1] - r.lonlat[1])) > 1e-6
            ):
                tally.misplaced += 1
                tally.note(f"{label}: {r.key} stored at {got}, expected {r.lonlat}")


def fuzz_target(target: Target, backend: str, options: Options) -> Scenario:
    url = options.databases.new(backend, f"badinput {target.name}")
    work = options.work_dir(f"badinput/{backend}/{target.name}")
    store = Store(url)
    tally = Tally()
    counter = [0]
    start = time.monotonic()

    # every file-level variant gets its share of the examples
    per_variant = max(1, N_EXAMPLES[options.quick] // len(target.variants))
    try:
        for variant in target.variants:

            @seed(options.seed)
            @settings(
                max_examples=per_variant,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=cases(target, counter, variant))
            def fuzz(case: Case) -> None:
                run_case(target, case, url, work, store, tally)

            fuzz()
    finally:
        store.dispose()
    survived = (
        tally.crashes == 0
        and tally.valid_rows_lost == 0
        and tally.half_written == 0
        and tally.bad_rows_unreported == 0
        and tally.misplaced == 0
    )
    return Scenario(
        name=f"ingest {target.name}",
        backend=backend,
        survived=survived,
        cases=tally.cases,
        crashes=tally.crashes,
        valid_rows_lost=tally.valid_rows_lost,
        seconds=time.monotonic() - start,
        details={
            "valid_rows": tally.valid_rows,
            "bad_rows": tally.bad_rows,
            "bad_rows_unreported": tally.bad_rows_unreported,
            "files_refused": tally.refused,
            "half_written": tally.half_written,
            "misplaced": tally.misplaced,
            "variants": tally.variants,
            "examples": tally.examples,
        },
    )


# ------------------------------------------------------------------------------ API


def fuzz_api(backend: str, options: Options) -> Scenario:
    from tests.api_probe import fuzz_api as probe
    from tests.api_server import serve

    from reliability.common import api_world

    start = time.monotonic()
    url = options.databases.new(backend, "badinput API fuzz")
    # with an acknowledgement key, so that the signed-link route checks signatures
    world = api_world(
        url, options.work_dir(f"badinput/{backend}/api"), alerts={"ack_secret": "k" * 32}
    )
    with serve(world.app()) as client:
        keys = [world.keys[k] for k in ("operator", "bank_a", "police")]
        outcome = probe(client, keys, max_examples=API_EXAMPLES[options.quick])
    world.close()
    return Scenario(
        name="API fuzz (OpenAPI)",
        backend=backend,
        survived=not outcome.server_errors,
        cases=outcome.sent,
        server_errors=len(outcome.server_errors),
        seconds=time.monotonic() - start,
        details={"examples": outcome.server_errors[:8]},
    )


def run(options: Options) -> dict[str, Any]:
    scenarios = []
    for backend in options.backends:
        for target in TARGETS:
            scenarios.append(fuzz_target(target, backend, options))
        scenarios.append(fuzz_api(backend, options))
    return part_result(scenarios)


def markdown(results: dict[str, Any]) -> str:
    rows = results["scenarios"]
    ingest = [s for s in rows if s["name"].startswith("ingest")]
    api = [s for s in rows if not s["name"].startswith("ingest")]
    flat = [
        {
            **s,
            **{
                k: s["details"].get(k, "")
                for k in ("valid_rows", "bad_rows", "bad_rows_unreported", "files_refused")
            },
            "half_written": s["details"].get("half_written", ""),
        }
        for s in ingest
    ]
    out = [
        "Every ingest format, fuzzed with hypothesis (reliability/badinput.py): each file mixes "
        "known-valid rows with damaged ones and file-level damage, and goes through the real "
        "`atm-risk ingest` command into a fresh database of each backend. A refused file is one "
        "the command rejected as a whole with a clear error (exit 2), allowed only for damage "
        "that makes the whole file unreadable (UTF-16, truncated JSON or GeoPackage, no CRS, "
        "mostly undeclared projected coordinates); it must leave the database unchanged.",
        "",
        scenario_table(
            flat,
            [
                "cases",
                "crashes",
                "valid_rows",
                "valid_rows_lost",
                "bad_rows",
                "bad_rows_unreported",
                "files_refused",
                "half_written",
                "seconds",
            ],
        ),
        "",
        "The API, fuzzed from its OpenAPI document (tests/api_probe.py, shared with "
        "tests/integration/test_api_fuzz.py): schema values, edges and hostile strings in every "
        "path, query and body field, with operator, bank and police keys.",
        "",
        scenario_table(api, ["cases", "server_errors", "seconds"]),
    ]
    examples = [
        f"- {s['name']} ({s['backend']}): {e}"
        for s in rows
        for e in s["details"].get("examples", [])
    ]
    if examples:
        out += ["", "Findings of this run:", "", *examples]
    return "\n".join(out)
