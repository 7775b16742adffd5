"""Writing and reading incidents."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from atm_risk.atms.models import Atm
from atm_risk.incidents.models import GeocodePrecision, Incident
from atm_risk.incidents.schemas import IncidentRecord
from atm_risk.ingest.report import Rejection
from atm_risk.ingest.upsert import UpsertCounts, upsert_rows
from atm_risk.tenancy.models import Operator
from atm_risk.tenancy.service import operator_code

_ROW_FIELDS = (
    "incident_id",
    "occurred_from",
    "occurred_to",
    "date_precision",
    "time_local",
    "country",
    "region",
    "municipality",
    "municipality_code",
    "locality",
    "lon",
    "lat",
    "geocode_precision",
    "method",
    "method_detail",
    "outcome",
    "target",
    "escape",
    "source_url",
    "notes",
    "extra",
    "simulated",
)


def _resolve_atms(
    session: Session, records: Sequence[tuple[str, IncidentRecord]]
) -> tuple[dict[str, Atm], list[Rejection]]:
    """The machine each linked record names, by location; unknown or ambiguous ids reject."""
    wanted = {r.atm_id for _, r in records if r.atm_id}
    if not wanted:
        return {}, []
    candidates: dict[str, list[tuple[str, Atm]]] = {}
    rows = session.execute(
        select(Atm, Operator.code).join(Operator).where(Atm.atm_id.in_(wanted))
    ).all()
    for atm, code in rows:
        candidates.setdefault(atm.atm_id, []).append((code, atm))
    found: dict[str, Atm] = {}
    rejections: list[Rejection] = []
    for location, r in records:
        if not r.atm_id:
            continue
        options = candidates.get(r.atm_id, [])
        if r.operator:
            options = [o for o in options if o[0] == operator_code(r.operator)]
        if len(options) == 1:
            found[location] = options[0][1]
        elif not options:
            who = f" of operator {r.operator!r}" if r.operator else ""
            rejections.append(
                Rejection(location, f"atm_id {r.atm_id!r}{who} is not a stored machine")
            )
        else:
            rejections.append(
                Rejection(location, f"atm_id {r.atm_id!r} is ambiguous: give the operator")
            )
    return found, rejections


def upsert_incidents(
    session: Session,
    *,
    records: Sequence[tuple[str, IncidentRecord]],
    feed: str,
    now: datetime,
) -> tuple[UpsertCounts, list[Rejection]]:
    """Link, then insert or update incidents keyed by (feed, incident_id); caller commits.

    Records whose machine cannot be found are returned as rejections and not written.
    """
    linked, rejections = _resolve_atms(session, records)
    rejected = {r.location for r in rejections}
    rows = []
    for location, r in records:
        if location in rejected:
            continue
        data = {f: getattr(r, f) for f in _ROW_FIELDS}
        data["feed"] = feed
        data["timezone"] = r.zone_name() or "UTC"
        atm = linked.get(location)
        data["atm_pk"] = atm.id if atm else None
        if atm is not None and r.lat is None:
            data["lon"], data["lat"] = atm.lon, atm.lat
            data["geocode_precision"] = GeocodePrecision.EXACT
        rows.append(data)
    counts = upsert_rows(session, Incident, key=("feed", "incident_id"), rows=rows, now=now)
    return counts, rejections


def incidents_before(session: Session, when: datetime) -> list[Incident]:
    """Incidents known to have started before ``when`` (for as-of features and scores)."""
    return list(
        session.scalars(
            select(Incident).where(Incident.occurred_from < when).order_by(Incident.occurred_from)
        )
    )
