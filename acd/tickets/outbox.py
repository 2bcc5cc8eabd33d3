"""The e-mail outbox in the store: customer notifications claimed, then marked, by a mailer.

The store writes a `notifications` row in the same transaction as each ticket creation and
status change (`acd.tickets.store.enqueue_notification`). `TicketOutbox` is the mailer's
side: it claims due rows with everything a message needs (`Notification`, a frozen
snapshot; the customer's address is read at claim time, so a corrected address is used by
the next try) and records how each try ended. It never sends anything, never reads the
clock and never decides when to retry: the mailer passes `retry_at` (or None to give up).
"""

# Why a claim moves next_attempt_at instead of marking the row 'sending': the claim is a
# lease. Two daemons on one PostgreSQL must not both send a message, so the pick locks its
# rows (FOR UPDATE SKIP LOCKED: a second mailer skips them instead of waiting) and pushes
# them `lease` into the future before it commits; the other mailer no longer finds them due.
# A mailer that dies mid-send leaves the row pending, and it is due again when the lease
# runs out: a message can be sent twice then (SMTP accepted it, the mark never came), never
# lost. SQLite ignores FOR UPDATE and needs nothing more: its write transactions begin
# IMMEDIATE, so only one claim runs at a time. Each claim counts as an attempt, so a message
# whose sending crashes the mailer still reaches max attempts.
#
# Why a message waits for older pending ones of the same ticket: customers should read
# "received" before "resolved". A later message of a ticket is not claimed while an earlier
# one is pending (due, retrying or claimed by the other daemon); a message that failed for
# good or was skipped no longer holds the others back.

from __future__ import annotations

import builtins
import dataclasses
import datetime as dt
from typing import Final

from sqlalchemy import exists, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlalchemy.orm import aliased

from acd.tickets.engine import Writes, reader
from acd.tickets.schema import CustomerRow, NotificationRow, TicketRow
from acd.tickets.status import TicketStatus
from acd.tickets.store import InvalidValue, ticket_row

__all__ = ["DEFAULT_LEASE", "Notification", "NotificationRecord", "TicketOutbox"]

DEFAULT_LEASE: Final = dt.timedelta(minutes=10)
_ERROR_MAX: Final = 2000


@dataclasses.dataclass(frozen=True, slots=True)
class Notification:
    """A claimed message: what to tell whom (times are UTC).

    `attempts` counts this try. `recipient` is None when the ticket has no customer or the
    customer no e-mail address; the mailer then marks the message skipped.
    """

    id: int
    kind: str
    status: TicketStatus
    attempts: int
    created_at: dt.datetime
    ticket_number: str
    ticket_created_at: dt.datetime
    priority: str
    deadline: dt.datetime
    category: str | None
    description: str
    recipient: str | None
    customer_name: str | None
    customer_company: str | None
    language: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class NotificationRecord:
    """Where one outbox message stands, for people and tests (times are UTC)."""

    id: int
    ticket_number: str
    kind: str
    status: TicketStatus
    state: str
    attempts: int
    created_at: dt.datetime
    next_attempt_at: dt.datetime
    sent_at: dt.datetime | None
    recipient: str | None
    last_error: str | None


class TicketOutbox:
    """The customer e-mail outbox on the ticket store's database (SQLite or PostgreSQL)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._write = Writes(engine)
        self._read = async_sessionmaker(reader(engine), expire_on_commit=False)

    async def due_notifications(
        self, now: dt.datetime, limit: int, *, lease: dt.timedelta = DEFAULT_LEASE
    ) -> builtins.list[Notification]:
        """Claim up to `limit` pending messages due at `now`, oldest first.

        Each claimed message is this caller's until `now + lease`: mark it before then, or
        it is claimed again (by anyone). Choose `lease` longer than sending a batch takes.
        """
        _aware(now, "now")
        if lease <= dt.timedelta(0):
            raise InvalidValue(f"lease must be positive (got {lease})")
        if limit < 1:
            return []
        earlier = aliased(NotificationRow)
        held_back = exists().where(
            earlier.ticket_id == NotificationRow.ticket_id,
            earlier.state == "pending",
            earlier.id < NotificationRow.id,
        )
        pick = (
            select(NotificationRow)
            .where(
                NotificationRow.state == "pending",
                NotificationRow.next_attempt_at <= now,
                ~held_back,
            )
            .order_by(NotificationRow.next_attempt_at, NotificationRow.id)
            .limit(limit)
            .with_for_update(skip_locked=True, of=NotificationRow)
        )
        async with self._write.begin() as session:
            rows = (await session.scalars(pick)).all()
            if not rows:
                return []
            tickets = {
                t.id: t
                for t in await session.scalars(
                    select(TicketRow).where(TicketRow.id.in_({r.ticket_id for r in rows}))
                )
            }
            customer_ids = {t.customer_id for t in tickets.values() if t.customer_id}
            customers = {
                c.id: c
                for c in await session.scalars(
                    select(CustomerRow).where(CustomerRow.id.in_(customer_ids))
                )
            }
            claimed = []
            for row in rows:
                ticket = tickets[row.ticket_id]
                customer = customers.get(ticket.customer_id) if ticket.customer_id else None
                row.attempts += 1
                row.next_attempt_at = now + lease
                row.recipient = (customer.email or None) if customer is not None else None
                claimed.append(_notification(row, ticket, customer))
            return claimed

    async def mark_sent(self, notification_id: int, now: dt.datetime) -> bool:
        """The server accepted the message; False if it was no longer pending."""
        _aware(now, "now")
        return await self._finish(notification_id, state="sent", sent_at=now, last_error=None)

    async def mark_failed(
        self,
        notification_id: int,
        now: dt.datetime,
        error: str,
        retry_at: dt.datetime | None,
    ) -> bool:
        """A try failed: due again at `retry_at`, or failed for good if None.

        False if the message was no longer pending (another mailer finished it).
        """
        _aware(now, "now")
        if retry_at is None:
            return await self._finish(
                notification_id, state="failed", sent_at=None, last_error=error
            )
        _aware(retry_at, "retry_at")
        return await self._update(
            notification_id, next_attempt_at=retry_at, last_error=_clip(error)
        )

    async def mark_skipped(self, notification_id: int, now: dt.datetime, reason: str) -> bool:
        """Nothing to send (e.g. no customer address); False if no longer pending."""
        _aware(now, "now")
        return await self._finish(notification_id, state="skipped", sent_at=None, last_error=reason)

    async def notifications(
        self, ticket_number: str | None = None
    ) -> builtins.list[NotificationRecord]:
        """Every outbox message (of one ticket, if given), in the order they were written."""
        query = select(NotificationRow, TicketRow.number).join(
            TicketRow, TicketRow.id == NotificationRow.ticket_id
        )
        async with self._read() as session:
            if ticket_number is not None:
                ticket = await ticket_row(session, ticket_number)
                query = query.where(NotificationRow.ticket_id == ticket.id)
            rows = await session.execute(query.order_by(NotificationRow.id))
            return [_record(row, number) for row, number in rows]

    async def _finish(
        self,
        notification_id: int,
        *,
        state: str,
        sent_at: dt.datetime | None,
        last_error: str | None,
    ) -> bool:
        return await self._update(
            notification_id,
            state=state,
            sent_at=sent_at,
            last_error=None if last_error is None else _clip(last_error),
        )

    async def _update(self, notification_id: int, **values: object) -> bool:
        # Conditional on 'pending': a message another mailer already finished (after this
        # one's lease ran out) keeps its outcome.
        statement = (
            update(NotificationRow)
            .where(NotificationRow.id == notification_id, NotificationRow.state == "pending")
            .values(**values)
            .returning(NotificationRow.id)
        )
        async with self._write.begin() as session:
            return (await session.execute(statement)).first() is not None


def _notification(
    row: NotificationRow, ticket: TicketRow, customer: CustomerRow | None
) -> Notification:
    return Notification(
        id=row.id,
        kind=row.kind,
        status=TicketStatus(row.status),
        attempts=row.attempts,
        created_at=row.created_at,
        ticket_number=ticket.number,
        ticket_created_at=ticket.created_at,
        priority=ticket.priority,
        deadline=ticket.deadline,
        category=ticket.category,
        description=ticket.description,
        recipient=row.recipient,
        customer_name=None if customer is None else customer.name,
        customer_company=None if customer is None else customer.company,
        language=None if customer is None else customer.language,
    )


def _record(row: NotificationRow, number: str) -> NotificationRecord:
    return NotificationRecord(
        id=row.id,
        ticket_number=number,
        kind=row.kind,
        status=TicketStatus(row.status),
        state=row.state,
        attempts=row.attempts,
        created_at=row.created_at,
        next_attempt_at=row.next_attempt_at,
        sent_at=row.sent_at,
        recipient=row.recipient,
        last_error=row.last_error,
    )


def _clip(text: str) -> str:
    return text if len(text) <= _ERROR_MAX else text[: _ERROR_MAX - 1] + "…"


def _aware(value: dt.datetime, name: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidValue(f"{name} must be a timezone-aware datetime (got {value!r})")
