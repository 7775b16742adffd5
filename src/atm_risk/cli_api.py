"""``atm-risk serve`` and ``atm-risk keys create|list|revoke``."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table
from sqlalchemy import select

from atm_risk.cli_common import context_of, fail, out, sessions_of
from atm_risk.db import transaction
from atm_risk.tenancy.keys import KeyRequestError, create_key, revoke
from atm_risk.tenancy.models import ApiKey, Operator

keys_app = typer.Typer(no_args_is_help=True, help="API keys (stored hashed).")


@keys_app.command("create")
def keys_create(
    ctx: typer.Context,
    role: Annotated[str, typer.Option(help="bank, police or operator")],
    tenant: Annotated[str | None, typer.Option(help="Operator code (bank keys).")] = None,
    region: Annotated[
        list[str] | None, typer.Option(help="Region name (police keys; repeatable).")
    ] = None,
    label: Annotated[str, typer.Option(help="Who holds the key.")] = "",
) -> None:
    """Create a key. Its last line is the key itself, shown this once (only a hash and its
    prefix are stored)."""
    c = context_of(ctx)
    try:
        with transaction(sessions_of(c)) as session:
            key, row = create_key(
                session, role=role, tenant=tenant, regions=region, label=label, now=c.clock.now()
            )
            prefix = row.prefix
    except KeyRequestError as exc:
        fail(str(exc))
    out.print(f"created {role} key {prefix}; store it now, it is not shown again:", markup=False)
    print(key)


@keys_app.command("list")
def keys_list(ctx: typer.Context) -> None:
    """Keys (prefix, role, tenant or regions, created, revoked); never the keys themselves."""
    c = context_of(ctx)
    with sessions_of(c)() as session:
        rows = session.execute(
            select(ApiKey, Operator.code)
            .outerjoin(Operator, ApiKey.operator_id == Operator.id)
            .order_by(ApiKey.id)
        ).all()
    table = Table(title="API keys")
    for col in ("prefix", "role", "scope", "label", "created", "revoked"):
        table.add_column(col)
    for key, code in rows:
        table.add_row(
            key.prefix,
            key.role,
            code or ", ".join(key.regions) or "all",
            key.label,
            key.created_at.isoformat(timespec="seconds"),
            key.revoked_at.isoformat(timespec="seconds") if key.revoked_at else "",
        )
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(ctx: typer.Context, prefix: str) -> None:
    """Revoke a key by its prefix: it answers 401 from now on."""
    c = context_of(ctx)
    try:
        with transaction(sessions_of(c)) as session:
            revoke(session, prefix, c.clock.now())
    except LookupError as exc:
        fail(str(exc), 1)
    out.print(f"key {prefix} revoked", markup=False)


def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    workers: Annotated[int, typer.Option(min=1, max=64)] = 1,
) -> None:
    """Run the API and the map (uvicorn). It never starts a scheduler."""
    import uvicorn

    c = context_of(ctx)
    sessions_of(c)  # refuse an unmigrated database before binding the port
    if workers > 1:
        # each worker builds its app from the environment (ATM_RISK_...)
        uvicorn.run("atm_risk.api.asgi:app", host=host, port=port, workers=workers)
        return
    from atm_risk.api.app import create_app

    uvicorn.run(create_app(c.settings, clock=c.clock), host=host, port=port)
