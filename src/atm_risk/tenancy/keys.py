"""API keys and the principal they stand for; the one scope every query goes through.

A key looks like ``atmr_<prefix>_<secret>``: the prefix (public, stored) finds the row, the
SHA-256 of the whole key (stored) proves it, compared in constant time. The key itself is
shown once, at creation, and never stored.

:class:`Scope` is the single place that decides what a principal may see:

* ``operator`` -- everything;
* ``bank`` -- the machines of its own operator (and what derives from them);
* ``police`` -- the machines in its regions; never banks' money figures or hardening plans.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from atm_risk.tenancy.models import ApiKey, Operator

Role = Literal["bank", "police", "operator"]
ROLES: tuple[Role, ...] = ("bank", "police", "operator")
KEY_PREFIX = "atmr"


class KeyRequestError(ValueError):
    """A key cannot be created as asked."""


@dataclass(frozen=True)
class Scope:
    """Who is asking, and therefore what they may see."""

    role: Role
    key_prefix: str | None = None
    operator_id: int | None = None
    operator_code: str | None = None
    regions: frozenset[str] = field(default_factory=frozenset)

    @property
    def sees_money(self) -> bool:
        return self.role != "police"

    def sees_region(self, region: str | None) -> bool:
        if self.role != "police":
            return True
        return region is not None and region.casefold() in {r.casefold() for r in self.regions}

    def sees_machine(self, operator_id: int, region: str | None) -> bool:
        if self.role == "operator":
            return True
        if self.role == "bank":
            return operator_id == self.operator_id
        return self.sees_region(region)


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(
    session: Session,
    *,
    role: str,
    now: datetime,
    tenant: str | None = None,
    regions: list[str] | None = None,
    label: str = "",
) -> tuple[str, ApiKey]:
    """A new key (returned once) and its stored row (prefix + hash)."""
    if role not in ROLES:
        raise KeyRequestError(f"role must be one of {', '.join(ROLES)}")
    operator_id = None
    if role == "bank":
        if not tenant:
            raise KeyRequestError("a bank key needs --tenant (the operator code)")
        op = session.scalar(select(Operator).where(Operator.code == tenant))
        if op is None:
            raise KeyRequestError(f"no operator {tenant!r}")
        operator_id = op.id
    elif tenant:
        raise KeyRequestError("only bank keys belong to a tenant")
    regions = [r.strip() for r in (regions or []) if r.strip()]
    if role == "police" and not regions:
        raise KeyRequestError("a police key needs at least one --region")
    if role != "police" and regions:
        raise KeyRequestError("only police keys have regions")
    prefix = secrets.token_hex(4)
    key = f"{KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    row = ApiKey(
        prefix=prefix,
        key_hash=_hash(key),
        role=role,
        operator_id=operator_id,
        regions=regions,
        label=label[:200],
        created_at=now,
    )
    session.add(row)
    session.flush()
    return key, row


def resolve(session: Session, key: str) -> tuple[ApiKey, Scope] | None:
    """The live key row and its scope, or None (unknown, malformed or revoked)."""
    parts = key.split("_", 2)  # the secret part may itself contain "_"
    if len(parts) != 3 or parts[0] != KEY_PREFIX or not parts[1] or not parts[2]:
        return None
    row = session.scalar(select(ApiKey).where(ApiKey.prefix == parts[1]))
    if row is None or row.revoked_at is not None:
        return None
    if not hmac.compare_digest(row.key_hash, _hash(key)):
        return None
    code = None
    if row.operator_id is not None:
        code = session.scalar(select(Operator.code).where(Operator.id == row.operator_id))
    scope = Scope(
        role=row.role,  # type: ignore[arg-type]
        key_prefix=row.prefix,
        operator_id=row.operator_id,
        operator_code=code,
        regions=frozenset(row.regions or []),
    )
    return row, scope


def revoke(session: Session, prefix: str, now: datetime) -> ApiKey:
    row = session.scalar(select(ApiKey).where(ApiKey.prefix == prefix))
    if row is None:
        raise LookupError(f"no key with prefix {prefix!r}")
    if row.revoked_at is None:
        row.revoked_at = now
    return row
