"""Ingest a file of ATMs or incidents: read, validate, then commit all valid rows at once."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from atm_risk.atms.profiles import ATM_PROFILES
from atm_risk.atms.schemas import AtmRecord
from atm_risk.atms.service import upsert_atms
from atm_risk.clock import Clock
from atm_risk.db import transaction
from atm_risk.incidents.profiles import INCIDENT_PROFILES
from atm_risk.incidents.schemas import IncidentRecord
from atm_risk.incidents.service import upsert_incidents
from atm_risk.ingest.errors import IngestError
from atm_risk.ingest.readers import read_source
from atm_risk.ingest.report import IngestReport
from atm_risk.ingest.upsert import UpsertCounts
from atm_risk.ingest.validation import Profile, validate_source
from atm_risk.tenancy.service import operator_code


class _StrictRollbackError(Exception):
    """Raised inside the transaction to undo it when --strict finds a bad row late."""


def _profile(profiles: dict[str, Profile], name: str, kind: str) -> Profile:
    try:
        return profiles[name]
    except KeyError:
        raise IngestError(
            f"unknown {kind} profile {name!r}; choose one of: {', '.join(sorted(profiles))}"
        ) from None


def _record(report: IngestReport, counts: UpsertCounts) -> None:
    report.inserted, report.updated, report.unchanged = (
        counts.inserted,
        counts.updated,
        counts.unchanged,
    )
    report.written = True


def ingest_atms(
    sessions: sessionmaker[Session],
    *,
    path: Path,
    profile: str = "canonical",
    strict: bool = False,
    clock: Clock,
) -> IngestReport:
    """Validate every row of ``path`` and upsert the valid machines in one transaction.

    With ``strict`` nothing is written when any row is bad.
    """
    prof = _profile(ATM_PROFILES, profile, "ATM")
    validated = validate_source(
        read_source(path),
        prof,
        AtmRecord,
        key=lambda r: (operator_code(r.operator), r.atm_id),
        describe_key=lambda r: f"atm_id {r.atm_id!r} of operator {r.operator!r}",
    )
    report = IngestReport(
        source=str(path), accepted=len(validated.records), rejections=validated.rejections
    )
    if (strict and report.rejections) or not validated.records:
        return report
    with transaction(sessions) as session:
        counts = upsert_atms(
            session,
            records=[r for _, r in validated.records],
            source=prof.name,
            now=clock.now(),
        )
    _record(report, counts)
    return report


def ingest_incidents(
    sessions: sessionmaker[Session],
    *,
    path: Path,
    profile: str = "canonical",
    feed: str | None = None,
    strict: bool = False,
    clock: Clock,
) -> IngestReport:
    """Validate, link to stored machines, and upsert incidents in one transaction.

    ``feed`` names the source the ids belong to (default: the profile's feed, else the file
    name); re-ingesting the same feed updates rows instead of duplicating them.
    """
    prof = _profile(INCIDENT_PROFILES, profile, "incident")
    feed = feed or prof.default_feed or path.name.split(".")[0]
    now = clock.now()
    validated = validate_source(
        read_source(path),
        prof,
        IncidentRecord,
        key=lambda r: r.incident_id,
        describe_key=lambda r: f"incident_id {r.incident_id!r}",
        context={"now": now},
    )
    report = IngestReport(
        source=str(path), accepted=len(validated.records), rejections=validated.rejections
    )
    if (strict and report.rejections) or not validated.records:
        return report
    try:
        with transaction(sessions) as session:
            counts, link_rejections = upsert_incidents(
                session, records=validated.records, feed=feed, now=now
            )
            report.accepted -= len(link_rejections)
            report.rejections = sorted(
                report.rejections + link_rejections,
                key=lambda r: int(r.location.split()[-1]),
            )
            if strict and link_rejections:
                raise _StrictRollbackError
    except _StrictRollbackError:
        return report
    _record(report, counts)
    return report
