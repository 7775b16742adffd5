"""Writing and reading cash machines."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from atm_risk.atms.models import Atm, AtmStatus
from atm_risk.atms.schemas import AtmRecord
from atm_risk.ingest.upsert import UpsertCounts, upsert_rows
from atm_risk.tenancy.service import get_or_create_operators


def upsert_atms(
    session: Session, *, records: Sequence[AtmRecord], source: str, now: datetime
) -> UpsertCounts:
    """Insert or update machines keyed by (operator, atm_id); the caller commits."""
    operators = get_or_create_operators(session, names={r.operator for r in records}, now=now)
    rows = []
    for r in records:
        data = r.model_dump(exclude={"operator"})
        data["hardening"] = [str(m) for m in r.hardening]
        data["operator_id"] = operators[r.operator].id
        data["source"] = source
        rows.append(data)
    return upsert_rows(session, Atm, key=("operator_id", "atm_id"), rows=rows, now=now)


def active_atms(session: Session) -> list[Atm]:
    return list(session.scalars(select(Atm).where(Atm.status == AtmStatus.ACTIVE).order_by(Atm.id)))
