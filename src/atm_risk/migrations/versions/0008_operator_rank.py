"""risk_scores.operator_rank: rank within the operator, so a bank's ranking page is an index
range scan instead of an OFFSET scan; filled for the runs already stored

Revision ID: 0008
Revises: 0006
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("risk_scores", schema=None) as batch_op:
        batch_op.add_column(sa.Column("operator_rank", sa.Integer(), nullable=True))
    # the ranks of stored runs, as run_scoring writes them (UPDATE ... FROM: SQLite >= 3.33)
    op.execute(
        """
        UPDATE risk_scores SET operator_rank = ranked.n
        FROM (
            SELECT rs.id AS id,
                   ROW_NUMBER() OVER (PARTITION BY rs.run_id, a.operator_id ORDER BY rs.rank) AS n
            FROM risk_scores rs JOIN atms a ON a.id = rs.atm_pk
        ) AS ranked
        WHERE ranked.id = risk_scores.id
        """
    )
    with op.batch_alter_table("risk_scores", schema=None) as batch_op:
        batch_op.alter_column("operator_rank", existing_type=sa.Integer(), nullable=False)
        batch_op.create_index(
            "ix_risk_scores_run_operator_rank", ["run_id", "operator_rank"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("risk_scores", schema=None) as batch_op:
        batch_op.drop_index("ix_risk_scores_run_operator_rank")
        batch_op.drop_column("operator_rank")
