"""Alembic environment: the URL comes from the caller or from atm-risk's settings."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from atm_risk.config import load_settings
from atm_risk.db import make_engine
from atm_risk.postgis import include_object
from atm_risk.store import metadata

config = context.config


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # ALTER on SQLite
        compare_type=True,
        include_object=include_object,  # PostGIS's own table, the generated geom columns
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = config.get_main_option("sqlalchemy.url") or load_settings().database_url
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run against a database")
run_migrations_online()
