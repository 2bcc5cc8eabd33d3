"""Callbacks keep one active request per number and queue; e-mail outbox; ratings.

- `ticket_history.kind` also takes 'callback', 'rating' and 'follow_up'.
- `callbacks` gets the original call's `uniqueid` and the `last_outcome` of its attempts,
  and a partial unique index: one pending or claimed callback per (number, queue).
- `tickets` and `calls` get the caller's `rating`; tickets a `follow_up` flag; calls their
  `category` and `recording_path`.
- `notifications`: the outbox of customer e-mails, written with the change it reports.

Frozen like 0001: every type and constraint is spelled out here.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_KINDS_0001 = (
    "kind IN ('created', 'status', 'owner', 'note', 'priority', 'deadline', 'queue', "
    "'skills', 'customer', 'category', 'description', 'recording')"
)
_KINDS_0002 = (
    "kind IN ('created', 'status', 'owner', 'note', 'priority', 'deadline', 'queue', "
    "'skills', 'customer', 'category', 'description', 'recording', 'callback', 'rating', "
    "'follow_up')"
)
_ACTIVE = sa.text("state IN ('pending', 'claimed')")


def upgrade() -> None:
    with op.batch_alter_table("ticket_history") as batch:
        batch.drop_constraint(op.f("ck_ticket_history_kind"), type_="check")
        batch.create_check_constraint(op.f("ck_ticket_history_kind"), _KINDS_0002)
    with op.batch_alter_table("callbacks") as batch:
        batch.add_column(sa.Column("uniqueid", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("last_outcome", sa.String(length=32), nullable=True))
    op.create_index(
        "uq_callbacks_active_number_queue",
        "callbacks",
        ["number", "queue"],
        unique=True,
        sqlite_where=_ACTIVE,
        postgresql_where=_ACTIVE,
    )
    with op.batch_alter_table("tickets") as batch:
        batch.add_column(sa.Column("rating", sa.Integer(), nullable=True))
        batch.add_column(
            sa.Column("follow_up", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    with op.batch_alter_table("calls") as batch:
        batch.add_column(sa.Column("category", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("recording_path", sa.Text(), nullable=True))
        batch.add_column(sa.Column("rating", sa.Integer(), nullable=True))
    op.create_table(
        "notifications",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("recipient", sa.String(length=320), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.CheckConstraint("kind IN ('created', 'status')", name=op.f("ck_notifications_kind")),
        sa.CheckConstraint(
            "state IN ('pending', 'sent', 'failed', 'skipped')",
            name=op.f("ck_notifications_state"),
        ),
        sa.ForeignKeyConstraint(
            ["ticket_id"],
            ["tickets.id"],
            name=op.f("fk_notifications_ticket_id_tickets"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notifications")),
    )
    op.create_index(
        op.f("ix_notifications_ticket_id"), "notifications", ["ticket_id"], unique=False
    )
    op.create_index(
        "ix_notifications_state_next_attempt_at",
        "notifications",
        ["state", "next_attempt_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_notifications_state_next_attempt_at", table_name="notifications")
    op.drop_index(op.f("ix_notifications_ticket_id"), table_name="notifications")
    op.drop_table("notifications")
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("rating")
        batch.drop_column("recording_path")
        batch.drop_column("category")
    with op.batch_alter_table("tickets") as batch:
        batch.drop_column("follow_up")
        batch.drop_column("rating")
    op.drop_index("uq_callbacks_active_number_queue", table_name="callbacks")
    with op.batch_alter_table("callbacks") as batch:
        batch.drop_column("last_outcome")
        batch.drop_column("uniqueid")
    with op.batch_alter_table("ticket_history") as batch:
        batch.drop_constraint(op.f("ck_ticket_history_kind"), type_="check")
        batch.create_check_constraint(op.f("ck_ticket_history_kind"), _KINDS_0001)
