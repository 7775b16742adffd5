"""PostGIS on PostgreSQL: generated geometry columns with GiST indexes (nothing on SQLite)

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29

``geom`` (SRID 4326) on atms, incidents and area_features is a STORED generated column: the
database computes it from lon/lat (or the WKB) on every insert and update, so it needs no
application code and can never disagree with them. Downgrade drops the columns and indexes,
and the extension too unless something else in the database uses it.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from geoalchemy2 import Geometry

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# table, geometry type, generating expression (frozen here as of this revision)
COLUMNS = (
    ("atms", "POINT", "ST_SetSRID(ST_MakePoint(lon, lat), 4326)"),
    ("incidents", "POINT", "ST_SetSRID(ST_MakePoint(lon, lat), 4326)"),
    ("area_features", "GEOMETRY", "ST_Force2D(ST_GeomFromWKB(geometry_wkb, 4326))"),
)


def _postgresql() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def _create_extension() -> None:
    bind = op.get_bind()
    if bind.scalar(sa.text("SELECT 1 FROM pg_extension WHERE extname = 'postgis'")):
        return
    if not bind.scalar(sa.text("SELECT 1 FROM pg_available_extensions WHERE name = 'postgis'")):
        raise RuntimeError(
            "PostGIS is not installed on this PostgreSQL server: install it (Debian: "
            "apt-get install postgresql-15-postgis-3; Docker: the postgis/postgis image), "
            "then run `atm-risk db upgrade` again"
        )
    try:
        op.execute("CREATE EXTENSION IF NOT EXISTS postgis")
    except sa.exc.DBAPIError as exc:
        raise RuntimeError(
            "could not create the postgis extension (creating it needs a superuser): run "
            "`CREATE EXTENSION postgis;` in this database as a superuser once, then "
            f"`atm-risk db upgrade` again ({type(exc.orig).__name__})"
        ) from exc


def upgrade() -> None:
    if not _postgresql():
        return  # SQLite stays extension-free: distances are computed in Python there
    _create_extension()
    for table, kind, expression in COLUMNS:
        op.add_column(
            table,
            sa.Column(
                "geom",
                Geometry(kind, srid=4326, spatial_index=False),
                sa.Computed(expression, persisted=True),
                nullable=True,
            ),
        )
        op.create_index(f"ix_{table}_geom", table, ["geom"], postgresql_using="gist")


def downgrade() -> None:
    if not _postgresql():
        return
    for table, _, _ in reversed(COLUMNS):
        op.drop_index(f"ix_{table}_geom", table_name=table)
        op.drop_column(table, "geom")
    bind = op.get_bind()
    try:
        with bind.begin_nested():
            bind.execute(sa.text("DROP EXTENSION IF EXISTS postgis"))  # RESTRICT
    except sa.exc.DBAPIError as exc:
        # still used by something else in the database, or not ours to drop: keep it
        if getattr(exc.orig, "sqlstate", None) not in {"2BP01", "42501"}:
            raise
