"""Monitoring alerts: one ticket per dedupe key.

- `alerts`: the first alert of each dedupe key (unique), the ticket it opened, and how
  often it came again.

Frozen like 0001: every type and constraint is spelled out here.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("dedupe_key", sa.String(length=200), nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.String(length=64), nullable=False),
        sa.Column("severity", sa.String(length=10), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("repeats", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "severity IN ('critical', 'major', 'minor', 'warning', 'info')",
            name=op.f("ck_alerts_severity"),
        ),
        sa.ForeignKeyConstraint(
            ["ticket_id"],
            ["tickets.id"],
            name=op.f("fk_alerts_ticket_id_tickets"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alerts")),
        sa.UniqueConstraint("dedupe_key", name=op.f("uq_alerts_dedupe_key")),
    )
    op.create_index(op.f("ix_alerts_ticket_id"), "alerts", ["ticket_id"], unique=False)
    op.create_index(op.f("ix_alerts_customer_id"), "alerts", ["customer_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_alerts_customer_id"), table_name="alerts")
    op.drop_index(op.f("ix_alerts_ticket_id"), table_name="alerts")
    op.drop_table("alerts")
