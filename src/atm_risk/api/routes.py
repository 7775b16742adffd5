"""The /api/v1 endpoints. Every machine-derived answer goes through ``deps.scope_atms`` (or
``machine_visible``); what a principal may not see answers 404, like what does not exist."""

from __future__ import annotations

import csv
import io
import json
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, or_, select

from atm_risk.alerts.ack import AckError, acknowledge, verify_link
from atm_risk.alerts.models import Alert, AlertKind, Silence
from atm_risk.alerts.service import ReportError, report_incident
from atm_risk.api.cache import Encoded, RunCache
from atm_risk.api.deps import DB, Ctx, Principal, machine_visible, not_found, scope_atms
from atm_risk.atms.models import Atm
from atm_risk.db import transaction
from atm_risk.decisions.plans import PlanError, hardening_plan, patrol_plan
from atm_risk.decisions.report import hardening_json, patrol_geojson, patrol_json
from atm_risk.incidents.models import AttackMethod, Incident, Outcome
from atm_risk.regions import machine_regions, region_of
from atm_risk.risk.models import RiskRun, RiskScore, RunStatus
from atm_risk.risk.service import latest_run
from atm_risk.tenancy.keys import Scope
from atm_risk.tenancy.models import Operator

router = APIRouter(prefix="/api/v1")
MAX_PAGE = 1000
MAX_SILENCE = timedelta(days=30)


class Band(StrEnum):
    high = "high"
    elevated = "elevated"
    low = "low"


class Action(StrEnum):
    temporary_shutdown = "temporary_shutdown"
    night_closure = "night_closure"
    harden = "harden"
    monitor = "monitor"


Limit = Annotated[int, Query(ge=1, le=MAX_PAGE)]
RowId = Annotated[int, PathParam(ge=1, le=2**31 - 1)]  # the database's integer ids
Offset = Annotated[int, Query(ge=0, le=10_000_000)]


def machine_view(atm: Atm, code: str, score: RiskScore | None, scope: Scope) -> dict[str, Any]:
    out: dict[str, Any] = {
        "operator": code,
        "atm_id": atm.atm_id,
        "lon": atm.lon,
        "lat": atm.lat,
        "address": atm.address,
        "city": atm.city,
        "site_type": str(atm.site_type),
        "night_closure": atm.night_closure,
    }
    if score is not None:
        out |= {
            "rank": score.rank,
            "score": score.score,
            "probability": score.probability,
            "risk_band": score.risk_band,
            "action": score.action,
            "action_reasons": score.action_reasons,
            "reasons": score.reasons,
        }
        if scope.sees_money:
            out["expected_loss_eur"] = score.expected_loss_eur
            out["hardening"] = list(atm.hardening or [])
        else:  # police: no banks' money figures
            out["action_reasons"] = [
                {k: v for k, v in r.items() if "eur" not in k} | {"text": _no_money(r["text"])}
                for r in (score.action_reasons or [])
            ]
    return out


def _without_money(value: Any) -> Any:
    """A copy without any field that holds euros (police answers)."""
    if isinstance(value, dict):
        return {k: _without_money(v) for k, v in value.items() if "eur" not in k.lower()}
    if isinstance(value, list):
        return [_without_money(v) for v in value]
    return value


_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def _json(doc: dict[str, Any]) -> Response:
    """A JSON response from plain data (no per-field encoder pass: the lists are long)."""
    return Response(
        orjson.dumps(doc, default=str, option=_JSON_OPTIONS), media_type="application/json"
    )


def _no_money(text: str) -> str:
    import re

    return re.sub(r"EUR\s?[\d,.]+", "[amount withheld]", text)


def _ranking_query(ctx: Any, db: Any, scope: Scope, run: RiskRun) -> Any:
    """Plain columns (no ORM objects): the ranking is the busiest read."""
    query: Any = (
        select(
            RiskScore.rank,
            Operator.code,
            Atm.atm_id,
            Atm.lon,
            Atm.lat,
            Atm.city,
            Atm.address,
            RiskScore.probability,
            RiskScore.risk_band,
            RiskScore.expected_loss_eur,
            RiskScore.action,
            RiskScore.action_reasons[0]["text"].as_string(),  # the action's own reason
        )
        .join(Atm, RiskScore.atm_pk == Atm.id)
        .join(Operator, Atm.operator_id == Operator.id)
        .where(RiskScore.run_id == run.id)
    )
    return scope_atms(query, scope, db, ctx)


def _page(query: Any, scope: Scope, unfiltered: bool, offset: int, limit: int) -> Any:
    """One page of the ranking. Without filters, an operator's page is a range of the run's
    ranks and a bank's a range of its operator ranks (both 1..n without gaps, indexed with
    the run): an index range scan instead of an OFFSET scan over the pages before it."""
    if unfiltered and scope.role in ("operator", "bank"):
        rank = RiskScore.rank if scope.role == "operator" else RiskScore.operator_rank
        return query.where(rank.between(offset + 1, offset + limit)).order_by(rank).limit(limit)
    return query.order_by(RiskScore.rank).limit(limit).offset(offset)


def machines_with_latest_score(ctx: Any, db: Any, scope: Scope) -> tuple[RiskRun | None, Any]:
    """(latest run, query of (Atm, operator code, RiskScore or None)) scoped to ``scope``."""
    run = latest_run(db)
    query: Any = (
        select(Atm, Operator.code, RiskScore)
        .join(Operator, Atm.operator_id == Operator.id)
        .outerjoin(
            RiskScore,
            (RiskScore.atm_pk == Atm.id) & (RiskScore.run_id == (run.id if run else -1)),
        )
    )
    return run, scope_atms(query, scope, db, ctx)


@router.get("/atms", summary="Machines the caller may see, with their latest risk")
def list_atms(
    ctx: Ctx,
    db: DB,
    scope: Principal,
    band: Band | None = None,
    action: Action | None = None,
    city: Annotated[str | None, Query(max_length=120)] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Response:
    run, query = machines_with_latest_score(ctx, db, scope)
    if band is not None:
        query = query.where(RiskScore.risk_band == str(band))
    if action is not None:
        query = query.where(RiskScore.action == str(action))
    if city:
        query = query.where(func.lower(Atm.city) == city.lower())
    total = db.scalar(select(func.count()).select_from(query.subquery()))
    rows = db.execute(query.order_by(Atm.id).limit(limit).offset(offset)).all()
    return _json(
        {
            "run_id": run.id if run else None,
            "total": total,
            "limit": limit,
            "offset": offset,
            "items": [machine_view(atm, code, score, scope) for atm, code, score in rows],
        }
    )


@router.get("/atms/{operator}/{atm_id}", summary="One machine: score, reasons, action, history")
def get_atm(
    ctx: Ctx,
    db: DB,
    scope: Principal,
    operator: Annotated[str, Field(max_length=64)],
    atm_id: Annotated[str, Field(max_length=64)],
) -> dict[str, Any]:
    row = db.execute(
        select(Atm, Operator.code)
        .join(Operator, Atm.operator_id == Operator.id)
        .where(Operator.code == operator, Atm.atm_id == atm_id)
    ).first()
    if row is None or not machine_visible(db, ctx, scope, row[0]):
        raise not_found("no such machine")
    atm, code = row
    history = db.execute(
        select(RiskScore, RiskRun)
        .join(RiskRun, RiskRun.id == RiskScore.run_id)
        .where(RiskScore.atm_pk == atm.id, RiskRun.status == RunStatus.SUCCEEDED)
        .order_by(RiskRun.as_of.desc(), RiskRun.id.desc())
        .limit(100)
    ).all()
    latest = history[0][0] if history else None
    out = machine_view(atm, code, latest, scope)
    out["history"] = [
        {
            "run_id": run.id,
            "as_of": run.as_of.isoformat(),
            "rank": s.rank,
            "probability": s.probability,
            "risk_band": s.risk_band,
            "action": s.action,
        }
        | ({"expected_loss_eur": s.expected_loss_eur} if scope.sees_money else {})
        for s, run in history
    ]
    return out


RANKING_FIELDS = (
    "rank",
    "operator",
    "atm_id",
    "lon",
    "lat",
    "city",
    "address",
    "probability",
    "risk_band",
    "expected_loss_eur",
    "action",
    "action_reason",
)


@router.get(
    "/ranking",
    summary="The latest ranking (JSON, CSV, GeoJSON or GeoPackage), scoped to the caller",
    responses={200: {"content": {"text/csv": {}, "application/geo+json": {}}}},
)
async def get_ranking(
    request: Request,
    ctx: Ctx,
    scope: Principal,
    format: Literal["json", "csv", "geojson", "gpkg"] = "json",
    band: Band | None = None,
    action: Action | None = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Any:
    # the busiest read: its database work in one hop to the thread pool
    cache: RunCache = request.app.state.run_cache
    args = (ctx, cache, scope, format, band, action, limit, offset)
    return await run_in_threadpool(_ranking, *args)


def _ranking(
    ctx: Any,
    cache: RunCache,
    scope: Scope,
    format: str,
    band: Band | None,
    action: Action | None,
    limit: int,
    offset: int,
) -> Response:
    scope_key = (scope.role, scope.operator_id, tuple(sorted(scope.regions)))
    unfiltered = band is None and action is None
    with ctx.sessions() as db:
        run = latest_run(db)
        if run is None:
            raise HTTPException(404, "no published scoring run yet")
        if format == "json" and unfiltered:
            kept = cache.items(run, scope_key)
            if kept is not None:  # a page of a published run is a slice of its ranking
                return _json_page(run, kept, offset, limit)
            cache.fill(run, scope_key, lambda: _encoded_ranking(ctx, scope, run))
        query = _ranking_query(ctx, db, scope, run)
        if band is not None:
            query = query.where(RiskScore.risk_band == str(band))
        if action is not None:
            query = query.where(RiskScore.action == str(action))
        total = cache.count(
            run,
            (*scope_key, band, action),
            lambda: db.scalar(select(func.count()).select_from(query.subquery())),
        )
        rows = db.execute(_page(query, scope, unfiltered, offset, limit)).all()
    items = _items(rows, scope)
    meta = {"run_id": run.id, "as_of": run.as_of.isoformat(), "total": total, "offset": offset}
    if format == "json":
        return _json(meta | {"limit": limit, "items": items})
    if format == "csv":
        buf = io.StringIO()
        fields = [f for f in RANKING_FIELDS if scope.sees_money or f != "expected_loss_eur"]
        writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(items)
        return Response(buf.getvalue(), media_type="text/csv")
    features = [
        {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [i["lon"], i["lat"]]},
            "properties": {k: v for k, v in i.items() if k not in {"lon", "lat"}},
        }
        for i in items
    ]
    doc = {"type": "FeatureCollection", "features": features, "properties": meta}
    if format == "geojson":
        return Response(json.dumps(doc), media_type="application/geo+json")
    return Response(_gpkg(doc), media_type="application/geopackage+sqlite3")


def _items(rows: Any, scope: Scope) -> list[dict[str, Any]]:
    """Ranking rows (of ``_ranking_query``) as the API shows them to ``scope``."""
    items = []
    for rank, code, atm_id, lon, lat, city, address, p, band_, el, act, act_reason in rows:
        reason = str(act_reason or "")
        item = {
            "rank": rank,
            "operator": code,
            "atm_id": atm_id,
            "lon": lon,
            "lat": lat,
            "city": city,
            "address": address,
            "probability": p,
            "risk_band": band_,
            "expected_loss_eur": el,
            "action": act,
            "action_reason": reason,
        }
        if not scope.sees_money:
            del item["expected_loss_eur"]
            item["action_reason"] = _no_money(reason)
        items.append(item)
    return items


def _encoded_ranking(ctx: Any, scope: Scope, run: RiskRun) -> Encoded:
    """The whole ranking ``scope`` may see, in rank order, encoded."""
    out = Encoded()
    with ctx.sessions() as db:
        query = _ranking_query(ctx, db, scope, run).order_by(RiskScore.rank)
        for rows in db.execute(query.execution_options(yield_per=2000)).partitions():
            for item in _items(rows, scope):
                out.add(orjson.dumps(item, option=_JSON_OPTIONS))
            time.sleep(0.002)  # let this process's requests have the GIL between chunks
    return out.done()


def _json_page(run: RiskRun, items: Encoded, offset: int, limit: int) -> Response:
    """The JSON answer of ``_ranking`` from encoded items (same fields, same order)."""
    meta = {"run_id": run.id, "as_of": run.as_of.isoformat(), "total": len(items)}
    head = orjson.dumps(meta | {"offset": offset, "limit": limit})
    body = head[:-1] + b',"items":[' + items.page(offset, limit) + b"]}"
    return Response(body, media_type="application/json")


def _gpkg(doc: dict[str, Any]) -> bytes:
    import geopandas as gpd

    frame = gpd.GeoDataFrame.from_features(doc["features"], crs="EPSG:4326")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ranking.gpkg"
        frame.to_file(path, driver="GPKG", layer="ranking")
        return path.read_bytes()


# --------------------------------------------------------------------------- incidents


class IncidentIn(BaseModel):
    """An attack or attempt as reported (the structured facts police need)."""

    model_config = ConfigDict(extra="forbid")

    occurred_at: datetime | None = Field(None, description="When (default: now).")
    lat: float | None = Field(None, ge=-90, le=90)
    lon: float | None = Field(None, ge=-180, le=180)
    operator: str | None = Field(None, max_length=64, description="With atm_id: the machine.")
    atm_id: str | None = Field(None, max_length=64)
    method: AttackMethod = AttackMethod.EXPLOSIVE_UNSPECIFIED
    outcome: Outcome = Outcome.UNKNOWN
    locality: str | None = Field(None, max_length=200)
    escape: str | None = Field(None, max_length=2000, description="Vehicle, direction.")
    notes: str | None = Field(None, max_length=4000, description="What was seen.")
    simulated: bool = Field(
        False,
        description="A drill or a test, not a real attack: labelled SIMULATED in every alert "
        "and never used to measure the model.",
    )


def _incident(i: Incident) -> dict[str, Any]:
    return {
        "id": f"{i.feed}/{i.incident_id}",
        "when": i.when_text(),
        "occurred_from": i.occurred_from.isoformat(),
        "method": str(i.method),
        "outcome": str(i.outcome),
        "lat": i.lat,
        "lon": i.lon,
        "geocode_precision": str(i.geocode_precision),
        "place": ", ".join(p for p in (i.locality, i.municipality) if p) or i.region,
        "country": i.country,
        "simulated": i.simulated,
    }


@router.get("/incidents", summary="Attacks the caller may see, newest first")
def list_incidents(
    ctx: Ctx, db: DB, scope: Principal, limit: Limit = 100, offset: Offset = 0
) -> dict[str, Any]:
    query = select(Incident).outerjoin(Atm, Incident.atm_pk == Atm.id)
    if scope.role == "bank":
        # public attacks (no machine named) and attacks on its own machines
        query = query.where(or_(Incident.atm_pk.is_(None), Atm.operator_id == scope.operator_id))
    elif scope.role == "police":
        located = db.execute(select(Incident.id, Incident.lon, Incident.lat)).all()
        allowed = [
            pk
            for pk, lon, lat in located
            if lon is not None
            and lat is not None
            and scope.sees_region(region_of(db, ctx.settings, lon, lat))
        ]
        query = query.where(Incident.id.in_(allowed))
    order = (Incident.occurred_from.desc(), Incident.id.desc())
    found = db.scalars(query.order_by(*order).limit(limit).offset(offset)).all()
    return {"items": [_incident(i) for i in found], "limit": limit, "offset": offset}


@router.post("/incidents", status_code=201, summary="Report an attack: stored, alerted at once")
def post_incident(ctx: Ctx, db: DB, scope: Principal, body: IncidentIn) -> dict[str, Any]:
    if (body.operator is None) != (body.atm_id is None):
        raise HTTPException(
            422, [{"loc": ["body", "atm_id"], "msg": "give operator and atm_id together"}]
        )
    if body.atm_id is None and (body.lat is None or body.lon is None):
        raise HTTPException(422, [{"loc": ["body", "lat"], "msg": "give lat/lon or the machine"}])
    if body.atm_id is not None:
        atm = db.scalar(
            select(Atm)
            .join(Operator, Atm.operator_id == Operator.id)
            .where(Operator.code == body.operator, Atm.atm_id == body.atm_id)
        )
        if atm is None or not machine_visible(db, ctx, scope, atm):
            raise not_found("no such machine")
    now = ctx.clock.now()
    fields = body.model_dump(exclude_none=True)
    fields["method"], fields["outcome"] = str(body.method), str(body.outcome)
    fields["occurred_at"] = (body.occurred_at or now).isoformat()
    if body.lat is not None:
        fields["geocode_precision"] = "exact"
    try:
        result = report_incident(ctx.sessions, ctx.settings, ctx.clock, fields)
    except ReportError as exc:
        raise HTTPException(422, [{"loc": ["body"], "msg": str(exc)}]) from exc
    incident = db.get(Incident, result.incident_pk)
    assert incident is not None
    return {
        "incident": _incident(incident),
        "alert_id": result.alert_id,
        "deliveries": len(result.deliveries),
        "sent": result.dispatch.sent if result.dispatch else 0,
    }


# --------------------------------------------------------------------------- alerts


def _alert_visible(db: Any, ctx: Any, scope: Scope, alert: Alert) -> bool:
    if scope.role == "operator":
        return True
    if alert.kind in (AlertKind.PIPELINE_HEALTH, AlertKind.DIGEST):
        return False
    if scope.role == "bank":
        return scope.operator_code in (alert.operator_codes or [])
    return scope.sees_region(alert.region) or (
        alert.kind == AlertKind.RISK_CHANGE
        and any(scope.sees_region(region) for region in _change_regions(db, ctx, alert))
    )


def _change_regions(db: Any, ctx: Any, alert: Alert) -> set[str | None]:
    regions = machine_regions(db, ctx.settings)
    return {regions.get(c.get("atm_pk")) for c in alert.payload.get("changes", [])}


def _alert_view(alert: Alert, scope: Scope | None, me: str | None = None) -> dict[str, Any]:
    """An alert's summary. Who acknowledged it is shown to operators, police and whoever it
    was; a bank is not told which other recipient (another bank) acknowledged."""
    view = alert.summary()
    by = view["acknowledged_by"]
    if by is None or by == me or (scope is not None and scope.role in ("operator", "police")):
        return view
    if scope is not None and scope.role == "bank" and by.endswith(f"(bank/{scope.operator_code})"):
        return view
    view["acknowledged_by"] = "another recipient"
    return view


@router.get("/alerts", summary="Alerts that concern the caller, newest first")
def list_alerts(ctx: Ctx, db: DB, scope: Principal, limit: Limit = 100) -> dict[str, Any]:
    rows = db.scalars(select(Alert).order_by(Alert.updated_at.desc(), Alert.id.desc()).limit(5000))
    items = [_alert_view(a, scope) for a in rows if _alert_visible(db, ctx, scope, a)][:limit]
    return {"items": items}


@router.post("/alerts/{alert_id}/ack", summary="Acknowledge an alert (stops its repeats)")
def ack_alert(ctx: Ctx, db: DB, scope: Principal, alert_id: RowId) -> dict[str, Any]:
    alert = db.get(Alert, alert_id)
    if alert is None or not _alert_visible(db, ctx, scope, alert):
        raise not_found("no such alert")
    tenant = f"/{scope.operator_code}" if scope.operator_code else ""
    who = f"api key {scope.key_prefix} ({scope.role}{tenant})"
    with transaction(ctx.sessions, short=True) as s:
        return _alert_view(acknowledge(s, alert_id, who, ctx.clock.now()), scope)


@router.get("/alerts/{alert_id}/ack", summary="Acknowledge through the signed link of a message")
def ack_link(
    ctx: Ctx,
    alert_id: RowId,
    by: Annotated[str, Query(max_length=200)],
    exp: Annotated[int, Query(ge=0, le=10**11)],
    sig: Annotated[str, Query(max_length=128)],
) -> dict[str, Any]:
    secret = ctx.settings.alerts.ack_secret
    if secret is None:
        raise not_found()
    try:
        verify_link(secret, alert_id, by, exp, sig, ctx.clock.now())
    except AckError as exc:
        raise HTTPException(403, str(exc)) from exc
    with transaction(ctx.sessions, short=True) as s:
        try:
            me = f"{by} (signed link)"
            return _alert_view(acknowledge(s, alert_id, me, ctx.clock.now()), None, me)
        except LookupError as exc:
            raise not_found("no such alert") from exc


class SilenceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    creator: str = Field(min_length=1, max_length=200)
    comment: str = Field(min_length=1, max_length=2000)
    ends_at: datetime
    kind: AlertKind | None = None
    region: str | None = Field(None, max_length=120)
    operator: str | None = Field(None, max_length=64)
    receiver: str | None = Field(None, max_length=120)


def _silence(s: Silence) -> dict[str, Any]:
    return {
        "id": s.id,
        "kind": s.kind,
        "region": s.region,
        "operator": s.operator_code,
        "receiver": s.receiver,
        "creator": s.creator,
        "comment": s.comment,
        "starts_at": s.starts_at.isoformat(),
        "ends_at": s.ends_at.isoformat(),
        "expired_at": s.expired_at.isoformat() if s.expired_at else None,
    }


def _operators_only(scope: Scope) -> None:
    if scope.role != "operator":
        raise not_found()


@router.get("/silences", summary="Silences (operators)")
def list_silences(db: DB, scope: Principal) -> dict[str, Any]:
    _operators_only(scope)
    return {"items": [_silence(s) for s in db.scalars(select(Silence).order_by(Silence.id))]}


@router.post("/silences", status_code=201, summary="Create a silence (at most 30 days)")
def create_silence(ctx: Ctx, scope: Principal, body: SilenceIn) -> dict[str, Any]:
    _operators_only(scope)
    now = ctx.clock.now()
    ends = body.ends_at if body.ends_at.tzinfo else body.ends_at.replace(tzinfo=UTC)
    if ends <= now or ends - now > MAX_SILENCE:
        raise HTTPException(
            422, [{"loc": ["body", "ends_at"], "msg": "must lie in the next 30 days"}]
        )
    with transaction(ctx.sessions, short=True) as s:
        silence = Silence(
            kind=str(body.kind) if body.kind else None,
            region=body.region,
            operator_code=body.operator,
            receiver=body.receiver,
            severity=None,
            creator=body.creator,
            comment=body.comment,
            starts_at=now,
            ends_at=ends,
            created_at=now,
        )
        s.add(silence)
        s.flush()
        return _silence(silence)


@router.delete("/silences/{silence_id}", summary="Expire a silence now")
def expire_silence(ctx: Ctx, scope: Principal, silence_id: RowId) -> dict[str, Any]:
    _operators_only(scope)
    with transaction(ctx.sessions, short=True) as s:
        silence = s.get(Silence, silence_id)
        if silence is None:
            raise not_found("no such silence")
        silence.expired_at = ctx.clock.now()
        silence.expired_by = f"api key {scope.key_prefix}"
        return _silence(silence)


# --------------------------------------------------------------------------- plans and runs


@router.get("/plans/hardening", summary="Hardening plan for the caller's machines (banks)")
def get_hardening(
    ctx: Ctx,
    db: DB,
    scope: Principal,
    budget_eur: Annotated[float, Query(ge=0, le=1e10)],
    operator: Annotated[str | None, Query(max_length=64)] = None,
) -> dict[str, Any]:
    if scope.role == "police":
        raise not_found()  # police never see banks' hardening plans
    if scope.role == "bank":
        if operator not in (None, scope.operator_code):
            raise not_found("no such operator")
        operator = scope.operator_code
    run = latest_run(db)
    if run is None:
        raise HTTPException(404, "no published scoring run yet")
    try:
        plan = hardening_plan(db, ctx.settings, run, budget_eur=budget_eur, operator=operator)
    except PlanError as exc:
        raise HTTPException(422, [{"loc": ["query"], "msg": str(exc)}]) from exc
    return hardening_json(plan)


@router.get("/plans/patrol", summary="Tonight's patrol plan (police of the region, operators)")
def get_patrol(
    ctx: Ctx,
    db: DB,
    scope: Principal,
    units: Annotated[int, Query(ge=1, le=500)],
    minutes: Annotated[float, Query(ge=1, le=240)],
    region: Annotated[str | None, Query(max_length=120)] = None,
    night: date | None = None,
    format: Literal["json", "geojson"] = "json",
) -> Any:
    if scope.role == "bank":
        raise not_found()
    if scope.role == "police":
        if region is None and len(scope.regions) == 1:
            region = next(iter(scope.regions))
        if region is None or not scope.sees_region(region):
            raise not_found("no such region")
    try:
        plan = patrol_plan(
            db, ctx.settings, units=units, minutes=minutes, region=region, night=night
        )
    except PlanError as exc:
        raise HTTPException(422, [{"loc": ["query"], "msg": str(exc)}]) from exc
    doc = patrol_geojson(plan) if format == "geojson" else patrol_json(plan)
    if scope.role == "police":
        # police see where the risk is and its share, never banks' money figures
        doc = _without_money(doc)
    return doc


@router.get("/runs", summary="Scoring runs, newest first")
def list_runs(db: DB, scope: Principal, limit: Limit = 50) -> dict[str, Any]:
    rows = db.scalars(select(RiskRun).order_by(RiskRun.id.desc()).limit(limit))
    return {
        "items": [
            {
                "id": r.id,
                "status": str(r.status),
                "as_of": r.as_of.isoformat(),
                "scorer": r.scorer,
                "started_at": r.started_at.isoformat(),
                "finished_at": r.finished_at.isoformat() if r.finished_at else None,
                "n_scored": r.n_scored,
                "error": r.error if scope.role == "operator" else None,
            }
            for r in rows
        ]
    }
