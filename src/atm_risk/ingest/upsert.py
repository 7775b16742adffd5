"""Upsert by source key: one helper for every table that is ingested from files."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session

from atm_risk.db import Base

_EXACT_LOOKUP_MAX = 100


@dataclass(frozen=True)
class UpsertCounts:
    inserted: int
    updated: int
    unchanged: int
    # the stored objects, in the order of the rows (for a caller that goes on with them)
    objects: tuple[Any, ...] = field(default=(), compare=False, repr=False)


def upsert_rows(
    session: Session,
    model: type[Base],
    *,
    key: Sequence[str],
    rows: Sequence[dict[str, Any]],
    now: datetime,
) -> UpsertCounts:
    """Insert new rows and update changed ones, matched on ``key`` (a unique constraint).

    Existing rows of a large batch are looked up by the first key column, so ``key[0]``
    should be the coarse one (operator, feed); a small batch looks up its exact keys.
    ``created_at``/``updated_at`` are maintained here.
    Nothing is committed: the caller owns the transaction.
    """
    if not rows:
        return UpsertCounts(0, 0, 0)
    if len(rows) <= _EXACT_LOOKUP_MAX:
        # a few rows (a reported incident): look up exactly those keys, not the whole scope
        columns = tuple_(*(getattr(model, k) for k in key))
        where = columns.in_([tuple(r[k] for k in key) for r in rows])
    else:
        where = getattr(model, key[0]).in_({r[key[0]] for r in rows})
    existing = {
        tuple(getattr(obj, k) for k in key): obj
        for obj in session.scalars(select(model).where(where))
    }
    inserted = updated = unchanged = 0
    objects = []
    for row in rows:
        obj = existing.get(tuple(row[k] for k in key))
        if obj is None:
            obj = model(**row, created_at=now, updated_at=now)
            session.add(obj)
            objects.append(obj)
            inserted += 1
            continue
        objects.append(obj)
        changed = False
        for name, value in row.items():
            if getattr(obj, name) != value:
                setattr(obj, name, value)
                changed = True
        if changed:
            obj.updated_at = now  # type: ignore[attr-defined]
            updated += 1
        else:
            unchanged += 1
    session.flush()
    return UpsertCounts(inserted, updated, unchanged, tuple(objects))
