"""Alert rules: what an incident or a scoring run means, and who must hear it.

``gang_active`` -- on a new physical attack: the machines within ``gang_radius_km`` (with the
latest published risk and action; those within the shutdown radius are recommended a
temporary shutdown now), the nearest motorway access points (escape routes). Attacks in the
same region within ``group_window_hours`` update one alert (one spree, one alert) instead of
opening new ones; each update is sent as a new version.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from scipy.spatial import cKDTree
from sqlalchemy import DateTime, func, select, type_coerce
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from atm_risk.alerts.ack import ack_link
from atm_risk.alerts.models import Alert, AlertKind, AlertStatus, Delivery, Severity
from atm_risk.alerts.outbox import Rendered, enqueue
from atm_risk.alerts.routing import Routing, Target, load_routing, targets
from atm_risk.atms.models import Atm, AtmStatus
from atm_risk.config import Settings
from atm_risk.features import context
from atm_risk.features.store import area_context
from atm_risk.geo import project
from atm_risk.incidents.models import PHYSICAL_ATTACKS, GeocodePrecision, Incident
from atm_risk.postgis import disc_box, in_box, is_postgis
from atm_risk.regions import CACHE as _CACHE
from atm_risk.regions import layer_stamps as _layer_stamps
from atm_risk.regions import locate, region_of
from atm_risk.risk.models import RiskRun, RiskScore, RunStatus
from atm_risk.tenancy.models import Operator

MAX_MACHINES = 25
MAX_SPREE = 20  # attacks of a spree listed in one message (the latest)
MAX_ROUTES = 5

_env = Environment(
    loader=PackageLoader("atm_risk.alerts", "templates"),
    autoescape=select_autoescape(enabled_extensions=("html", "html.j2"), default=False),
    undefined=StrictUndefined,
    trim_blocks=False,
)


_ROUTING: dict[tuple[str, int, int], Routing] = {}


def routing_of(settings: Settings) -> Routing | None:
    """The routing file, parsed once per version of the file (path, mtime, size)."""
    path = settings.alerts.routing_file
    if path is None:
        return None
    try:
        stat = path.stat()
    except OSError:
        return load_routing(path)  # raises the clear "not found" error
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    if key not in _ROUTING:
        _ROUTING[key] = load_routing(path)
    return _ROUTING[key]


_MOTORWAY_LAYERS = (
    context.NL_TERRITORY,
    context.DE_TERRITORY,
    context.NL_MOTORWAY,
    context.DE_MOTORWAY,
)


def _motorway(
    session: Session, settings: Settings, loaded: dict[str, str] | None = None
) -> tuple[Any, list[str]]:
    if loaded is None:
        loaded = _layer_stamps(session)
    stamps = tuple(str(loaded.get(name)) for name in _MOTORWAY_LAYERS)
    key = ("motorway", settings.database_url, settings.metric_crs, *stamps)
    if key not in _CACHE:
        ctx = area_context(session, settings, only=set(_MOTORWAY_LAYERS))
        labels: list[str] = []
        for layer in ctx.motorway:
            names = layer.labels or [None] * len(layer.xy)
            labels.extend(lab or f"{layer.name} #{k}" for k, lab in enumerate(names))
        tree = cKDTree(np.vstack([layer.xy for layer in ctx.motorway])) if labels else None
        _CACHE[key] = (tree, labels)
    return _CACHE[key]  # type: ignore[no-any-return]


def escape_routes(
    session: Session,
    settings: Settings,
    x: float,
    y: float,
    n: int = MAX_ROUTES,
    *,
    stamps: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """The nearest motorway access points (exits, junctions) within the gang radius of a
    point in the metric CRS."""
    tree, labels = _motorway(session, settings, stamps)
    if tree is None:
        return []
    limit = settings.alerts.gang_radius_km * 1000
    dist, idx = tree.query([x, y], k=min(n, len(labels)), distance_upper_bound=limit)
    return [
        {"label": labels[int(i)], "distance_km": round(float(d) / 1000, 1)}
        for d, i in zip(np.atleast_1d(dist), np.atleast_1d(idx), strict=True)
        if np.isfinite(d)
    ]


# --------------------------------------------------------------------------- machines


@dataclass(frozen=True)
class _MachineIndex:
    rows: list[tuple[Any, ...]]  # (atm_pk, atm_id, operator code, place)
    tree: Any  # cKDTree over metric x/y, or None


def _place(city: str | None, address: str | None) -> str:
    return ", ".join(p for p in (address, city) if p)


def _machine_index(session: Session, settings: Settings) -> _MachineIndex:
    """Active machines with a KD-tree, cached per process until a machine changes."""
    count, changed = session.execute(
        select(func.count(Atm.id), func.max(Atm.updated_at)).where(Atm.status == AtmStatus.ACTIVE)
    ).one()
    key = ("machines", settings.database_url, settings.metric_crs, count, str(changed))
    if key not in _CACHE:
        rows = session.execute(
            select(Atm.id, Atm.atm_id, Operator.code, Atm.lon, Atm.lat, Atm.city, Atm.address)
            .join(Operator, Atm.operator_id == Operator.id)
            .where(Atm.status == AtmStatus.ACTIVE)
            .order_by(Atm.id)
        ).all()
        tree = None
        if rows:
            x, y = project([r[3] for r in rows], [r[4] for r in rows], settings.metric_crs)
            tree = cKDTree(np.column_stack([x, y]))
        _CACHE[key] = _MachineIndex([(r[0], r[1], r[2], _place(r[5], r[6])) for r in rows], tree)
    return _CACHE[key]  # type: ignore[no-any-return]


def _run_scores(session: Session, settings: Settings) -> dict[int, tuple[Any, ...]]:
    """(band, action, expected loss) per machine in the latest published run, cached per run."""
    run_id = session.connection().scalar(  # plain (no ORM step): asked on every report
        select(RiskRun.id)
        .where(RiskRun.status == RunStatus.SUCCEEDED)
        .order_by(RiskRun.finished_at.desc(), RiskRun.id.desc())
        .limit(1)
    )
    if run_id is None:
        return {}
    key = ("scores", settings.database_url, run_id)
    if key not in _CACHE:
        _CACHE[key] = {
            pk: (band, action, el)
            for pk, band, action, el in session.execute(
                select(
                    RiskScore.atm_pk,
                    RiskScore.risk_band,
                    RiskScore.action,
                    RiskScore.expected_loss_eur,
                ).where(RiskScore.run_id == run_id)
            )
        }
    return _CACHE[key]  # type: ignore[no-any-return]


# per (database, metric CRS): machine pk -> (updated_at, atm_id, operator code, place, x, y)
_DETAILS: dict[tuple[str, str], dict[int, tuple[Any, ...]]] = {}


def _machines_in_disc(
    session: Session, settings: Settings, lon: float, lat: float, radius_m: float
) -> tuple[list[tuple[Any, ...]], Any]:
    """Candidates (rows, metric x/y) around a point: on PostgreSQL the GiST index's answer
    for the lon/lat box around the disc, on SQLite the cached KD-tree's ball (a hair wider).
    Either way a superset of the machines within ``radius_m``."""
    if is_postgis(session):
        return _machines_in_box(
            session, settings, disc_box(lon, lat, radius_m, settings.metric_crs)
        )
    index = _machine_index(session, settings)
    if index.tree is None:
        return [], np.empty((0, 2))
    px, py = project([lon], [lat], settings.metric_crs)
    near = index.tree.query_ball_point([float(px[0]), float(py[0])], radius_m * (1 + 1e-9))
    return [index.rows[k] for k in near], index.tree.data[near].reshape(-1, 2)


def _machines_in_box(
    session: Session, settings: Settings, box: tuple[float, float, float, float]
) -> tuple[list[tuple[Any, ...]], Any]:
    """PostgreSQL: the active machines in ``box`` as the GiST index finds them. Only their
    keys and change stamps are read each time; what is shown of a machine and its projected
    place are kept per process and read again when its ``updated_at`` moves (the ingest
    sets it on every change), so an attack's candidates cost one narrow index query."""
    found = (
        session.connection()
        .execute(
            select(Atm.id, type_coerce(Atm.updated_at, DateTime(timezone=True)))
            .where(*in_box(box, Atm, postgis=True))
            .where(Atm.status == AtmStatus.ACTIVE)
        )
        .all()
    )
    if not found:
        return [], np.empty((0, 2))
    known = _DETAILS.setdefault((settings.database_url, settings.metric_crs), {})
    stale = [pk for pk, stamp in found if known.get(pk, (None,))[0] != stamp]
    if stale:
        rows = (
            session.connection()
            .execute(
                select(
                    Atm.id,
                    type_coerce(Atm.updated_at, DateTime(timezone=True)),
                    Atm.atm_id,
                    Operator.code,
                    Atm.city,
                    Atm.address,
                    Atm.lon,
                    Atm.lat,
                )
                .join(Operator, Atm.operator_id == Operator.id)
                .where(Atm.id.in_(stale))
            )
            .all()
        )
        x, y = project(
            [r[6] for r in rows], [r[7] for r in rows], settings.metric_crs, shared_thread=True
        )
        for r, rx, ry in zip(rows, x.tolist(), y.tolist(), strict=True):
            known[r[0]] = (r[1], r[2], r[3], _place(r[4], r[5]), rx, ry)
    present = [(pk, known[pk]) for pk, _ in found if pk in known]  # gone meanwhile: skipped
    xy = np.array([d[4:6] for _, d in present], dtype=float).reshape(-1, 2)
    return [(pk, *d[1:4]) for pk, d in present], xy


def _in_radius(
    session: Session, settings: Settings, lon: float, lat: float, radius_m: float
) -> tuple[list[tuple[Any, ...]], list[int], list[float]]:
    """Candidate rows, and the positions and distances of those within ``radius_m``,
    nearest first (ties by machine key). Distances are metric-CRS distances computed here
    on both backends, so both give the same answer."""
    rows, xy = _machines_in_disc(session, settings, lon, lat, radius_m)
    if not rows:
        return [], [], []
    px, py = project([lon], [lat], settings.metric_crs)
    dist = np.hypot(xy[:, 0] - float(px[0]), xy[:, 1] - float(py[0]))
    inside = np.flatnonzero(dist <= radius_m)
    keys = np.fromiter((rows[k][0] for k in inside), dtype=np.int64, count=len(inside))
    order = inside[np.lexsort((keys, dist[inside]))]
    return rows, order.tolist(), dist[order].tolist()


def _machine_view(
    row: tuple[Any, ...], d: float, scores: dict[int, tuple[Any, ...]], shutdown_m: float
) -> dict[str, Any]:
    pk, atm_id, operator, place = row
    band, action, el = scores.get(pk, (None, None, None))
    return {
        "atm_pk": pk,
        "atm_id": atm_id,
        "operator": operator,
        "place": place,
        "distance_m": d,
        "distance_km": round(d / 1000, 1),
        "shutdown": d <= shutdown_m,
        "band": band,
        "action": action,
        "expected_loss_eur": el,
    }


def machines_near(
    session: Session, settings: Settings, lon: float, lat: float, radius_m: float
) -> list[dict[str, Any]]:
    """Active machines within ``radius_m``, nearest first, with the latest published risk;
    ``shutdown`` marks those within the shutdown radius."""
    rows, order, dist = _in_radius(session, settings, lon, lat, radius_m)
    scores = _run_scores(session, settings) if rows else {}
    shutdown_m = settings.decisions.shutdown_radius_km * 1000
    return [_machine_view(rows[k], d, scores, shutdown_m) for k, d in zip(order, dist, strict=True)]


@dataclass(frozen=True)
class Nearby:
    """What an alert needs of the machines around an attack: the nearest ``keep`` of all
    and of each operator (nearest first, as :func:`machines_near` gives them), and per
    operator how many lie within the radius and within the shutdown radius. Dozens of
    entries instead of the hundreds a city's radius holds: this runs for every report."""

    machines: list[dict[str, Any]]
    counts: dict[str, tuple[int, int]]  # operator -> (within radius, within shutdown radius)

    def scope(self, operator: str | None) -> tuple[list[dict[str, Any]], int, int]:
        """(machines, total, to shut down) that one operator's bank (None: all) may see."""
        if operator is None:
            total = sum(c[0] for c in self.counts.values())
            return self.machines, total, sum(c[1] for c in self.counts.values())
        total, shutdown = self.counts.get(operator, (0, 0))
        return [m for m in self.machines if m["operator"] == operator], total, shutdown


def nearby(
    session: Session,
    settings: Settings,
    lon: float,
    lat: float,
    radius_m: float,
    keep: int = MAX_MACHINES,
) -> Nearby:
    """:class:`Nearby` for an attack at (lon, lat)."""
    rows, order, dist = _in_radius(session, settings, lon, lat, radius_m)
    scores = _run_scores(session, settings) if rows else {}
    shutdown_m = settings.decisions.shutdown_radius_km * 1000
    counts: dict[str, list[int]] = {}
    machines = []
    for position, (k, d) in enumerate(zip(order, dist, strict=True)):
        count = counts.setdefault(rows[k][2], [0, 0])
        if position < keep or count[0] < keep:
            machines.append(_machine_view(rows[k], d, scores, shutdown_m))
        count[0] += 1
        count[1] += d <= shutdown_m
    return Nearby(machines, {op: (c[0], c[1]) for op, c in counts.items()})


# --------------------------------------------------------------------------- gang_active


def _incident_view(incident: Incident) -> dict[str, Any]:
    place = ", ".join(dict.fromkeys(p for p in (incident.locality, incident.municipality) if p))
    return {
        "pk": incident.id,
        "label": f"{incident.feed}/{incident.incident_id}",
        "when_text": incident.when_text(),
        "occurred_at": incident.occurred_from.isoformat(),
        "place": place or incident.region or incident.country or "unknown place",
        "method": str(incident.method).replace("_", " "),
        "lat": incident.lat,
        "lon": incident.lon,
        "precision": str(incident.geocode_precision),
        "simulated": bool(incident.simulated),
    }


def is_gang_signal(incident: Incident) -> bool:
    return (
        incident.method in PHYSICAL_ATTACKS
        and incident.geocode_precision != GeocodePrecision.NONE
        and incident.lon is not None
        and incident.lat is not None
    )


def _bucket(when: datetime, hours: float) -> str:
    step = int(hours * 3600)
    start = int(when.timestamp()) // step * step
    return datetime.fromtimestamp(start, tz=when.tzinfo).strftime("%Y%m%dT%H%M")


@dataclass(frozen=True)
class Surroundings:
    """What an attack's alert says about its place: read before the write transaction."""

    region: str | None
    country: str | None
    machines: Nearby
    routes: list[dict[str, Any]]


def surroundings(session: Session, settings: Settings, lon: float, lat: float) -> Surroundings:
    stamps = _layer_stamps(session)
    region, country = locate(session, settings, lon, lat, stamps=stamps)
    machines = nearby(session, settings, lon, lat, settings.alerts.gang_radius_km * 1000)
    px, py = project([lon], [lat], settings.metric_crs)
    routes = escape_routes(session, settings, float(px[0]), float(py[0]), stamps=stamps)
    return Surroundings(region, country, machines, routes)


def warm(sessions: sessionmaker[Session], settings: Settings) -> None:
    """Build this process's caches for the immediate path (regions, machines, latest scores,
    escape routes) before the first report needs them: a server calls this at start, so
    the first attack after a restart is not the one that waits for them."""
    for name in ("gang_active.txt.j2", "gang_active.html.j2"):
        _env.get_template(name)  # compiled once per process
    if settings.alerts.routing_file is not None and settings.alerts.routing_file.exists():
        routing_of(settings)
    with sessions() as session:
        anchor = session.execute(select(Atm.lon, Atm.lat).limit(1)).first()
        if anchor is not None:
            surroundings(session, settings, float(anchor[0]), float(anchor[1]))


def gang_active(
    session: Session,
    settings: Settings,
    incident: Incident,
    *,
    now: datetime,
    around: Surroundings | None = None,
    claim_token: str | None = None,
) -> tuple[Alert | None, list[Delivery]]:
    """Open or update the region's gang_active alert for ``incident`` and enqueue its
    deliveries in the caller's transaction (none when the incident is not a located
    physical attack). ``around``: the surroundings, if the caller read them already."""
    if not is_gang_signal(incident):
        return None, []
    lon, lat = float(incident.lon or 0.0), float(incident.lat or 0.0)
    cfg = settings.alerts
    around = around or surroundings(session, settings, lon, lat)
    region, machines, routes = around.region or incident.region, around.machines, around.routes
    view = _incident_view(incident)
    fresh = now - incident.occurred_from <= timedelta(hours=24)
    severity = Severity.CRITICAL if fresh else Severity.WARNING
    window = timedelta(hours=cfg.group_window_hours)
    region_key = region or f"{incident.country or 'XX'}"
    alert = session.scalar(
        select(Alert)
        .where(
            Alert.kind == AlertKind.GANG_ACTIVE,
            Alert.status == AlertStatus.FIRING,
            Alert.region == region_key,
            Alert.last_event_at >= incident.occurred_from - window,
        )
        .order_by(Alert.id.desc())
        .limit(1)
        # Lock the spree's alert: two reports in one region update it one after the other
        # (PostgreSQL row lock; SQLite serialises writers anyway), never both to one version.
        .with_for_update()
    )
    operators = sorted(machines.counts)
    bucket = _bucket(incident.occurred_from, cfg.group_window_hours)
    if alert is None:
        alert = Alert.new(
            kind=AlertKind.GANG_ACTIVE,
            severity=severity,
            status=AlertStatus.FIRING,
            dedup_key=f"gang_active:{region_key}:{bucket}",
            title=f"Gang active near {view['place']} ({region_key})",
            now=now,
            region=region_key,
            payload={"incidents": [view]},
            operator_codes=operators,
            incident_pk=incident.id,
            last_event_at=incident.occurred_from,
        )
        try:
            with session.begin_nested():
                session.add(alert)
                session.flush()
            reason = "new"
        except IntegrityError:
            alert = session.scalar(
                select(Alert).where(Alert.dedup_key == alert.dedup_key).with_for_update()
            )
            assert alert is not None
            reason = _update(alert, view, operators, severity, incident, now)
    else:
        reason = _update(alert, view, operators, severity, incident, now)
    alert.last_notified_at = now
    routing = routing_of(settings)
    if routing is None:
        return alert, []
    found = targets(
        routing,
        kind=AlertKind.GANG_ACTIVE,
        severity=alert.severity,
        region=region_key,
        operators=set(alert.operator_codes),
    )
    rendered = [
        (t, render_gang_active(settings, alert, view, machines, routes, t, now=now)) for t in found
    ]
    rows = enqueue(
        session,
        alert,
        rendered,
        reason=reason,
        seq=0,
        settings=cfg,
        now=now,
        claim_token=claim_token,
    )
    return alert, rows


def _update(
    alert: Alert,
    view: dict[str, Any],
    operators: list[str],
    severity: Severity,
    incident: Incident,
    now: datetime,
) -> str:
    known = {i["pk"] for i in alert.payload.get("incidents", [])}
    if view["pk"] not in known:
        alert.payload = {**alert.payload, "incidents": [*alert.payload["incidents"], view]}
    alert.version += 1
    alert.operator_codes = sorted(set(alert.operator_codes) | set(operators))
    if severity == Severity.CRITICAL:
        alert.severity = Severity.CRITICAL
    alert.last_event_at = max(alert.last_event_at, incident.occurred_from)
    alert.updated_at = now
    alert.acknowledged_at = alert.acknowledged_by = None  # a new attack needs a new look
    alert.repeats_sent = 0
    return "update"


def render_gang_active(
    settings: Settings,
    alert: Alert,
    incident: dict[str, Any],
    machines: Nearby,
    routes: list[dict[str, Any]],
    target: Target,
    *,
    now: datetime,
    repeat: int = 0,
) -> Rendered:
    """The message for one recipient: a bank sees only its own machines, police no money."""
    receiver = target.receiver
    scope = None
    mine, total, n_shutdown = machines.scope(receiver.operator if receiver.role == "bank" else None)
    if receiver.role == "bank":
        scope = f"{receiver.operator} machines only"
    show_money = receiver.role != "police"
    listed = mine[:MAX_MACHINES]
    spree = alert.payload.get("incidents", [incident])
    latest = spree[-MAX_SPREE:]  # the alert keeps them all; a message lists the latest
    headline = (
        f"{'[SIMULATED] ' if incident['simulated'] else ''}Gang active: "
        f"{incident['method']} attack in {incident['place']}"
        + (f" ({len(spree)} attacks in {alert.region})" if len(spree) > 1 else "")
        + f"; {n_shutdown} machine(s) within {settings.decisions.shutdown_radius_km:g} km "
        "recommended for temporary shutdown"
    )
    cfg = settings.alerts
    ack_url = (
        ack_link(cfg.public_url, cfg.ack_secret, alert.id, receiver.name, now)
        if cfg.ack_secret is not None
        else None
    )
    values = {
        "headline": headline,
        "incident": incident,
        "incidents": latest,
        "spree_total": len(spree),
        "region": alert.region,
        "routes": routes,
        "radius_km": f"{cfg.gang_radius_km:g}",
        "scope": scope,
        "machines": listed,
        "more": max(total - MAX_MACHINES, 0),
        "show_money": show_money,
        "ack_url": ack_url,
        "alert_id": alert.id,
        "version": alert.version,
        "repeat": repeat,
    }
    prefix = {"new": "", "update": "UPDATE: "}.get("update" if alert.version > 1 else "new", "")
    subject = f"[atm-risk] {'REPEAT: ' if repeat else prefix}{headline}"[:250]
    data = {
        "alert_id": alert.id,
        "version": alert.version,
        "region": alert.region,
        "severity": str(alert.severity),
        "incident": incident,
        "incidents": latest,
        "spree_total": len(spree),
        "escape_routes": routes,
        "machines": [
            {
                k: v
                for k, v in m.items()
                if k not in {"atm_pk", "distance_m"} and (show_money or k != "expected_loss_eur")
            }
            for m in listed
        ],
        "acknowledge_url": ack_url,
    }
    return Rendered(
        subject=subject,
        text=_env.get_template("gang_active.txt.j2").render(**values),
        html=_env.get_template("gang_active.html.j2").render(**values),
        data=data,
    )


# --------------------------------------------------------------------------- risk_change

MAX_CHANGES = 50


def risk_changes(session: Session, run: RiskRun, *, top: int) -> list[dict[str, Any]]:
    """Machines that entered the top ``top`` or whose recommended action changed, against
    the previous published run."""
    previous = session.scalar(
        select(RiskRun.id)
        .where(RiskRun.status == RunStatus.SUCCEEDED, RiskRun.id != run.id)
        .order_by(RiskRun.finished_at.desc(), RiskRun.id.desc())
        .limit(1)
    )
    if previous is None:
        return []  # the first run: nothing to compare with
    old = {
        pk: (rank, action)
        for pk, rank, action in session.execute(
            select(RiskScore.atm_pk, RiskScore.rank, RiskScore.action).where(
                RiskScore.run_id == previous
            )
        )
    }
    rows = session.execute(
        select(
            RiskScore.atm_pk,
            RiskScore.rank,
            RiskScore.risk_band,
            RiskScore.action,
            RiskScore.action_reasons,
            Atm.atm_id,
            Atm.lon,
            Atm.lat,
            Atm.city,
            Atm.address,
            Operator.code,
        )
        .join(Atm, Atm.id == RiskScore.atm_pk)
        .join(Operator, Operator.id == Atm.operator_id)
        .where(RiskScore.run_id == run.id)
        .order_by(RiskScore.rank)
    ).all()
    out = []
    for pk, rank, band, action, reasons, atm_id, lon, lat, city, address, code in rows:
        old_rank, old_action = old.get(pk, (None, None))
        entered = rank <= top and (old_rank is None or old_rank > top)
        if not entered and action == old_action:
            continue
        out.append(
            {
                "atm_pk": pk,
                "operator": code,
                "atm_id": atm_id,
                "lon": lon,
                "lat": lat,
                "place": ", ".join(p for p in (address, city) if p),
                "old_rank": old_rank,
                "new_rank": rank,
                "new_band": band,
                "old_action": old_action,
                "new_action": action,
                "entered_top": entered,
                "reason": (reasons or [{}])[0].get("text", ""),
            }
        )
    return out


def risk_change(
    session: Session, settings: Settings, run: RiskRun, *, now: datetime
) -> list[Delivery]:
    """After a scoring run, in its transaction: one risk_change alert for the run, each
    recipient told only about the machines in its scope (its own / its regions / all)."""
    changes = risk_changes(session, run, top=settings.alerts.top_band_rank)
    if not changes:
        return []
    severity = (
        Severity.CRITICAL
        if any(c["new_action"] == "temporary_shutdown" for c in changes)
        else Severity.WARNING
    )
    alert = Alert.new(
        kind=AlertKind.RISK_CHANGE,
        severity=severity,
        status=AlertStatus.RESOLVED,
        dedup_key=f"risk_change:run:{run.id}",
        title=f"{len(changes)} machine(s) changed risk or action in run {run.id}",
        now=now,
        payload={"run_id": run.id, "changes": changes[:500]},
        operator_codes=sorted({c["operator"] for c in changes}),
        run_id=run.id,
    )
    session.add(alert)
    session.flush()
    routing = routing_of(settings)
    if routing is None:
        return []
    found = targets(
        routing,
        kind=AlertKind.RISK_CHANGE,
        severity=severity,
        region=None,
        operators=set(alert.operator_codes),
        per_recipient_scope=True,
    )
    rendered = []
    for target in found:
        receiver = target.receiver
        if receiver.role == "bank":
            mine = [c for c in changes if c["operator"] == receiver.operator]
            scope = f"{receiver.operator} machines only"
        elif receiver.role == "police":
            mine = [
                c
                for c in changes
                if receiver.sees_region(region_of(session, settings, c["lon"], c["lat"]))
            ]
            scope = f"regions {', '.join(receiver.regions)}"
        else:
            mine, scope = changes, None
        if not mine:
            continue
        values = {
            "headline": f"Risk changed for {len(mine)} machine(s)"
            + (f" ({sum(c['new_action'] == 'temporary_shutdown' for c in mine)} to shut down)"),
            "run_id": run.id,
            "as_of": run.as_of.isoformat(timespec="minutes"),
            "changes": mine[:MAX_CHANGES],
            "more": max(len(mine) - MAX_CHANGES, 0),
            "scope": scope,
            "alert_id": alert.id,
        }
        rendered.append(
            (
                target,
                Rendered(
                    subject=f"[atm-risk] {values['headline']}",
                    text=_env.get_template("risk_change.txt.j2").render(**values),
                    html=_env.get_template("risk_change.html.j2").render(**values),
                    data={
                        "run_id": run.id,
                        "changes": [
                            {k: v for k, v in c.items() if k not in {"atm_pk", "lon", "lat"}}
                            for c in mine[:MAX_CHANGES]
                        ],
                    },
                ),
            )
        )
    return enqueue(session, alert, rendered, reason="new", seq=0, settings=settings.alerts, now=now)
