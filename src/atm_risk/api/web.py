"""The web pages (the map and the attack report form) and the map's data endpoints.

The pages themselves need no key: they are static HTML and JavaScript that read the key from
the URL fragment (``/map#key=...``, never sent to the server) or a prompt, keep it in the
tab's sessionStorage and call the API with ``Authorization: Bearer``. Every data endpoint
here needs a key; the machines go through ``deps.scope_atms`` like every other machine query,
and police never receive money figures.

Leaflet is vendored (``static/vendor/leaflet-1.9.4``, see its VENDOR.md): the pages load
nothing from outside the server, which their Content-Security-Policy also enforces.

Install on an app with :func:`install` (the router and the ``/static`` mount).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
import shapely
from fastapi import APIRouter, FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session

from atm_risk import __version__
from atm_risk.api.deps import DB, Ctx, Principal
from atm_risk.api.routes import machine_view, machines_with_latest_score
from atm_risk.areas.service import load_layer
from atm_risk.atms.models import Atm
from atm_risk.incidents.models import AttackMethod, Outcome
from atm_risk.incidents.schemas import COUNTRY_ZONES
from atm_risk.postgis import in_box, is_postgis, parse_bbox
from atm_risk.regions import layer_stamps
from atm_risk.risk.models import RiskScore
from atm_risk.tenancy.keys import Scope

HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"
TEMPLATES_DIR = HERE / "templates"
LEAFLET = "vendor/leaflet-1.9.4"

BASEMAP_LAYERS = ("nl_provinces", "de_states")
MOTORWAY_LAYER = "nl_vild_points"
# Douglas-Peucker tolerance in degrees (about 300-500 m): invisible on a country map, and
# it shrinks the provinces and states to a few hundred kB.
BOUNDARY_TOLERANCE_DEG = 0.004
COORD_DECIMALS = 5
GEOJSON = "application/geo+json"

# The pages may talk to their own server only: no CDN, tiles, fonts or beacons elsewhere.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "style-src 'self'; script-src 'self'; connect-src 'self'; font-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}

METHOD_LABELS = {
    AttackMethod.EXPLOSIVE_SOLID: "Explosives (solid)",
    AttackMethod.EXPLOSIVE_GAS: "Gas explosion",
    AttackMethod.EXPLOSIVE_UNSPECIFIED: "Explosion (type unknown)",
    AttackMethod.RAM_RAID: "Ram raid",
    AttackMethod.BURGLARY: "Burglary / forced entry",
    AttackMethod.OTHER: "Other",
}
OUTCOME_LABELS = {
    Outcome.LOOT: "Cash taken",
    Outcome.NO_LOOT: "Machine opened, no cash taken",
    Outcome.ATTEMPT_FAILED: "Attempt failed",
    Outcome.UNKNOWN: "Not known yet",
}

router = APIRouter()
templates = Jinja2Templates(directory=str(TEMPLATES_DIR))

# Area layers change only when re-ingested: their GeoJSON is cached per layer version.
_CACHE: dict[tuple[str, ...], bytes] = {}
_CACHE_LOCK = threading.Lock()


def install(app: FastAPI) -> None:
    """Add the pages, the map endpoints and the ``/static`` files to ``app`` (once)."""
    if getattr(app.state, "web_installed", False):
        return
    app.state.web_installed = True
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")


# --------------------------------------------------------------------------- pages


def _page(request: Request, name: str, title: str) -> HTMLResponse:
    response = templates.TemplateResponse(
        request,
        name,
        {
            "title": title,
            "version": __version__,
            "leaflet": LEAFLET,
            "methods": [(str(m), label) for m, label in METHOD_LABELS.items()],
            "outcomes": [(str(o), label) for o, label in OUTCOME_LABELS.items()],
        },
        headers=PAGE_HEADERS,
    )
    assert isinstance(response, HTMLResponse)
    return response


@router.get("/map", response_class=HTMLResponse, include_in_schema=False)
def map_page(request: Request) -> HTMLResponse:
    """The map: machines by risk band, incidents, motorway access, patrol positions."""
    return _page(request, "map.html", "Risk map")


@router.get("/report", response_class=HTMLResponse, include_in_schema=False)
def report_page(request: Request) -> HTMLResponse:
    """Report an attack or attempt; prints a police-ready report of the facts."""
    return _page(request, "report.html", "Report an attack")


# --------------------------------------------------------------------------- data


@router.get("/api/v1/me", summary="Who the key stands for (role, tenant, regions); never the key")
def me(scope: Principal) -> dict[str, Any]:
    return {
        "role": scope.role,
        "tenant": scope.operator_code,
        "regions": sorted(scope.regions),
        "key_prefix": scope.key_prefix,
        "sees_money": scope.sees_money,
    }


def _texts(items: list[dict[str, Any]] | None) -> list[str]:
    return [str(i["text"]) for i in (items or []) if i.get("text")]


def _map_feature(atm: Atm, code: str, score: RiskScore | None, scope: Scope) -> dict[str, Any]:
    # _machine is the API's one view of a machine: it drops money figures for police.
    m = machine_view(atm, code, score, scope)
    props: dict[str, Any] = {
        "id": f"{code}/{atm.atm_id}",
        "operator": code,
        "atm_id": atm.atm_id,
        "address": m["address"],
        "city": m["city"],
        "site_type": m["site_type"],
        "status": str(atm.status),
        # the zone a report on this machine gives its local time in
        "timezone": COUNTRY_ZONES.get(atm.country or ""),
        "night_closure": m["night_closure"],
        "rank": m.get("rank"),
        "score": m.get("score"),
        "probability": m.get("probability"),
        "risk_band": m.get("risk_band"),
        "action": m.get("action"),
        "action_reasons": _texts(m.get("action_reasons")),
        "reasons": _texts(m.get("reasons")),
    }
    if scope.sees_money and "expected_loss_eur" in m:
        props["expected_loss_eur"] = m["expected_loss_eur"]
    return {
        "type": "Feature",
        "geometry": {
            "type": "Point",
            "coordinates": [round(atm.lon, COORD_DECIMALS), round(atm.lat, COORD_DECIMALS)],
        },
        "properties": props,
    }


@router.get(
    "/api/v1/map/machines.geojson",
    summary="Every machine the caller may see, with its latest risk, as one GeoJSON",
    responses={200: {"content": {GEOJSON: {}}}},
)
def map_machines(
    ctx: Ctx,
    db: DB,
    scope: Principal,
    bbox: Annotated[
        str | None,
        Query(
            max_length=200,
            description="Only machines in this box: min_lon,min_lat,max_lon,max_lat (WGS84, "
            "edges included)",
            examples=["4.7,52.0,5.3,52.2"],
        ),
    ] = None,
) -> Response:
    run, query = machines_with_latest_score(ctx, db, scope)
    if bbox is not None:
        try:
            box = parse_bbox(bbox)
        except ValueError as exc:
            raise HTTPException(422, [{"loc": ["query", "bbox"], "msg": str(exc)}]) from exc
        query = query.where(*in_box(box, Atm, postgis=is_postgis(db)))
    rows = db.execute(query.order_by(Atm.id)).all()
    features = [_map_feature(atm, code, score, scope) for atm, code, score in rows]
    doc = {
        "type": "FeatureCollection",
        "features": features,
        "properties": {
            "count": len(features),
            "run_id": run.id if run else None,
            "as_of": run.as_of.isoformat() if run else None,
            "horizon_days": run.horizon_days if run else None,
        },
    }
    return Response(json.dumps(doc, separators=(",", ":")), media_type=GEOJSON)


def _cached(key: tuple[str, ...], build: Any) -> bytes:
    with _CACHE_LOCK:
        found = _CACHE.get(key)
    if found is None:
        found = build()
        with _CACHE_LOCK:
            if len(_CACHE) > 32:
                _CACHE.clear()
            _CACHE[key] = found
    return found


def _geometry_json(geom: Any) -> Any:
    rounded = shapely.transform(geom, lambda xy: np.round(xy, COORD_DECIMALS))
    return json.loads(shapely.to_geojson(rounded))


def _boundaries(db: Session, names: list[str]) -> bytes:
    features: list[dict[str, Any]] = []
    for name in names:
        frame = load_layer(db, name)
        geoms = shapely.make_valid(frame.geometry.to_numpy())
        simple = shapely.simplify(geoms, BOUNDARY_TOLERANCE_DEG, preserve_topology=True)
        for label, geom in zip(frame["feature_name"], simple, strict=True):
            if geom is None or geom.is_empty:
                continue
            features.append(
                {
                    "type": "Feature",
                    "geometry": _geometry_json(geom),
                    "properties": {"layer": name, "name": None if pd.isna(label) else label},
                }
            )
    doc = {"type": "FeatureCollection", "features": features, "properties": {"layers": names}}
    return json.dumps(doc, separators=(",", ":")).encode()


@router.get(
    "/api/v1/map/boundaries.geojson",
    summary="The basemap: loaded province/state boundaries, simplified for a country map",
    responses={200: {"content": {GEOJSON: {}}}},
)
def map_boundaries(ctx: Ctx, db: DB, scope: Principal) -> Response:
    stamps = layer_stamps(db)
    names = [n for n in BASEMAP_LAYERS if n in stamps]
    key = ("boundaries", ctx.settings.database_url, *(stamps[n] for n in names))
    body = _cached(key, lambda: _boundaries(db, names))
    return Response(body, media_type=GEOJSON)


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in {"1", "true", "1.0", "yes"}


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return str(value).strip()


def _motorway_label(row: dict[str, Any]) -> str:
    road = _text(row.get("road_number"))
    exit_no = _text(row.get("exit_number"))
    name = _text(row.get("name")) or _text(row.get("feature_name"))
    kind = "exit" if _text(row.get("category")) == "exit" else "junction"
    return " ".join(p for p in (road, kind, exit_no, name) if p)


def _motorway(db: Session) -> bytes:
    frame = load_layer(db, MOTORWAY_LAYER)
    if "motorway_access" in frame:
        frame = frame[[_truthy(v) for v in frame["motorway_access"]]]
    features = [
        {
            "type": "Feature",
            "geometry": {
                "type": "Point",
                "coordinates": [round(geom.x, COORD_DECIMALS), round(geom.y, COORD_DECIMALS)],
            },
            "properties": {"label": _motorway_label(row)},
        }
        for geom, row in zip(frame.geometry, frame.to_dict("records"), strict=True)
        if geom is not None and not geom.is_empty
    ]
    doc = {"type": "FeatureCollection", "features": features}
    return json.dumps(doc, separators=(",", ":")).encode()


@router.get(
    "/api/v1/map/motorway.geojson",
    summary="Motorway access points (exits and junctions, NL VILD) for the map",
    responses={200: {"content": {GEOJSON: {}}}},
)
def map_motorway(ctx: Ctx, db: DB, scope: Principal) -> Response:
    stamp = layer_stamps(db).get(MOTORWAY_LAYER)
    if stamp is None:
        body = b'{"type":"FeatureCollection","features":[]}'
    else:
        key = ("motorway", ctx.settings.database_url, stamp)
        body = _cached(key, lambda: _motorway(db))
    return Response(body, media_type=GEOJSON)
