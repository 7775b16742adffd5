"""The web pages and the map's data endpoints, over HTTP against a real server, on SQLite and
PostgreSQL: the pages are served with their vendored assets only; the map data is scoped
exactly like the rest of the API (bank A gets bank A's machines, police no money figures, no
key gets 401)."""

from __future__ import annotations

import csv
import gzip
import hashlib
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from atm_risk.api import web
from atm_risk.api.app import create_app
from atm_risk.atms.models import Atm
from atm_risk.clock import FrozenClock
from atm_risk.config import Settings
from atm_risk.tenancy.models import Operator
from tests import two_banks
from tests.api_server import serve
from tests.conftest import DATA

ATMS = two_banks.ATMS
NOW = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
VILD = two_banks.VILD
LEAFLET = web.STATIC_DIR / web.LEAFLET


@pytest.fixture
def site(
    sessions: sessionmaker[Session], database_url: str, write: Any
) -> Iterator[tuple[httpx.Client, dict[str, str]]]:
    clock = FrozenClock(NOW)
    settings = Settings(database_url=database_url, model_path=None)
    two_banks.load(sessions, clock, write, motorway=True)
    two_banks.attack_on_bank_b(sessions, settings, clock)
    keys = two_banks.keys(sessions, NOW, "bank_a", "bank_b", "police", "operator")
    app = create_app(settings, clock=clock)
    web.install(app)
    web.install(app)  # idempotent: app.py may install it too
    with serve(app) as client:
        yield client, keys


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


class Assets(HTMLParser):
    """Every URL a page refers to (scripts, styles, icons, images, links)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for name in ("src", "href", "action"):
            if values.get(name):
                self.urls.append(str(values[name]))
        if values.get("id"):
            self.ids.add(str(values["id"]))


def parse(html: str) -> Assets:
    parser = Assets()
    parser.feed(html)
    return parser


def test_pages_are_served_with_local_assets_only(site: tuple[httpx.Client, Any]) -> None:
    client, _ = site
    for path in ("/map", "/report"):
        page = client.get(path)  # no key needed for the page itself
        assert page.status_code == 200, page.text
        assert page.headers["content-type"].startswith("text/html")
        csp = page.headers["content-security-policy"]
        assert "default-src 'self'" in csp
        assert "connect-src 'self'" in csp
        assets = parse(page.text)
        assert f"/static/{web.LEAFLET}/leaflet.js" in assets.urls
        assert f"/static/{web.LEAFLET}/leaflet.css" in assets.urls
        for url in assets.urls:
            assert url.startswith("/"), (path, url)  # nothing from another host
            if url.startswith("/static/"):
                response = client.get(url)
                assert response.status_code == 200, url
        assert not re.search(r"https?://", page.text), path
    report = parse(client.get("/report").text)
    assert {"machine", "occurred_at", "method", "outcome", "vehicle", "direction", "notes"} <= (
        report.ids
    )
    assert {"r-incident", "r-alert", "r-address", "r-time"} <= report.ids


def test_the_served_leaflet_is_the_pinned_one(site: tuple[httpx.Client, Any]) -> None:
    client, _ = site
    vendor = (LEAFLET / "VENDOR.md").read_text(encoding="utf-8")
    assert "leaflet@1.9.4" in vendor
    assert "BSD-2-Clause" in vendor
    assert "sha512-" in vendor
    recorded = {
        name.removeprefix("./"): digest
        for digest, name in re.findall(r"^([0-9a-f]{64})  (\S+)$", vendor, flags=re.M)
    }
    assert {"leaflet.js", "leaflet.css", "LICENSE", "images/layers.png"} <= set(recorded)
    for name, digest in recorded.items():
        served = client.get(f"/static/{web.LEAFLET}/{name}")
        assert served.status_code == 200, name
        assert hashlib.sha256(served.content).hexdigest() == digest, name
    assert "Copyright (c)" in (LEAFLET / "LICENSE").read_text(encoding="utf-8")
    assert client.get("/static/%2E%2E/web.py").status_code == 404


def ids(doc: dict[str, Any]) -> set[str]:
    return {f["properties"]["id"] for f in doc["features"]}


def db_ids(sessions: sessionmaker[Session], code: str | None = None) -> set[str]:
    query = select(Operator.code, Atm.atm_id).join(Operator, Atm.operator_id == Operator.id)
    if code is not None:
        query = query.where(Operator.code == code)
    with sessions() as s:
        return {f"{c}/{a}" for c, a in s.execute(query)}


def test_machines_geojson_is_scoped_to_the_caller(
    site: tuple[httpx.Client, dict[str, str]], sessions: sessionmaker[Session]
) -> None:
    client, keys = site
    url = "/api/v1/map/machines.geojson"
    docs = {}
    for who, key in keys.items():
        response = client.get(url, headers=bearer(key))
        assert response.status_code == 200, (who, response.text)
        assert response.headers["content-type"] == "application/geo+json"
        docs[who] = response.json()
    assert ids(docs["bank_a"]) == db_ids(sessions, "banka") == {"banka/A-UTR-1", "banka/A-GRO-1"}
    assert ids(docs["bank_b"]) == db_ids(sessions, "bankb")
    assert ids(docs["operator"]) == db_ids(sessions)
    assert ids(docs["police"]) == {"banka/A-UTR-1", "bankb/B-UTR-1", "bankb/B-UTR-2"}
    bank_a_text = client.get(url, headers=bearer(keys["bank_a"])).text
    assert "bankb" not in bank_a_text
    assert "B-UTR" not in bank_a_text
    assert docs["bank_a"]["properties"]["count"] == 2
    # what a click shows: score, probability, band, reasons, action and why
    first = docs["bank_b"]["features"][0]
    assert first["geometry"]["type"] == "Point"
    props = {f["properties"]["id"]: f["properties"] for f in docs["bank_b"]["features"]}
    shut = props["bankb/B-UTR-1"]
    assert shut["action"] == "temporary_shutdown"
    assert shut["risk_band"] in {"high", "elevated", "low"}
    assert shut["action_reasons"]
    assert all(isinstance(t, str) for t in shut["action_reasons"] + shut["reasons"])
    assert 0 <= shut["probability"] <= 1
    assert shut["address"] == "Vredenburg 3"
    assert "expected_loss_eur" in shut  # banks see their money figures
    # police: their region, and never banks' money figures
    police = client.get(url, headers=bearer(keys["police"])).text
    assert "expected_loss" not in police
    assert "hardening" not in police
    assert not re.search(r"EUR\s?\d", police)
    assert "A-GRO-1" not in police


MAP_DATA = (
    "/api/v1/map/machines.geojson",
    "/api/v1/map/boundaries.geojson",
    "/api/v1/map/motorway.geojson",
    "/api/v1/me",
)


def test_map_data_needs_a_key(site: tuple[httpx.Client, Any]) -> None:
    client, _ = site
    for path in MAP_DATA:
        assert client.get(path).status_code == 401, path
        bad = client.get(path, headers=bearer("atmr_00000000_nonsense"))
        assert bad.status_code == 401, path
        assert "features" not in bad.text


def test_boundaries_are_simplified_polygons(site: tuple[httpx.Client, dict[str, str]]) -> None:
    client, keys = site
    response = client.get("/api/v1/map/boundaries.geojson", headers=bearer(keys["bank_a"]))
    assert response.status_code == 200
    doc = response.json()
    assert doc["properties"]["layers"] == ["nl_provinces"]  # de_states is not loaded here
    names = {f["properties"]["name"] for f in doc["features"]}
    assert len(names) == 12
    assert {"Utrecht", "Groningen", "Zeeland"} <= names
    assert {f["geometry"]["type"] for f in doc["features"]} <= {"Polygon", "MultiPolygon"}
    # simplified for a country map: far smaller than the shipped file
    assert len(response.content) < (DATA / "nl_admin_cbs/provincies_2022.geojson").stat().st_size
    again = client.get("/api/v1/map/boundaries.geojson", headers=bearer(keys["police"]))
    assert again.content == response.content  # cached, and the same for everyone


def test_motorway_points_are_the_access_points(site: tuple[httpx.Client, dict[str, str]]) -> None:
    client, keys = site
    with gzip.open(VILD, "rt", encoding="utf-8") as fh:
        access = [r for r in csv.DictReader(fh) if r["motorway_access"] == "1"]
    response = client.get("/api/v1/map/motorway.geojson", headers=bearer(keys["police"]))
    assert response.status_code == 200
    features = response.json()["features"]
    assert len(features) == len(access)
    assert all(f["geometry"]["type"] == "Point" for f in features)
    labels = [f["properties"]["label"] for f in features]
    assert all(labels)
    assert any(label.startswith("A12 ") for label in labels)


def test_me_tells_role_and_tenant_never_the_key(
    site: tuple[httpx.Client, dict[str, str]],
) -> None:
    client, keys = site
    for who, expected in (
        ("bank_a", {"role": "bank", "tenant": "banka", "regions": [], "sees_money": True}),
        ("police", {"role": "police", "tenant": None, "regions": ["Utrecht"], "sees_money": False}),
        ("operator", {"role": "operator", "tenant": None, "regions": [], "sees_money": True}),
    ):
        response = client.get("/api/v1/me", headers=bearer(keys[who]))
        assert response.status_code == 200
        doc = response.json()
        assert {k: doc[k] for k in expected} == expected
        secret = keys[who].split("_", 2)[2]
        assert secret not in response.text
        assert doc["key_prefix"] == keys[who].split("_")[1]


def test_map_endpoints_are_in_the_openapi_document_and_pages_are_not(
    site: tuple[httpx.Client, Any],
) -> None:
    client, _ = site
    paths = client.get("/openapi.json").json()["paths"]
    assert set(MAP_DATA) <= set(paths)
    assert "/map" not in paths
    assert "/report" not in paths
