"""Call records keep what the IVR captured: language, priority, skills, answers, customer.

Frozen like 0001: every type and constraint is spelled out here.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.add_column(sa.Column("language", sa.String(length=2), nullable=True))
        batch.add_column(sa.Column("priority", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("skills", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("answers", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("customer_id", sa.String(length=64), nullable=True))
        batch.create_foreign_key(
            op.f("fk_calls_customer_id_customers"),
            "customers",
            ["customer_id"],
            ["id"],
            ondelete="SET NULL",
        )
        batch.create_index(op.f("ix_calls_customer_id"), ["customer_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.drop_index(op.f("ix_calls_customer_id"))
        batch.drop_constraint(op.f("fk_calls_customer_id_customers"), type_="foreignkey")
        batch.drop_column("customer_id")
        batch.drop_column("answers")
        batch.drop_column("skills")
        batch.drop_column("priority")
        batch.drop_column("language")
