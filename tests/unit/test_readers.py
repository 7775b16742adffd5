"""``read_source``: rows with their locations, rejections for unreadable rows, file errors."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from atm_risk.ingest import readers
from atm_risk.ingest.errors import IngestError
from atm_risk.ingest.readers import Source, SourceRow, read_source
from atm_risk.ingest.report import Rejection

Write = Callable[[str, str | bytes], Path]


def consume(source: Source) -> tuple[list[SourceRow], list[Rejection]]:
    """All rows, then the rejections (``unreadable`` is filled while rows are read)."""
    rows = list(source.rows)
    return rows, source.unreadable


def locations(rows: list[SourceRow]) -> list[str]:
    return [r.location for r in rows]


def feature(x: float, y: float, **props: Any) -> dict[str, Any]:
    return {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [x, y]},
        "properties": props,
    }


def collection(*features: Any, **members: Any) -> str:
    return json.dumps({"type": "FeatureCollection", **members, "features": list(features)})


# --- CSV ---------------------------------------------------------------------------------


def test_csv_rows_are_numbered_from_the_header_as_line_1(write: Write) -> None:
    source = read_source(write("atms.csv", "id,name\na,x\nb,y\n"))
    rows, rejected = consume(source)
    assert source.format == "csv"
    assert source.columns == ["id", "name"]
    assert [(r.location, r.values) for r in rows] == [
        ("line 2", {"id": "a", "name": "x"}),
        ("line 3", {"id": "b", "name": "y"}),
    ]
    assert rejected == []


def test_csv_multiline_field_reports_its_start_line_and_later_lines_stay_right(
    write: Write,
) -> None:
    rows, rejected = consume(read_source(write("a.csv", 'id,note\na,"two\nlines"\nb,x\nc,y\n')))
    assert [(r.location, r.values["id"]) for r in rows] == [
        ("line 2", "a"),
        ("line 4", "b"),
        ("line 5", "c"),
    ]
    assert rows[0].values["note"] == "two\nlines"
    assert rejected == []


def test_csv_blank_lines_are_skipped_without_shifting_line_numbers(write: Write) -> None:
    rows, rejected = consume(read_source(write("a.csv", "id,name\n\na,x\n\n\nb,y\n")))
    assert [(r.location, r.values["id"]) for r in rows] == [("line 3", "a"), ("line 6", "b")]
    assert rejected == []


def test_csv_values_are_stripped_and_empty_values_become_none(write: Write) -> None:
    rows, _ = consume(read_source(write("a.csv", "id,name,city\n a , ,Utrecht\n")))
    assert rows[0].values == {"id": "a", "name": None, "city": "Utrecht"}


def test_csv_row_with_invalid_utf8_is_rejected_and_the_others_are_read(write: Write) -> None:
    rows, rejected = consume(read_source(write("a.csv", b"id,name\na,x\nb,\xff\nc,z\n")))
    assert [(r.location, r.values["id"]) for r in rows] == [("line 2", "a"), ("line 4", "c")]
    assert rejected == [Rejection("line 3", "not valid UTF-8 text")]


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ("a,x,extra", "has 3 fields, the header has 2"),
        ("a", "has 1 fields, the header has 2"),
    ],
)
def test_csv_row_with_wrong_field_count_is_rejected(write: Write, row: str, reason: str) -> None:
    rows, rejected = consume(read_source(write("a.csv", f"id,name\n{row}\nb,y\n")))
    assert [(r.location, r.values["id"]) for r in rows] == [("line 3", "b")]
    assert rejected == [Rejection("line 2", reason)]


@pytest.mark.parametrize("quoted", [False, True], ids=["bare", "quoted"])
def test_csv_field_over_the_limit_is_a_malformed_row_not_a_crash(
    write: Write, quoted: bool
) -> None:
    big = "x" * (readers.CSV_FIELD_LIMIT + 1)
    if quoted:
        big = f'"{big}"'
    rows, rejected = consume(read_source(write("a.csv", f"id,name\na,x\nb,{big}\nc,z\n")))
    assert [(r.location, r.values["id"]) for r in rows] == [("line 2", "a"), ("line 4", "c")]
    assert len(rejected) == 1
    assert rejected[0].location == "line 3"
    assert rejected[0].reason.startswith("malformed CSV:")
    assert "field limit" in rejected[0].reason


def test_csv_field_at_the_limit_is_read(write: Write) -> None:
    exact = "x" * readers.CSV_FIELD_LIMIT
    rows, rejected = consume(read_source(write("a.csv", f"id,name\na,{exact}\n")))
    assert rows[0].values["name"] == exact
    assert rejected == []


def test_csv_row_with_a_nul_byte_is_rejected(write: Write) -> None:
    rows, rejected = consume(read_source(write("a.csv", b"id,name\na,x\x00y\nb,z\n")))
    assert [(r.location, r.values["id"]) for r in rows] == [("line 3", "b")]
    assert rejected == [Rejection("line 2", "contains a NUL byte")]


@pytest.mark.parametrize(
    "broken",
    ['b,"open', 'b,"open\nstill open","no" here', 'b,"open\nq,",r'],
    ids=["never-closed", "closed-wrongly-lines-later", "closed-by-a-later-quoted-field"],
)
def test_csv_unterminated_quote_is_malformed_at_its_start_line_and_the_rest_is_read(
    write: Write, broken: str
) -> None:
    # before the reliability suite (#10) an unclosed quote swallowed every later row
    content = f"id,name\na,x\n{broken}\nc,z\nd,w\n"
    rows, rejected = consume(read_source(write("a.csv", content)))
    assert rows[0].values["id"] == "a"
    assert [(r.location, r.values["id"]) for r in rows][-2:] == [
        (f"line {len(content.splitlines()) - 1}", "c"),
        (f"line {len(content.splitlines())}", "d"),
    ]
    assert rejected[0].location == "line 3"
    assert rejected[0].reason.startswith(("malformed CSV:", "has 3 fields"))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "empty"),
        ("\n  \n\n", "empty"),
        ("id,name,id\na,x,b\n", r"line 1: duplicate column\(s\) id$"),
        ("id,,name\na,x,y\n", "empty column name"),
        ("id, ,name\na,x,y\n", "empty column name"),
    ],
    ids=["empty", "whitespace-only", "duplicate-column", "empty-column", "blank-column"],
)
def test_csv_unusable_file_raises(write: Write, content: str, message: str) -> None:
    with pytest.raises(IngestError, match=message):
        read_source(write("a.csv", content))


def test_csv_header_with_invalid_utf8_raises(write: Write) -> None:
    with pytest.raises(IngestError, match=r"line 1: the header is not valid UTF-8"):
        read_source(write("a.csv", b"id,n\xffme\na,x\n"))


def test_csv_utf8_bom_is_not_part_of_the_first_column(write: Write) -> None:
    source = read_source(write("a.csv", "\ufeffid,name\na,x\n".encode()))
    rows, _ = consume(source)
    assert source.columns == ["id", "name"]
    assert rows[0].values == {"id": "a", "name": "x"}


def test_csv_semicolon_delimiter_is_detected(write: Write) -> None:
    source = read_source(write("a.csv", "id;name;lat\na;Foo, Bar;52,1\nb;Baz;53,0\n"))
    rows, rejected = consume(source)
    assert source.columns == ["id", "name", "lat"]
    assert [r.values for r in rows] == [
        {"id": "a", "name": "Foo, Bar", "lat": "52,1"},
        {"id": "b", "name": "Baz", "lat": "53,0"},
    ]
    assert rejected == []


def test_gzip_csv_is_read_like_plain_csv(write: Write) -> None:
    text = 'id,note\na,"two\nlines"\n\nb,y\n'
    plain = read_source(write("a.csv", text))
    packed = read_source(write("a.csv.gz", gzip.compress(text.encode())))
    assert packed.format == "csv"
    assert packed.columns == plain.columns
    plain_rows, _ = consume(plain)
    packed_rows, _ = consume(packed)
    assert packed_rows == plain_rows
    assert locations(packed_rows) == ["line 2", "line 5"]


def test_broken_gzip_raises(write: Write) -> None:
    with pytest.raises(IngestError, match="cannot read file"):
        read_source(write("a.csv.gz", b"this is not gzip"))


@pytest.mark.parametrize("name", ["atms.txt", "atms.xlsx", "atms.gz", "atms"])
def test_unknown_extension_raises(write: Write, name: str) -> None:
    with pytest.raises(IngestError, match="unknown file type"):
        read_source(write(name, "id,name\na,x\n"))


def test_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(IngestError, match="no such file"):
        read_source(tmp_path / "nowhere.csv")


# --- GeoJSON -----------------------------------------------------------------------------


def test_geojson_features_are_numbered_from_1(write: Write) -> None:
    doc = collection(feature(5.1, 52.1, id="a"), feature(6.2, 53.2, id="b", name="B"))
    source = read_source(write("atms.geojson", doc))
    rows, rejected = consume(source)
    assert source.format == "geojson"
    assert source.crs == "EPSG:4326"
    assert source.columns == ["id", "name"]
    assert locations(rows) == ["feature 1", "feature 2"]
    assert rows[1].values == {"id": "b", "name": "B"}
    assert rows[0].geometry is not None
    assert (rows[0].geometry.x, rows[0].geometry.y) == (5.1, 52.1)
    assert rejected == []


def test_geojson_single_feature_document_is_feature_1(write: Write) -> None:
    rows, _ = consume(read_source(write("atm.json", json.dumps(feature(5.0, 52.0, id="a")))))
    assert [(r.location, r.values) for r in rows] == [("feature 1", {"id": "a"})]


def test_geojson_item_that_is_not_a_feature_is_rejected(write: Write) -> None:
    doc = collection(
        feature(5.0, 52.0, id="a"),
        [5.0, 52.0],
        {"type": "Point", "coordinates": [5.0, 52.0]},
        feature(6.0, 53.0, id="d"),
    )
    rows, rejected = consume(read_source(write("a.geojson", doc)))
    assert locations(rows) == ["feature 1", "feature 4"]
    assert rejected == [
        Rejection("feature 2", "not a GeoJSON Feature object"),
        Rejection("feature 3", "not a GeoJSON Feature object"),
    ]


@pytest.mark.parametrize(
    "geometry",
    [
        {"type": "Point", "coordinates": "here"},
        {"type": "Polygon", "coordinates": [[1, 2]]},
        {"type": "Blob", "coordinates": [1, 2]},
    ],
    ids=["point-string", "polygon-flat", "unknown-type"],
)
def test_geojson_invalid_geometry_is_rejected_at_its_feature(
    write: Write, geometry: dict[str, Any]
) -> None:
    bad = {"type": "Feature", "geometry": geometry, "properties": {"id": "b"}}
    doc = collection(feature(5.0, 52.0, id="a"), bad, feature(6.0, 53.0, id="c"))
    rows, rejected = consume(read_source(write("a.geojson", doc)))
    assert locations(rows) == ["feature 1", "feature 3"]
    assert len(rejected) == 1
    assert rejected[0].location == "feature 2"
    assert rejected[0].reason.startswith("invalid geometry")


def test_geojson_feature_without_geometry_has_none(write: Write) -> None:
    doc = collection({"type": "Feature", "geometry": None, "properties": {"id": "a"}})
    rows, rejected = consume(read_source(write("a.geojson", doc)))
    assert rows[0].geometry is None
    assert rows[0].values == {"id": "a"}
    assert rejected == []


@pytest.mark.parametrize("name", ["urn:ogc:def:crs:EPSG::28992", "EPSG:28992"])
def test_geojson_legacy_crs_member_is_reprojected_to_wgs84(write: Write, name: str) -> None:
    crs = {"type": "name", "properties": {"name": name}}
    doc = collection(feature(155000, 463000, id="amersfoort"), crs=crs)
    source = read_source(write("rd.geojson", doc))
    rows, rejected = consume(source)
    assert source.crs == "EPSG:28992"
    assert rejected == []
    point = rows[0].geometry
    assert point is not None
    assert point.x == pytest.approx(5.387, abs=1e-3)
    assert point.y == pytest.approx(52.155, abs=1e-3)


def test_geojson_crs84_member_leaves_coordinates_alone(write: Write) -> None:
    crs = {"type": "name", "properties": {"name": "urn:ogc:def:crs:OGC:1.3:CRS84"}}
    rows, _ = consume(read_source(write("a.geojson", collection(feature(5.1, 52.1), crs=crs))))
    assert rows[0].geometry is not None
    assert (rows[0].geometry.x, rows[0].geometry.y) == (5.1, 52.1)


@pytest.mark.parametrize(
    ("crs", "message"),
    [
        ({"type": "name", "properties": {"name": "EPSG:999999"}}, "unknown CRS"),
        ({"type": "name", "properties": {"name": "not a crs"}}, "unknown CRS"),
        ("EPSG:28992", "unreadable 'crs' member"),
        ({"type": "name"}, "unreadable 'crs' member"),
    ],
)
def test_geojson_unusable_crs_member_raises(write: Write, crs: Any, message: str) -> None:
    with pytest.raises(IngestError, match=message):
        read_source(write("a.geojson", collection(feature(1, 2), crs=crs)))


def test_geojson_broken_json_raises_with_the_line(write: Write) -> None:
    text = '{"type": "FeatureCollection",\n "features": [\n  {"type": "Feature",,}\n]}\n'
    with pytest.raises(IngestError, match="not valid JSON: line 3"):
        read_source(write("a.geojson", text))


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([feature(5.0, 52.0)], "must be an object"),
        ({"type": "Point", "coordinates": [5.0, 52.0]}, "FeatureCollection or Feature"),
        ({"type": "FeatureCollection", "features": {}}, "FeatureCollection or Feature"),
    ],
    ids=["top-level-array", "bare-geometry", "features-not-a-list"],
)
def test_geojson_document_of_the_wrong_shape_raises(write: Write, doc: Any, message: str) -> None:
    with pytest.raises(IngestError, match=message):
        read_source(write("a.geojson", json.dumps(doc)))


def test_geojson_invalid_utf8_raises(write: Write) -> None:
    with pytest.raises(IngestError, match="not valid UTF-8"):
        read_source(write("a.geojson", b'{"type": "FeatureCollection", "features": ["\xff"]}'))


def test_gzip_geojson_is_read(write: Write) -> None:
    doc = collection(feature(5.0, 52.0, id="a"))
    rows, _ = consume(read_source(write("a.geojson.gz", gzip.compress(doc.encode()))))
    assert [(r.location, r.values) for r in rows] == [("feature 1", {"id": "a"})]


def test_geojson_property_with_nul_is_rejected(write: Write) -> None:
    path = write(
        "nul.geojson", collection(feature(5, 52, name="a\x00b"), feature(5, 52, name="ok"))
    )
    rows, rejected = consume(read_source(path))
    assert locations(rows) == ["feature 2"]
    assert rejected == [Rejection("feature 1", "contains a NUL character")]
