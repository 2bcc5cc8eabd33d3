"""The database schema of Firstline's tickets, customers, callbacks and calls.

SQLAlchemy 2 declarative models, the single source of truth of the schema: the Alembic
revisions in `acd.tickets.migrations` must create exactly this (a test compares them on
SQLite and PostgreSQL). The same models serve both backends, so nothing here may use a
dialect-specific type. This module holds no queries and no business rules; the lifecycle
of a ticket lives in `acd.tickets.status`, the queries in `acd.tickets.store`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Final

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from acd.tickets.status import TicketStatus

__all__ = [
    "ACTIVE_CALLBACK_STATES",
    "CALLBACK_STATES",
    "HISTORY_KINDS",
    "NOTIFICATION_KINDS",
    "NOTIFICATION_STATES",
    "Base",
    "CallRow",
    "CallbackAttemptRow",
    "CallbackRow",
    "CustomerPhoneRow",
    "CustomerRow",
    "NotificationRow",
    "TicketCounterRow",
    "TicketHistoryRow",
    "TicketRow",
    "UtcDateTime",
    "metadata",
]

# Constraint names must be deterministic: Alembic can only drop or alter what it can name,
# and PostgreSQL and SQLite would otherwise invent different names.
_NAMING: Final = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

CALLBACK_STATES: Final = ("pending", "claimed", "done", "failed")
# What a history row records: the ticket's creation, or which field changed. Kinds that no
# code writes yet are listed so that adding their writers needs no migration.
HISTORY_KINDS: Final = (
    "created",
    "status",
    "owner",
    "note",
    "priority",
    "deadline",
    "queue",
    "skills",
    "customer",
    "category",
    "description",
    "recording",
    "callback",
    "rating",
    "follow_up",
)
# What the outbox tells a customer about: a new ticket or a changed status.
NOTIFICATION_KINDS: Final = ("created", "status")
NOTIFICATION_STATES: Final = ("pending", "sent", "failed", "skipped")
# Callbacks that still hold a caller's place; one per number and queue (duplicate requests
# join the existing ticket: a partial unique index makes that hold under concurrency).
ACTIVE_CALLBACK_STATES: Final = ("pending", "claimed")

E164_MAX: Final = 16  # '+' and at most 15 digits
AGENT_ID_MAX: Final = 40  # as acd.config.model.Id
NAME_MAX: Final = 200


def _in(column: str, values: tuple[str, ...] | list[str]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class UtcDateTime(TypeDecorator[dt.datetime]):
    """A timezone-aware instant, stored as UTC; naive datetimes are refused.

    SQLite keeps no offset, so without this a value written as 10:00+02:00 would read back
    as a naive 10:00. Every value is converted to UTC on the way in and tagged UTC on the
    way out, on both backends alike.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: pass a timezone-aware one")
        utc = value.astimezone(dt.UTC)
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if not isinstance(value, dt.datetime):
            raise TypeError(f"expected a datetime from the database, got {value!r}")
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


class Base(DeclarativeBase):
    """Declarative base of all Firstline tables."""

    metadata = MetaData(naming_convention=_NAMING)


metadata: Final = Base.metadata


class CustomerRow(Base):
    """A customer company's contact, keyed by its id in the desk's CRM."""

    __tablename__ = "customers"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    company: Mapped[str] = mapped_column(String(NAME_MAX))
    name: Mapped[str] = mapped_column(String(NAME_MAX))
    sla_package: Mapped[str | None] = mapped_column(String(AGENT_ID_MAX))
    language: Mapped[str | None] = mapped_column(String(2))
    account_manager: Mapped[str | None] = mapped_column(String(AGENT_ID_MAX))
    email: Mapped[str | None] = mapped_column(String(320))

    phones: Mapped[list[CustomerPhoneRow]] = relationship(
        back_populates="customer",
        cascade="all, delete-orphan",
        order_by="CustomerPhoneRow.number",
        lazy="selectin",  # async code cannot lazy-load on attribute access
    )


class CustomerPhoneRow(Base):
    """One E.164 number of a customer; a number belongs to at most one customer."""

    __tablename__ = "customer_phones"

    number: Mapped[str] = mapped_column(String(E164_MAX), primary_key=True)
    customer_id: Mapped[str] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), index=True
    )

    customer: Mapped[CustomerRow] = relationship(back_populates="phones")


class TicketCounterRow(Base):
    """The last ticket number handed out per year (the number's sequence part)."""

    __tablename__ = "ticket_counters"

    year: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    last: Mapped[int] = mapped_column(Integer)


class TicketRow(Base):
    """A support request, with its status, deadline, routing facts and owner."""

    __tablename__ = "tickets"
    __table_args__ = (
        CheckConstraint(_in("status", [s.value for s in TicketStatus]), name="status"),
        Index("ix_tickets_status_created_at", "status", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    number: Mapped[str] = mapped_column(String(20), unique=True)
    status: Mapped[str] = mapped_column(String(20))
    priority: Mapped[str] = mapped_column(String(AGENT_ID_MAX))
    priority_rank: Mapped[int] = mapped_column(Integer)
    deadline: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    closed_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    queue: Mapped[str | None] = mapped_column(String(AGENT_ID_MAX))
    skills: Mapped[dict[str, int]] = mapped_column(JSON)
    caller_number: Mapped[str | None] = mapped_column(String(E164_MAX), index=True)
    customer_id: Mapped[str | None] = mapped_column(
        ForeignKey("customers.id", ondelete="SET NULL"), index=True
    )
    owner: Mapped[str | None] = mapped_column(String(AGENT_ID_MAX), index=True)
    category: Mapped[str | None] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(Text)
    recording_path: Mapped[str | None] = mapped_column(Text)
    rating: Mapped[int | None] = mapped_column(Integer)
    follow_up: Mapped[bool] = mapped_column(Boolean, server_default=false(), default=False)


class TicketHistoryRow(Base):
    """One change of a ticket: when, who, what changed from what to what, and why."""

    __tablename__ = "ticket_history"
    __table_args__ = (CheckConstraint(_in("kind", HISTORY_KINDS), name="kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"), index=True)
    at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    actor: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(20))
    old_value: Mapped[str | None] = mapped_column(Text)
    new_value: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text)


class CallbackRow(Base):
    """A caller's request to be called back, leased to one worker at a time."""

    __tablename__ = "callbacks"
    __table_args__ = (
        CheckConstraint(_in("state", CALLBACK_STATES), name="state"),
        Index("ix_callbacks_state_next_attempt_at", "state", "next_attempt_at"),
        Index(
            "uq_callbacks_active_number_queue",
            "number",
            "queue",
            unique=True,
            sqlite_where=text(_in("state", ACTIVE_CALLBACK_STATES)),
            postgresql_where=text(_in("state", ACTIVE_CALLBACK_STATES)),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"), index=True)
    number: Mapped[str] = mapped_column(String(E164_MAX))
    queue: Mapped[str] = mapped_column(String(AGENT_ID_MAX))
    queue_joined_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    priority: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(10))
    attempts: Mapped[int] = mapped_column(Integer)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    uniqueid: Mapped[str | None] = mapped_column(String(64))
    last_outcome: Mapped[str | None] = mapped_column(String(32))


class CallbackAttemptRow(Base):
    """One try to call a customer back (the time to callback KPI is measured on these)."""

    __tablename__ = "callback_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    callback_id: Mapped[int] = mapped_column(
        ForeignKey("callbacks.id", ondelete="CASCADE"), index=True
    )
    started_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    ended_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    agent: Mapped[str | None] = mapped_column(String(AGENT_ID_MAX))
    uniqueid: Mapped[str | None] = mapped_column(String(64))
    outcome: Mapped[str | None] = mapped_column(String(32))


class CallRow(Base):
    """One call on the hotline, keyed by the caller channel's Asterisk Uniqueid."""

    __tablename__ = "calls"

    uniqueid: Mapped[str] = mapped_column(String(64), primary_key=True)
    caller_number: Mapped[str | None] = mapped_column(String(E164_MAX))
    arrived_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, index=True)
    queue_joined_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    answered_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    left_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    queue: Mapped[str | None] = mapped_column(String(AGENT_ID_MAX))
    agent: Mapped[str | None] = mapped_column(String(AGENT_ID_MAX))
    outcome: Mapped[str | None] = mapped_column(String(32))
    ticket_id: Mapped[int | None] = mapped_column(
        ForeignKey("tickets.id", ondelete="SET NULL"), index=True
    )
    category: Mapped[str | None] = mapped_column(String(64))
    recording_path: Mapped[str | None] = mapped_column(Text)
    rating: Mapped[int | None] = mapped_column(Integer)
    language: Mapped[str | None] = mapped_column(String(2))
    priority: Mapped[int | None] = mapped_column(Integer)
    skills: Mapped[dict[str, int] | None] = mapped_column(JSON)
    answers: Mapped[dict[str, str] | None] = mapped_column(JSON)
    customer_id: Mapped[str | None] = mapped_column(
        ForeignKey("customers.id", ondelete="SET NULL"), index=True
    )


class NotificationRow(Base):
    """The outbox of customer e-mails: written with the change it reports, sent later.

    Written in the same transaction as the ticket change, so a committed change always has
    its message and a rolled-back one never does, whoever made it (daemon, CLI, agent).
    """

    __tablename__ = "notifications"
    __table_args__ = (
        CheckConstraint(_in("kind", NOTIFICATION_KINDS), name="kind"),
        CheckConstraint(_in("state", NOTIFICATION_STATES), name="state"),
        Index("ix_notifications_state_next_attempt_at", "state", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(10))
    status: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    state: Mapped[str] = mapped_column(String(10))
    attempts: Mapped[int] = mapped_column(Integer)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    sent_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    recipient: Mapped[str | None] = mapped_column(String(320))
    last_error: Mapped[str | None] = mapped_column(Text)
