"""Who receives which alert: receivers and routes from a versioned TOML file.

Example (``config/routing.example.toml`` is the full, commented version)::

    version = 1

    [[receivers]]
    name = "geldmaat-security"
    role = "bank"                 # bank | police | operator
    operator = "geldmaat"         # the tenant: a bank receiver only ever gets its machines
    email = ["security@geldmaat.example"]
    webhooks = [{ url = "https://hooks.example/atm", secret_env = "GELDMAAT_HOOK_SECRET" }]

    [[receivers]]
    name = "police-midden-nederland"
    role = "police"
    regions = ["Utrecht", "Flevoland"]   # province / German state names
    email = ["rtic@politie.example"]

    [[routes]]
    kinds = ["gang_active"]
    severities = ["critical", "warning"]  # optional
    receivers = ["police-midden-nederland", "geldmaat-security"]

Matching: a route applies when the alert's kind (and severity, region, operator, when the
route names them) match. Then a police receiver gets the alert only for its regions, a bank
receiver only when one of its own machines is concerned (and its message shows only those),
an operator receiver everything.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from atm_risk.alerts.models import AlertKind, Channel, Severity
from atm_risk.secret_values import check_secret

ROUTING_VERSION = 1
Role = Literal["bank", "police", "operator"]


class RoutingError(ValueError):
    """The routing file is missing, unreadable or inconsistent."""


class Webhook(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(pattern=r"^https?://")
    secret_env: str = Field(
        description="Environment variable holding the HMAC secret (never in the file)."
    )

    def secret(self) -> bytes:
        value = os.environ.get(self.secret_env)
        if not value:
            raise RoutingError(f"webhook {self.url}: environment variable {self.secret_env} unset")
        try:
            check_secret(value, f"webhook {self.url}: {self.secret_env}")
        except ValueError as exc:
            raise RoutingError(str(exc)) from None
        return value.encode()


class Receiver(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=120, pattern=r"^[A-Za-z0-9_.-]+$")
    role: Role
    operator: str | None = Field(None, description="Tenant code (bank receivers).")
    regions: tuple[str, ...] = Field((), description="Region names (police receivers).")
    email: tuple[str, ...] = ()
    webhooks: tuple[Webhook, ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> Receiver:
        if self.role == "bank" and not self.operator:
            raise ValueError(f"receiver {self.name}: a bank receiver needs its operator")
        if self.role != "bank" and self.operator:
            raise ValueError(f"receiver {self.name}: only bank receivers have an operator")
        if self.role == "police" and not self.regions:
            raise ValueError(f"receiver {self.name}: a police receiver needs its regions")
        if not self.email and not self.webhooks:
            raise ValueError(f"receiver {self.name}: no e-mail address and no webhook")
        for address in self.email:
            if "@" not in address or any(c.isspace() for c in address):
                raise ValueError(f"receiver {self.name}: {address!r} is not an e-mail address")
        return self

    def sees_region(self, region: str | None) -> bool:
        if self.role != "police":
            return True
        wanted = {r.casefold() for r in self.regions}
        return region is not None and region.casefold() in wanted


class Route(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kinds: tuple[AlertKind, ...]
    receivers: tuple[str, ...] = Field(min_length=1)
    severities: tuple[Severity, ...] | None = None
    regions: tuple[str, ...] | None = None
    operators: tuple[str, ...] | None = None

    def matches(
        self, kind: AlertKind, severity: Severity, region: str | None, operators: set[str]
    ) -> bool:
        if kind not in self.kinds:
            return False
        if self.severities is not None and severity not in self.severities:
            return False
        if self.regions is not None and (
            region is None or region.casefold() not in {r.casefold() for r in self.regions}
        ):
            return False
        return self.operators is None or bool(operators & set(self.operators))


class Routing(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int
    receivers: tuple[Receiver, ...] = ()
    routes: tuple[Route, ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> Routing:
        if self.version != ROUTING_VERSION:
            raise ValueError(f"routing version {self.version}; this code reads {ROUTING_VERSION}")
        names = [r.name for r in self.receivers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"receivers named twice: {', '.join(dupes)}")
        for route in self.routes:
            unknown = sorted(set(route.receivers) - set(names))
            if unknown:
                raise ValueError(f"a route names unknown receivers: {', '.join(unknown)}")
        return self

    def receiver(self, name: str) -> Receiver:
        return next(r for r in self.receivers if r.name == name)


@dataclass(frozen=True)
class Target:
    """One address of one receiver that should get an alert."""

    receiver: Receiver
    channel: Channel
    address: str
    webhook: Webhook | None = None


def load_routing(path: Path) -> Routing:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise RoutingError(f"routing file not found: {path}") from exc
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise RoutingError(f"{path}: {exc}") from exc
    try:
        return Routing.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "file"
        raise RoutingError(f"{path}: {where}: {first['msg']}") from exc


def targets(
    routing: Routing,
    *,
    kind: AlertKind,
    severity: Severity,
    region: str | None,
    operators: set[str],
    per_recipient_scope: bool = False,
) -> list[Target]:
    """Every address the alert goes to, each receiver once, in a stable order.

    ``per_recipient_scope``: the content is cut to each receiver's own scope (a digest), so
    police receivers get it whatever the alert's region."""
    seen: set[str] = set()
    out: list[Target] = []
    for route in routing.routes:
        if not route.matches(kind, severity, region, operators):
            continue
        for name in route.receivers:
            if name in seen:
                continue
            receiver = routing.receiver(name)
            if not per_recipient_scope and not receiver.sees_region(region):
                continue
            if receiver.role == "bank" and receiver.operator not in operators:
                continue  # nothing of this bank's is concerned
            seen.add(name)
            out.extend(Target(receiver, Channel.EMAIL, a) for a in receiver.email)
            out.extend(Target(receiver, Channel.WEBHOOK, w.url, w) for w in receiver.webhooks)
    return out
