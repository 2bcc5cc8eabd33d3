"""What `acd report` counts, loaded from the store in three queries (SQLite or PostgreSQL).

`load_report_facts(engine, start=, end=, queue=)` reads, for [start, end) and optionally one
queue: the calls that arrived (with whether the callback booked during the call reached
the customer), the callback requests made (with when an agent first reached the customer)
and the tickets opened (with when they first became done). It returns the pure core's
`acd.reports.ReportFacts`; what the figures mean is decided there, not here. Read-only, in
one read transaction; it never reads the clock.
"""

# Why these queries, and which indexes they use:
# - calls: the range on `calls.arrived_at` (ix_calls_arrived_at). Whether a call's callback
#   reached the customer is one outer join on the set of reached callbacks, computed once
#   (a hash join on PostgreSQL, an automatic index on SQLite); `callbacks.uniqueid` has no
#   index of its own, so that set is cut down to requests made since `start` (a call's
#   callback is requested after the call arrived).
# - tickets: `tickets.created_at` is indexed only behind `status`
#   (ix_tickets_status_created_at). Naming every status (the CHECK constraint allows no
#   other) lets both databases seek that index once per status instead of reading the whole
#   table. The first move to `done` is a correlated MIN over the ticket's history
#   (ix_ticket_history_ticket_id).
# - callbacks: `callbacks.created_at` has no index; the table holds only the callback
#   requests (a small share of the calls), so a scan is cheap. The first answered attempt is
#   a correlated MIN over its attempts (ix_callback_attempts_callback_id).

from __future__ import annotations

import datetime as dt
from typing import Final

from sqlalchemy import ColumnElement, and_, func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from acd.reports import CallbackFacts, CallFacts, ReportFacts, TicketFacts
from acd.tickets.engine import reader
from acd.tickets.schema import (
    CallbackAttemptRow,
    CallbackRow,
    CallRow,
    TicketHistoryRow,
    TicketRow,
)
from acd.tickets.status import TicketStatus
from acd.tickets.store import InvalidValue

__all__ = ["load_report_facts"]

_REACHED: Final = "answered"  # the callback attempt outcome: the customer talked to an agent
_DONE: Final = TicketStatus.DONE.value


async def load_report_facts(
    engine: AsyncEngine,
    *,
    start: dt.datetime,
    end: dt.datetime,
    queue: str | None = None,
) -> ReportFacts:
    """Calls, callback requests and tickets of [start, end), of `queue` or of all queues."""
    for name, value in (("start", start), ("end", end)):
        if value.tzinfo is None or value.utcoffset() is None:
            raise InvalidValue(f"{name} must be timezone-aware")
    if start >= end:
        raise InvalidValue("start must be before end")
    sessions = async_sessionmaker(reader(engine), expire_on_commit=False)
    async with sessions() as session:
        calls = await _calls(session, start, end, queue)
        callbacks = await _callbacks(session, start, end, queue)
        tickets = await _tickets(session, start, end, queue)
    return ReportFacts(calls=calls, callbacks=callbacks, tickets=tickets)


async def _calls(
    session: AsyncSession, start: dt.datetime, end: dt.datetime, queue: str | None
) -> tuple[CallFacts, ...]:
    reached = (
        select(CallbackRow.uniqueid)
        .join(CallbackAttemptRow, CallbackAttemptRow.callback_id == CallbackRow.id)
        .where(
            CallbackRow.uniqueid.is_not(None),
            CallbackRow.created_at >= start,
            CallbackAttemptRow.outcome == _REACHED,
        )
        .distinct()
        .subquery("reached")
    )
    conditions: list[ColumnElement[bool]] = [CallRow.arrived_at >= start, CallRow.arrived_at < end]
    if queue is not None:
        conditions.append(CallRow.queue == queue)
    query = (
        select(
            CallRow.arrived_at,
            CallRow.queue,
            CallRow.outcome,
            CallRow.queue_joined_at,
            CallRow.answered_at,
            reached.c.uniqueid.is_not(None).label("reached"),
        )
        .outerjoin(reached, reached.c.uniqueid == CallRow.uniqueid)
        .where(*conditions)
    )
    return tuple(
        CallFacts(
            arrived_at=row.arrived_at,
            queue=row.queue,
            outcome=row.outcome,
            joined_at=row.queue_joined_at,
            answered_at=row.answered_at,
            reached_by_callback=bool(row.reached),
        )
        for row in await session.execute(query)
    )


async def _callbacks(
    session: AsyncSession, start: dt.datetime, end: dt.datetime, queue: str | None
) -> tuple[CallbackFacts, ...]:
    first_reached = (
        select(func.min(CallbackAttemptRow.started_at))
        .where(
            CallbackAttemptRow.callback_id == CallbackRow.id,
            CallbackAttemptRow.outcome == _REACHED,
        )
        .scalar_subquery()
    )
    conditions = [CallbackRow.created_at >= start, CallbackRow.created_at < end]
    if queue is not None:
        conditions.append(CallbackRow.queue == queue)
    query = select(
        CallbackRow.created_at, CallbackRow.queue, first_reached.label("reached_at")
    ).where(*conditions)
    return tuple(
        CallbackFacts(requested_at=row.created_at, queue=row.queue, reached_at=_utc(row.reached_at))
        for row in await session.execute(query)
    )


async def _tickets(
    session: AsyncSession, start: dt.datetime, end: dt.datetime, queue: str | None
) -> tuple[TicketFacts, ...]:
    first_done = (
        select(func.min(TicketHistoryRow.at))
        .where(
            TicketHistoryRow.ticket_id == TicketRow.id,
            TicketHistoryRow.kind.in_(("created", "status")),
            TicketHistoryRow.new_value == _DONE,
        )
        .scalar_subquery()
    )
    conditions: list[ColumnElement[bool]] = [
        TicketRow.status.in_([status.value for status in TicketStatus]),
        and_(TicketRow.created_at >= start, TicketRow.created_at < end),
    ]
    if queue is not None:
        conditions.append(TicketRow.queue == queue)
    query = select(TicketRow.created_at, TicketRow.queue, first_done.label("solved_at")).where(
        *conditions
    )
    return tuple(
        TicketFacts(created_at=row.created_at, queue=row.queue, solved_at=_utc(row.solved_at))
        for row in await session.execute(query)
    )


def _utc(value: dt.datetime | str | None) -> dt.datetime | None:
    """An aggregate's time: SQLite hands MIN() back untyped (a naive string), in UTC."""
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
