"""The schema comes from Alembic migrations and matches the ORM, from an empty database."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from typer.testing import CliRunner

from atm_risk.cli import app
from atm_risk.db import make_engine
from atm_risk.migrate import current_revision, downgrade, head_revision, upgrade
from atm_risk.postgis import include_object
from atm_risk.store import metadata


def test_upgrade_from_empty_matches_models_and_round_trips(empty_database_url: str) -> None:
    engine = make_engine(empty_database_url)
    try:
        assert current_revision(engine) is None
        upgrade(engine)
        assert current_revision(engine) == head_revision()
        with engine.connect() as conn:
            diff = compare_metadata(
                MigrationContext.configure(
                    conn, opts={"compare_type": True, "include_object": include_object}
                ),
                metadata,
            )
        assert diff == []
        tables = set(inspect(engine).get_table_names())
        assert set(metadata.tables) <= tables

        downgrade(engine, "base")
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        upgrade(engine)
        assert set(metadata.tables) <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_commands_refuse_an_unmigrated_database(empty_database_url: str) -> None:
    runner = CliRunner()
    env = {"ATM_RISK_DATABASE_URL": empty_database_url}
    result = runner.invoke(app, ["rank"], env=env)
    assert result.exit_code == 2
    assert "atm-risk db upgrade" in result.output
    result = runner.invoke(app, ["db", "upgrade"], env=env)
    assert result.exit_code == 0, result.output
    assert f"database at revision {head_revision()}" in result.output
    result = runner.invoke(app, ["rank"], env=env)
    assert result.exit_code == 1
    assert "no published scoring run" in result.output
