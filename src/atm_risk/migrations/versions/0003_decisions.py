"""decisions: expected loss, action and band per score; loss assumptions per machine/operator

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("risk_scores", schema=None) as batch_op:
        batch_op.add_column(sa.Column("risk_band", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("expected_loss_eur", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("action", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("action_reasons", sa.JSON(), nullable=True))
        batch_op.create_index(batch_op.f("ix_risk_scores_action"), ["action"], unique=False)
    with op.batch_alter_table("atms", schema=None) as batch_op:
        batch_op.add_column(sa.Column("property_damage_eur", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("residential_building", sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column("night_withdrawal_share", sa.Float(), nullable=True))
    with op.batch_alter_table("operators", schema=None) as batch_op:
        batch_op.add_column(sa.Column("cash_at_risk_eur", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("property_damage_eur", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("operators", schema=None) as batch_op:
        batch_op.drop_column("property_damage_eur")
        batch_op.drop_column("cash_at_risk_eur")
    with op.batch_alter_table("atms", schema=None) as batch_op:
        batch_op.drop_column("night_withdrawal_share")
        batch_op.drop_column("residential_building")
        batch_op.drop_column("property_damage_eur")
    with op.batch_alter_table("risk_scores", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_risk_scores_action"))
        batch_op.drop_column("action_reasons")
        batch_op.drop_column("action")
        batch_op.drop_column("expected_loss_eur")
        batch_op.drop_column("risk_band")
