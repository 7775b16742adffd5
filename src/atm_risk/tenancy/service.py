"""Operator look-up and creation."""

from __future__ import annotations

import re
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from atm_risk.tenancy.models import Operator


def operator_code(name: str) -> str:
    """A stable code for an operator name: lower-case, words joined by '-'."""
    code = re.sub(r"[^a-z0-9]+", "-", name.strip().lower()).strip("-")
    if not code:
        raise ValueError(f"operator name {name!r} has no letters or digits")
    return code[:64]


def get_or_create_operators(
    session: Session, *, names: set[str], now: datetime
) -> dict[str, Operator]:
    """Operators by name, creating the missing ones (flushed, not committed)."""
    by_code = {operator_code(n): n for n in names}
    existing = {
        op.code: op for op in session.scalars(select(Operator).where(Operator.code.in_(by_code)))
    }
    out: dict[str, Operator] = {}
    for code, name in by_code.items():
        op = existing.get(code)
        if op is None:
            op = Operator(code=code, name=name, created_at=now)
            session.add(op)
        out[name] = op
    session.flush()
    return out
