"""PostGIS on PostgreSQL (migration 0009) and the spatial queries on both backends.

The schema: from empty, `alembic upgrade head` (the documented command, run as a user would)
gives generated geometry columns and GiST indexes (read from the pg catalog); a downgrade to
0008 (the revision before) removes them and the extension, an upgrade brings them back, and
the data survives.

The queries: machines near a point (``gang_active``) and the map's ``bbox`` give the same
answer on SQLite and PostgreSQL, checked against a brute-force reference on a seeded world with
machines placed on the very edges; the haversine distance cross-checks the metric one.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from pyproj import Transformer
from sqlalchemy import Connection, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from atm_risk.alerts.rules import machines_near, nearby
from atm_risk.api import web
from atm_risk.api.app import create_app
from atm_risk.atms.models import Atm, AtmStatus
from atm_risk.clock import FrozenClock
from atm_risk.config import Settings
from atm_risk.db import make_engine, session_factory
from atm_risk.ingest.run import ingest_atms, ingest_incidents
from atm_risk.migrate import current_revision, head_revision
from atm_risk.postgis import in_box
from atm_risk.store import metadata
from atm_risk.tenancy.models import Operator
from tests import two_banks
from tests.api_server import serve
from tests.conftest import REPO, PostgresServer

ATM_RISK = str(Path(sys.executable).with_name("atm-risk"))  # the installed command
NOW = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
CENTRE = (5.1214, 52.0907)  # Utrecht

# --------------------------------------------------------------------------- schema

GENERATED = {
    ("atms", "geometry(Point,4326)"),
    ("incidents", "geometry(Point,4326)"),
    ("area_features", "geometry(Geometry,4326)"),
}
GIST = {
    ("atms", "ix_atms_geom"),
    ("incidents", "ix_incidents_geom"),
    ("area_features", "ix_area_features_geom"),
}


def catalog(conn: Connection) -> dict[str, Any]:
    """What PostgreSQL itself says: the extension, the geom columns, the GiST indexes."""
    columns = conn.execute(
        text(
            "SELECT c.relname, format_type(a.atttypid, a.atttypmod), a.attgenerated "
            "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind = 'r' AND a.attname = 'geom' "
            "AND NOT a.attisdropped"
        )
    ).all()
    indexes = conn.execute(
        text(
            "SELECT t.relname, i.relname, pg_get_indexdef(i.oid) FROM pg_index x "
            "JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid "
            "JOIN pg_am am ON am.oid = i.relam JOIN pg_namespace n ON n.oid = t.relnamespace "
            "WHERE am.amname = 'gist' AND n.nspname = 'public'"
        )
    ).all()
    return {
        "postgis": conn.scalar(text("SELECT extversion FROM pg_extension WHERE extname='postgis'")),
        "generated": {(table, kind) for table, kind, how in columns if how == "s"},
        "columns": {table for table, _, _ in columns},
        "gist": {(table, name) for table, name, _ in indexes},
        "gist_on_geom": all("USING gist (geom)" in d for _, _, d in indexes),
    }


def geometry_checks(conn: Connection) -> dict[str, Any]:
    """Every geom equals its lon/lat (or WKB); counts per table."""
    return {
        "atms": conn.execute(
            text(
                "SELECT count(*), count(*) FILTER (WHERE geom IS NOT NULL AND ST_X(geom) = lon "
                "AND ST_Y(geom) = lat AND ST_SRID(geom) = 4326) FROM atms"
            )
        ).one(),
        "incidents": conn.execute(
            text(
                "SELECT count(*), count(*) FILTER (WHERE geom IS NOT NULL AND ST_X(geom) = lon "
                "AND ST_Y(geom) = lat) FROM incidents"
            )
        ).one(),
        "area_features": conn.execute(
            text(
                "SELECT count(*), count(*) FILTER (WHERE ST_Equals(geom, "
                "ST_GeomFromWKB(geometry_wkb, 4326))) FROM area_features"
            )
        ).one(),
        "utrecht": conn.scalar(
            text(
                "SELECT f.name FROM area_features f, atms a WHERE a.atm_id = 'A-UTR-1' "
                "AND ST_Contains(f.geom, a.geom)"
            )
        ),
    }


def run(*args: str, url: str) -> str:
    env = {**os.environ, "ATM_RISK_DATABASE_URL": url}
    done = subprocess.run(
        args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


@pytest.mark.postgres
def test_postgis_schema_from_empty_and_round_trip(
    postgres_server: PostgresServer, write: Any
) -> None:
    url = postgres_server.create_database()
    # what a user does: ATM_RISK_DATABASE_URL and `alembic upgrade head` in the repository
    run(sys.executable, "-m", "alembic", "upgrade", "head", url=url)
    engine = make_engine(url)
    sessions = session_factory(engine)
    try:
        assert current_revision(engine) == head_revision() == "0009"
        with engine.connect() as conn:
            before = catalog(conn)
        assert before["postgis"]
        assert before["generated"] == GENERATED
        assert before["gist"] == GIST
        assert before["gist_on_geom"]

        clock = FrozenClock(NOW)
        two_banks.load(sessions, clock, write, motorway=False)
        incidents = (
            "incident_id,occurred_at,country,municipality,lat,lon,geocode_precision,method\n"
            "P1,2026-11-01T03:00,NL,Utrecht,52.09,5.12,exact,explosive_solid\n"
            "P2,2026-11-02T03:00,NL,Zeist,,,none,ram_raid\n"
        )
        report = ingest_incidents(sessions, path=write("i.csv", incidents), clock=clock)
        assert report.summary_line() == "accepted 2, rejected 0", report.rejections
        with engine.connect() as conn:
            loaded = geometry_checks(conn)
        assert loaded["atms"] == (4, 4)
        assert loaded["incidents"] == (2, 1)  # no lon/lat, no geometry
        assert loaded["area_features"] == (12, 12)
        assert loaded["utrecht"] == "Utrecht"
        # the database keeps geom in step with lon/lat: no application code involved
        with sessions.begin() as s:
            s.execute(update(Atm).where(Atm.atm_id == "A-GRO-1").values(lon=5.0, lat=52.0))
        with engine.connect() as conn:
            assert geometry_checks(conn)["atms"] == (4, 4)

        out = run(ATM_RISK, "db", "downgrade", "0008", url=url)
        assert "database at revision 0008" in out
        with engine.connect() as conn:
            down = catalog(conn)
            assert down == {
                "postgis": None,
                "generated": set(),
                "columns": set(),
                "gist": set(),
                "gist_on_geom": True,
            }
            assert conn.scalar(text("SELECT count(*) FROM atms")) == 4
            assert conn.scalar(text("SELECT count(*) FROM area_features")) == 12
            # 0008 without PostGIS is the schema of the models
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, metadata) == []

        out = run(ATM_RISK, "db", "upgrade", url=url)
        assert "database at revision 0009" in out
        # A server process caches PostGIS's type ids: after the extension was dropped and made
        # again, only new connections work (processes restart on an upgrade anyway).
        engine.dispose()
        with engine.connect() as conn:
            assert catalog(conn) == before
            assert geometry_checks(conn) == {**loaded, "atms": (4, 4)}  # filled for old rows
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_downgrade_keeps_a_postgis_something_else_uses(postgres_server: PostgresServer) -> None:
    url = postgres_server.create_database()
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE EXTENSION postgis"))
            conn.execute(text("CREATE TABLE theirs (g geometry(Point, 4326))"))
        run(ATM_RISK, "db", "upgrade", url=url)
        run(ATM_RISK, "db", "downgrade", "0008", url=url)
        with engine.connect() as conn:
            after = catalog(conn)
        assert after["postgis"]  # not dropped from under someone else's table
        assert after["generated"] == set()
        assert after["gist"] == set()
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- queries

TO_METRIC = Transformer.from_crs("EPSG:4326", "EPSG:3035", always_xy=True)
TO_LONLAT = Transformer.from_crs("EPSG:3035", "EPSG:4326", always_xy=True)


def world(seed: int = 7) -> str:
    """About 1,200 machines of two banks within ~40 km of Utrecht (every tenth removed), pairs
    placed 1 cm inside / outside 2 km and 10 km from the centre in metric terms (M1200..M1207)
    and four 1 cm inside the 10 km disc at its furthest lon/lat (M1208..M1211)."""
    rng = np.random.default_rng(seed)
    lon = CENTRE[0] + rng.uniform(-0.6, 0.6, 1200)
    lat = CENTRE[1] + rng.uniform(-0.35, 0.35, 1200)
    cx, cy = TO_METRIC.transform(*CENTRE)
    for k, radius in enumerate((2000.0, 2000.0, 10000.0, 10000.0)):
        for j, delta in enumerate((-0.01, 0.01)):
            angle = 0.7 * k + j
            x = cx + (radius + delta) * math.cos(angle)
            y = cy + (radius + delta) * math.sin(angle)
            elon, elat = TO_LONLAT.transform(x, y)
            lon, lat = np.append(lon, elon), np.append(lat, elat)
    # the four points of the 10 km disc (1 cm inside) furthest west, south, east and north:
    # the lon/lat box that PostGIS searches must reach them
    angles = np.linspace(0, 2 * np.pi, 200_000, endpoint=False)
    ring_lon, ring_lat = TO_LONLAT.transform(
        cx + 9999.99 * np.cos(angles), cy + 9999.99 * np.sin(angles)
    )
    for k in (np.argmin(ring_lon), np.argmin(ring_lat), np.argmax(ring_lon), np.argmax(ring_lat)):
        lon, lat = np.append(lon, ring_lon[k]), np.append(lat, ring_lat[k])
    lines = ["atm_id,operator,lat,lon,status,site_type,city"]
    for n, (x, y) in enumerate(zip(lon, lat, strict=True)):
        bank = "BankA" if n % 2 else "BankB"
        status = "removed" if n % 10 == 3 else "active"
        lines.append(f"M{n},{bank},{float(y)!r},{float(x)!r},{status},shop,Utrecht")
    return "\n".join(lines) + "\n"


def stored(sessions: sessionmaker[Session]) -> list[tuple[int, str, str, float, float, str]]:
    with sessions() as s:
        return [
            tuple(r)  # type: ignore[misc]
            for r in s.execute(
                select(Atm.id, Operator.code, Atm.atm_id, Atm.lon, Atm.lat, Atm.status)
                .join(Operator, Atm.operator_id == Operator.id)
                .order_by(Atm.id)
            )
        ]


def haversine_m(lon1: Any, lat1: Any, lon2: float, lat2: float) -> Any:
    p1, p2 = np.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, np.radians(lon2 - np.asarray(lon1))
    a = np.sin(dp / 2) ** 2 + np.cos(p1) * math.cos(p2) * np.sin(dl / 2) ** 2
    return 2 * 6371008.8 * np.arcsin(np.sqrt(a))


@pytest.fixture
def seeded(sessions: sessionmaker[Session], write: Any) -> list[Any]:
    report = ingest_atms(sessions, path=write("world.csv", world()), clock=FrozenClock(NOW))
    assert report.rejections == []
    return stored(sessions)


def test_machines_near_equals_brute_force_on_both_backends(
    sessions: sessionmaker[Session], database_url: str, seeded: list[Any]
) -> None:
    settings = Settings(database_url=database_url, model_path=None)
    assert settings.metric_crs == "EPSG:3035"  # the reference below projects to it
    active = [r for r in seeded if r[5] == AtmStatus.ACTIVE]
    pks = np.array([r[0] for r in active])
    x, y = TO_METRIC.transform([r[3] for r in active], [r[4] for r in active])
    rng = np.random.default_rng(11)
    centres = [CENTRE, *zip(rng.uniform(4.7, 5.5, 25), rng.uniform(51.8, 52.4, 25), strict=True)]
    checked = 0
    with sessions() as s:
        for lon, lat in centres:
            for radius in (2000.0, 10000.0, 25000.0):
                got = machines_near(s, settings, lon, lat, radius)
                cx, cy = TO_METRIC.transform(lon, lat)
                dist = np.hypot(np.asarray(x) - cx, np.asarray(y) - cy)
                inside = np.flatnonzero(dist <= radius)
                expected = sorted(zip(dist[inside].tolist(), pks[inside].tolist(), strict=True))
                assert [m["atm_pk"] for m in got] == [pk for _, pk in expected], (lon, lat)
                assert np.allclose([m["distance_m"] for m in got], [d for d, _ in expected])
                # independent of the projection: the great-circle distance agrees to 0.3 %
                hav = haversine_m([r[3] for r in active], [r[4] for r in active], lon, lat)
                ids = {m["atm_pk"] for m in got}
                assert set(pks[hav < radius * 0.997].tolist()) <= ids
                assert not ids & set(pks[hav > radius * 1.003].tolist())
                checked += len(got)
    assert checked > 5000  # the test looked at many machines, not empty answers
    # the edge pairs around Utrecht: 1 cm inside is in, 1 cm outside is out
    with sessions() as s:
        near = {m["atm_id"] for m in machines_near(s, settings, *CENTRE, 10000.0)}
    assert {"M1204", "M1206", "M1208", "M1209", "M1210", "M1211"} <= near  # see world()
    assert not {"M1205", "M1207"} & near


def test_nearby_keeps_the_nearest_of_each_operator_and_counts_the_rest(
    sessions: sessionmaker[Session], database_url: str, seeded: list[Any]
) -> None:
    """The alert's trimmed view equals the full answer cut per scope, with exact counts."""
    settings = Settings(database_url=database_url, model_path=None)
    shutdown_m = settings.decisions.shutdown_radius_km * 1000
    rng = np.random.default_rng(5)
    centres = [CENTRE, *zip(rng.uniform(4.7, 5.5, 10), rng.uniform(51.8, 52.4, 10), strict=True)]
    operators_seen: set[str] = set()
    with sessions() as s:
        for lon, lat in centres:
            full = machines_near(s, settings, lon, lat, 25000.0)
            trimmed = nearby(s, settings, lon, lat, 25000.0, keep=7)
            assert set(trimmed.counts) == {m["operator"] for m in full}
            for operator in [None, *trimmed.counts]:
                mine = [m for m in full if operator is None or m["operator"] == operator]
                shown, total, shutdown = trimmed.scope(operator)
                assert shown[:7] == mine[:7], (lon, lat, operator)
                assert total == len(mine)
                assert shutdown == sum(m["distance_m"] <= shutdown_m for m in mine)
            operators_seen |= set(trimmed.counts)
            assert len(trimmed.machines) <= 7 * (1 + len(trimmed.counts))
    assert len(operators_seen) >= 2  # the scopes were really cut


@pytest.mark.parametrize(
    "backend", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
def test_the_bbox_filter_uses_the_gist_index(
    sessions: sessionmaker[Session], backend: str, seeded: list[Any]
) -> None:
    assert backend == "postgresql"
    query = select(Atm.id).where(*in_box((5.0, 52.0, 5.2, 52.1), Atm, postgis=True))
    with sessions() as s:
        s.execute(text("ANALYZE atms"))
        s.execute(text("SET LOCAL enable_seqscan = off"))  # an unusable index would show
        sql = query.compile(s.get_bind(), compile_kwargs={"literal_binds": True})
        plan = "\n".join(s.scalars(text(f"EXPLAIN {sql}")))
    assert "ix_atms_geom" in plan, plan


@pytest.fixture
def client(
    sessions: sessionmaker[Session], database_url: str, seeded: list[Any]
) -> Iterator[tuple[httpx.Client, dict[str, str]]]:
    settings = Settings(database_url=database_url, model_path=None)
    keys = two_banks.keys(sessions, NOW, "bank_a", "operator")
    app = create_app(settings, clock=FrozenClock(NOW))
    web.install(app)
    with serve(app) as http:
        yield http, keys


def test_map_bbox_equals_brute_force_on_both_backends(
    client: tuple[httpx.Client, dict[str, str]], seeded: list[Any]
) -> None:
    http, keys = client
    rng = np.random.default_rng(5)
    boxes = []
    for _ in range(20):
        lons = np.sort(rng.uniform(4.5, 5.8, 2))
        lats = np.sort(rng.uniform(51.7, 52.5, 2))
        boxes.append((lons[0], lats[0], lons[1], lats[1]))
    # edges through stored machines: edges are included
    a, b = seeded[10], seeded[20]
    boxes.append((min(a[3], b[3]), min(a[4], b[4]), max(a[3], b[3]), max(a[4], b[4])))
    boxes.append((a[3], a[4], a[3], a[4]))  # a single point
    total = 0
    for box in boxes:
        param = ",".join(repr(float(v)) for v in box)
        for who, tenant in (("operator", None), ("bank_a", "banka")):
            response = http.get(
                "/api/v1/map/machines.geojson",
                params={"bbox": param},
                headers={"Authorization": f"Bearer {keys[who]}"},
            )
            assert response.status_code == 200, response.text
            got = {f["properties"]["id"] for f in response.json()["features"]}
            expected = {
                f"{code}/{atm_id}"
                for _, code, atm_id, lon, lat, _ in seeded
                if box[0] <= lon <= box[2] and box[1] <= lat <= box[3] and tenant in (None, code)
            }
            assert got == expected, (who, box)
            total += len(got)
    assert total > 1000
    single = http.get(
        "/api/v1/map/machines.geojson",
        params={"bbox": f"{a[3]!r},{a[4]!r},{a[3]!r},{a[4]!r}"},
        headers={"Authorization": f"Bearer {keys['operator']}"},
    ).json()
    assert [f["properties"]["id"] for f in single["features"]] == [f"{a[1]}/{a[2]}"]


BAD_BOXES = {
    "5,52,6": "four numbers",
    "5,52,x,53": "must be numbers",
    "5,52,nan,53": "finite",
    "6,52,5,53": "min_lon <= max_lon",
    "5,53,6,52": "min_lat <= max_lat",
    "5,52,181,53": "<= 180",
}


def test_a_bad_bbox_is_a_clear_422(
    client: tuple[httpx.Client, dict[str, str]], seeded: list[Any]
) -> None:
    http, keys = client
    auth = {"Authorization": f"Bearer {keys['operator']}"}
    for bbox, why in BAD_BOXES.items():
        response = http.get("/api/v1/map/machines.geojson", params={"bbox": bbox}, headers=auth)
        assert response.status_code == 422, bbox
        assert why in response.text, (bbox, response.text)
    everything = http.get("/api/v1/map/machines.geojson", headers=auth).json()
    assert len(everything["features"]) == len(seeded) == 1212  # no bbox: every machine
