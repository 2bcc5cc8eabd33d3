"""Initial schema: tickets and their history, customers, callbacks and calls.

Frozen: it spells out every type and constraint rather than importing acd.tickets.schema,
so later changes to the models cannot change what this revision creates.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "customers",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("company", sa.String(length=200), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("sla_package", sa.String(length=40), nullable=True),
        sa.Column("language", sa.String(length=2), nullable=True),
        sa.Column("account_manager", sa.String(length=40), nullable=True),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_customers")),
    )
    op.create_table(
        "ticket_counters",
        sa.Column("year", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("last", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("year", name=op.f("pk_ticket_counters")),
    )
    op.create_table(
        "customer_phones",
        sa.Column("number", sa.String(length=16), nullable=False),
        sa.Column("customer_id", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_customer_phones_customer_id_customers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("number", name=op.f("pk_customer_phones")),
    )
    op.create_index(
        op.f("ix_customer_phones_customer_id"), "customer_phones", ["customer_id"], unique=False
    )
    op.create_table(
        "tickets",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("number", sa.String(length=20), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("priority", sa.String(length=40), nullable=False),
        sa.Column("priority_rank", sa.Integer(), nullable=False),
        sa.Column("deadline", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("queue", sa.String(length=40), nullable=True),
        sa.Column("skills", sa.JSON(), nullable=False),
        sa.Column("caller_number", sa.String(length=16), nullable=True),
        sa.Column("customer_id", sa.String(length=64), nullable=True),
        sa.Column("owner", sa.String(length=40), nullable=True),
        sa.Column("category", sa.String(length=64), nullable=True),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("recording_path", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "status IN ('first_level', 'second_level', 'waiting', 'dev', 'done')",
            name=op.f("ck_tickets_status"),
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_tickets_customer_id_customers"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tickets")),
        sa.UniqueConstraint("number", name=op.f("uq_tickets_number")),
    )
    op.create_index(op.f("ix_tickets_caller_number"), "tickets", ["caller_number"], unique=False)
    op.create_index(op.f("ix_tickets_customer_id"), "tickets", ["customer_id"], unique=False)
    op.create_index(op.f("ix_tickets_owner"), "tickets", ["owner"], unique=False)
    op.create_index(
        "ix_tickets_status_created_at", "tickets", ["status", "created_at"], unique=False
    )
    op.create_table(
        "callbacks",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.String(length=16), nullable=False),
        sa.Column("queue", sa.String(length=40), nullable=False),
        sa.Column("queue_joined_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "state IN ('pending', 'claimed', 'done', 'failed')", name=op.f("ck_callbacks_state")
        ),
        sa.ForeignKeyConstraint(
            ["ticket_id"],
            ["tickets.id"],
            name=op.f("fk_callbacks_ticket_id_tickets"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_callbacks")),
    )
    op.create_index(
        "ix_callbacks_state_next_attempt_at",
        "callbacks",
        ["state", "next_attempt_at"],
        unique=False,
    )
    op.create_index(op.f("ix_callbacks_ticket_id"), "callbacks", ["ticket_id"], unique=False)
    op.create_table(
        "calls",
        sa.Column("uniqueid", sa.String(length=64), nullable=False),
        sa.Column("caller_number", sa.String(length=16), nullable=True),
        sa.Column("arrived_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("queue_joined_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("left_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("queue", sa.String(length=40), nullable=True),
        sa.Column("agent", sa.String(length=40), nullable=True),
        sa.Column("outcome", sa.String(length=32), nullable=True),
        sa.Column("ticket_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["ticket_id"],
            ["tickets.id"],
            name=op.f("fk_calls_ticket_id_tickets"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("uniqueid", name=op.f("pk_calls")),
    )
    op.create_index(op.f("ix_calls_arrived_at"), "calls", ["arrived_at"], unique=False)
    op.create_index(op.f("ix_calls_ticket_id"), "calls", ["ticket_id"], unique=False)
    op.create_table(
        "ticket_history",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("old_value", sa.Text(), nullable=True),
        sa.Column("new_value", sa.Text(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "kind IN ('created', 'status', 'owner', 'note', 'priority', 'deadline', 'queue', "
            "'skills', 'customer', 'category', 'description', 'recording')",
            name=op.f("ck_ticket_history_kind"),
        ),
        sa.ForeignKeyConstraint(
            ["ticket_id"],
            ["tickets.id"],
            name=op.f("fk_ticket_history_ticket_id_tickets"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ticket_history")),
    )
    op.create_index(
        op.f("ix_ticket_history_ticket_id"), "ticket_history", ["ticket_id"], unique=False
    )
    op.create_table(
        "callback_attempts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("callback_id", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("agent", sa.String(length=40), nullable=True),
        sa.Column("uniqueid", sa.String(length=64), nullable=True),
        sa.Column("outcome", sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(
            ["callback_id"],
            ["callbacks.id"],
            name=op.f("fk_callback_attempts_callback_id_callbacks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_callback_attempts")),
    )
    op.create_index(
        op.f("ix_callback_attempts_callback_id"), "callback_attempts", ["callback_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_callback_attempts_callback_id"), table_name="callback_attempts")
    op.drop_table("callback_attempts")
    op.drop_index(op.f("ix_ticket_history_ticket_id"), table_name="ticket_history")
    op.drop_table("ticket_history")
    op.drop_index(op.f("ix_calls_ticket_id"), table_name="calls")
    op.drop_index(op.f("ix_calls_arrived_at"), table_name="calls")
    op.drop_table("calls")
    op.drop_index(op.f("ix_callbacks_ticket_id"), table_name="callbacks")
    op.drop_index("ix_callbacks_state_next_attempt_at", table_name="callbacks")
    op.drop_table("callbacks")
    op.drop_index("ix_tickets_status_created_at", table_name="tickets")
    op.drop_index(op.f("ix_tickets_owner"), table_name="tickets")
    op.drop_index(op.f("ix_tickets_customer_id"), table_name="tickets")
    op.drop_index(op.f("ix_tickets_caller_number"), table_name="tickets")
    op.drop_table("tickets")
    op.drop_index(op.f("ix_customer_phones_customer_id"), table_name="customer_phones")
    op.drop_table("customer_phones")
    op.drop_table("ticket_counters")
    op.drop_table("customers")
