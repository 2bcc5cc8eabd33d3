"""Callback requests in the store: booked with their ticket, claimed by one dialer at a time.

`CallbackStore` is the dialer's and the callback AGI step's view of the `callbacks` table.
A request creates the ticket and the callback in one transaction, so a ticket number that
is read to a caller always has both. A dialer *claims* a request before it calls anyone: one
atomic UPDATE ... RETURNING sets a lease, and a lease that runs out (its daemon died) makes
the request claimable again. Attempts and their results go to `callback_attempts` and to the
ticket's history. What to do after a failed attempt (retry when, or give up) is decided by
the caller (`callback.schedule`); this module only records it. It never reads the clock.
"""

# Why the claim is one statement: two dialers (two daemons on one PostgreSQL) must never
# both call the same customer. "SELECT the next ... then UPDATE" lets both read the same
# row. UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED) RETURNING makes the pick
# and the claim one step on PostgreSQL, and a second dialer skips the locked row instead of
# waiting for it. SQLite ignores FOR UPDATE and needs nothing more: its write transactions
# begin IMMEDIATE, so only one claim runs at a time.
#
# Why a partial unique index on (number, queue) for pending/claimed requests: a caller who
# presses the key again, or calls again and presses it, must join the existing ticket; two
# concurrent requests could both see "none yet" and both insert. The index makes the second
# insert fail, and the request then joins the first one's ticket.

from __future__ import annotations

import builtins
import datetime as dt
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Final, Literal

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from acd.tickets.engine import Writes, reader
from acd.tickets.schema import (
    ACTIVE_CALLBACK_STATES,
    CallbackAttemptRow,
    CallbackRow,
    TicketRow,
)
from acd.tickets.status import TicketStatus, check_transition
from acd.tickets.store import (
    InvalidValue,
    Ticket,
    TicketStoreError,
    enqueue_notification,
    insert_ticket,
    is_e164,
    record,
    ticket_from_row,
    ticket_row,
    validate_new_ticket,
)

__all__ = [
    "ATTEMPT_OUTCOMES",
    "Callback",
    "CallbackNotFound",
    "CallbackRequest",
    "CallbackStore",
    "LeaseLost",
    "PendingSummary",
]

# How an attempt ended: the customer talked to the agent, or why not.
ATTEMPT_OUTCOMES: Final = ("answered", "busy", "no_answer", "failed")
Outcome = Literal["answered", "busy", "no_answer", "failed"]
_ACTOR: Final = "callback"


class CallbackNotFound(TicketStoreError, LookupError):  # noqa: N818 - reads as what happened
    """No callback with that id."""


class LeaseLost(TicketStoreError):  # noqa: N818 - reads as what happened
    """The callback is no longer claimed by this dialer (its lease ran out and was taken)."""


@dataclass(frozen=True, slots=True)
class Callback:
    """A callback request as the dialer sees it."""

    id: int
    ticket_number: str
    number: str
    queue: str
    queue_joined_at: dt.datetime
    priority: int
    state: str
    attempts: int
    next_attempt_at: dt.datetime
    lease_owner: str | None
    lease_expires_at: dt.datetime | None
    created_at: dt.datetime
    uniqueid: str | None
    last_outcome: str | None
    category: str | None
    skills: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class CallbackRequest:
    """What a caller's request led to: its ticket and callback, and whether both are new."""

    ticket: Ticket
    callback: Callback
    created: bool


@dataclass(frozen=True, slots=True)
class PendingSummary:
    """Callbacks still to make in one queue: how many, and since when the oldest waits."""

    queue: str
    count: int
    oldest_joined_at: dt.datetime


class CallbackStore:
    """Callback requests on the ticket store's database (SQLite or PostgreSQL)."""

    def __init__(self, engine: AsyncEngine, *, booking_lock_wait: float | None = None) -> None:
        """`booking_lock_wait`: seconds `request` (a caller on the line) waits for another
        writer before it fails; other writes wait the engine's usual busy timeout."""
        self._engine = engine
        self._write = Writes(engine)
        self._book = (
            self._write
            if booking_lock_wait is None
            else Writes(engine, lock_wait=booking_lock_wait)
        )
        self._read = async_sessionmaker(reader(engine), expire_on_commit=False)

    async def request(
        self,
        *,
        now: dt.datetime,
        number: str,
        queue: str,
        queue_joined_at: dt.datetime,
        priority: str,
        priority_rank: int,
        deadline: dt.datetime,
        skills: Mapping[str, int] | None = None,
        customer_id: str | None = None,
        category: str | None = None,
        description: str = "",
        recording_path: str | None = None,
        uniqueid: str | None = None,
        actor: str = "ivr",
        queue_priority: int | None = None,
    ) -> CallbackRequest:
        """Book a callback to `number` for `queue`, with a new ticket, in one transaction.

        `queue_priority` is the caller's priority in the queue (app_queue's QUEUE_PRIO: the
        ticket's rank raised by an SLA package or an open ticket); the callback keeps it in
        line. Without it the ticket's `priority_rank` is used.

        If `number` already has a pending callback for `queue`, nothing new is created: the
        existing ticket gets a history row and keeps the earlier place in line.
        """
        validate_new_ticket(now=now, deadline=deadline, actor=actor, priority=priority)
        if not is_e164(number):
            raise InvalidValue(f"'{number}' is not an E.164 number like '+4930123456'")
        if queue_joined_at.tzinfo is None or queue_joined_at > now:
            raise InvalidValue("queue_joined_at must be timezone-aware and not after now")
        if not queue:
            raise InvalidValue("queue must not be empty")
        for attempt in range(2):
            try:
                async with self._book.begin() as session:
                    existing = await _active(session, number, queue)
                    if existing is not None:
                        return await _join(session, existing, now, queue_joined_at, actor)
                    ticket = await insert_ticket(
                        session,
                        now=now,
                        actor=actor,
                        priority=priority,
                        priority_rank=priority_rank,
                        deadline=deadline,
                        status=TicketStatus.FIRST_LEVEL,
                        queue=queue,
                        skills=skills,
                        caller_number=number,
                        customer_id=customer_id,
                        owner=None,
                        category=category,
                        description=description,
                        recording_path=recording_path,
                        reason="callback requested from the queue",
                    )
                    row = CallbackRow(
                        ticket_id=ticket.id,
                        number=number,
                        queue=queue,
                        queue_joined_at=queue_joined_at,
                        priority=priority_rank if queue_priority is None else queue_priority,
                        state="pending",
                        attempts=0,
                        next_attempt_at=now,
                        created_at=now,
                        updated_at=now,
                        uniqueid=uniqueid,
                    )
                    session.add(row)
                    await session.flush()
                    record(
                        session,
                        ticket,
                        now=now,
                        actor=actor,
                        kind="callback",
                        old=None,
                        new="requested",
                        reason=f"call back {number} for queue {queue}",
                    )
                    return CallbackRequest(ticket_from_row(ticket), _callback(row, ticket), True)
            except IntegrityError:
                # A concurrent request for the same number and queue won: join its ticket.
                if attempt:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def claim(
        self,
        *,
        now: dt.datetime,
        owner: str,
        lease: dt.timedelta,
        queues: Collection[str] | None = None,
        limit: int = 1,
    ) -> builtins.list[Callback]:
        """Claim up to `limit` due callbacks, best first (priority, then original join time).

        Due: pending with `next_attempt_at` reached, or claimed by someone whose lease ran
        out. Each claimed callback is this owner's until `now + lease` (renew it to keep it).
        """
        if limit < 1:
            return []
        due = or_(
            (CallbackRow.state == "pending") & (CallbackRow.next_attempt_at <= now),
            (CallbackRow.state == "claimed") & (CallbackRow.lease_expires_at < now),
        )
        pick = select(CallbackRow.id, CallbackRow.lease_owner.label("previous")).where(due)
        if queues is not None:
            pick = pick.where(CallbackRow.queue.in_(list(queues)))
        pick = (
            pick.order_by(CallbackRow.priority.desc(), CallbackRow.queue_joined_at, CallbackRow.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        values = _claimed_by(owner, now, lease)
        async with self._write.begin() as session:
            if self._engine.dialect.name == "postgresql":
                picked = pick.cte("picked")
                claim = (
                    update(CallbackRow)
                    .where(CallbackRow.id == picked.c.id)
                    .values(**values)
                    .returning(CallbackRow, picked.c.previous)
                    .execution_options(synchronize_session=False)
                )
                claimed: list[tuple[CallbackRow, str | None]] = [
                    (row, previous) for row, previous in await session.execute(claim)
                ]
            else:
                # SQLite's RETURNING cannot name another table; its write transaction is
                # exclusive (BEGIN IMMEDIATE), so the pick and the update are still one step.
                owners: dict[int, str | None] = {
                    row.id: row.previous for row in await session.execute(pick)
                }
                rows = await session.scalars(
                    update(CallbackRow)
                    .where(CallbackRow.id.in_(list(owners)))
                    .values(**values)
                    .returning(CallbackRow)
                    .execution_options(synchronize_session=False)
                )
                claimed = [(row, owners[row.id]) for row in rows]
            result = []
            for row, previous in sorted(claimed, key=lambda pair: _order(pair[0])):
                ticket = await session.get_one(TicketRow, row.ticket_id)
                if previous not in (None, owner):
                    record(
                        session,
                        ticket,
                        now=now,
                        actor=owner[:64],
                        kind="callback",
                        old=previous,
                        new="taken_over",
                        reason=f"the lease of {previous} ran out",
                    )
                result.append(_callback(row, ticket))
            return result

    async def claim_id(
        self, callback_id: int, *, owner: str, now: dt.datetime, lease: dt.timedelta
    ) -> bool:
        """Claim this one callback if it is pending (one UPDATE ... RETURNING); True if taken."""
        async with self._write.begin() as session:
            taken = await session.execute(
                update(CallbackRow)
                .where(CallbackRow.id == callback_id, CallbackRow.state == "pending")
                .values(**_claimed_by(owner, now, lease))
                .returning(CallbackRow.id)
                .execution_options(synchronize_session=False)
            )
            return taken.first() is not None

    async def renew(
        self, callback_id: int, *, owner: str, now: dt.datetime, lease: dt.timedelta
    ) -> None:
        """Extend this owner's claim (`LeaseLost` if it is no longer theirs)."""
        async with self._write.begin() as session:
            row = await _claimed(session, callback_id, owner, now)
            row.lease_expires_at = now + lease
            row.updated_at = now

    async def release(self, callback_id: int, *, owner: str, now: dt.datetime) -> None:
        """Give the claim back without an attempt (e.g. nobody was called): pending again."""
        async with self._write.begin() as session:
            row = await _claimed(session, callback_id, owner, now, allow_expired=True)
            row.state = "pending"
            row.lease_owner = None
            row.lease_expires_at = None
            row.updated_at = now

    async def start_attempt(
        self,
        callback_id: int,
        *,
        owner: str,
        now: dt.datetime,
        agent: str | None,
        uniqueid: str | None,
        lease: dt.timedelta,
    ) -> int:
        """An agent took the callback and the customer is being called; returns the attempt id.

        The lease is extended to cover the conversation (`lease`).
        """
        async with self._write.begin() as session:
            row = await _claimed(session, callback_id, owner, now)
            row.lease_expires_at = now + lease
            row.updated_at = now
            attempt = CallbackAttemptRow(
                callback_id=row.id, started_at=now, agent=agent, uniqueid=uniqueid
            )
            session.add(attempt)
            await session.flush()
            ticket = await session.get_one(TicketRow, row.ticket_id)
            record(
                session,
                ticket,
                now=now,
                actor=agent or _ACTOR,
                kind="callback",
                old=None,
                new=f"attempt {row.attempts + 1}",
                reason=f"agent {agent or '?'} calls {row.number}",
            )
            return attempt.id

    async def finish_attempt(
        self,
        callback_id: int,
        *,
        owner: str,
        now: dt.datetime,
        outcome: Outcome,
        retry_at: dt.datetime | None,
        agent: str | None = None,
    ) -> Callback:
        """Record how the running attempt ended, and what follows.

        answered: the callback is done and the agent owns the ticket. Otherwise: pending
        again until `retry_at`, or, with `retry_at` None, failed for good and the ticket
        waits (status `waiting`) with the reason in its history.
        """
        if outcome not in ATTEMPT_OUTCOMES:
            raise InvalidValue(f"unknown attempt outcome '{outcome}'")
        async with self._write.begin() as session:
            row = await _claimed(session, callback_id, owner, now, allow_expired=True)
            attempt = (
                await session.scalars(
                    select(CallbackAttemptRow)
                    .where(
                        CallbackAttemptRow.callback_id == row.id,
                        CallbackAttemptRow.ended_at.is_(None),
                    )
                    .order_by(CallbackAttemptRow.id.desc())
                    .limit(1)
                )
            ).one_or_none()
            if attempt is None:
                attempt = CallbackAttemptRow(callback_id=row.id, started_at=now, agent=agent)
                session.add(attempt)
            attempt.ended_at = now
            attempt.outcome = outcome
            agent = agent or attempt.agent
            row.attempts += 1
            row.last_outcome = outcome
            row.lease_owner = None
            row.lease_expires_at = None
            row.updated_at = now
            ticket = await session.get_one(TicketRow, row.ticket_id)
            actor = (agent or _ACTOR)[:64]
            if outcome == "answered":
                row.state = "done"
                note = f"attempt {row.attempts}: answered, agent {agent or '?'}"
                if agent is not None and ticket.owner != agent:
                    record(
                        session,
                        ticket,
                        now=now,
                        actor=actor,
                        kind="owner",
                        old=ticket.owner,
                        new=agent,
                        reason="called the customer back",
                    )
                    ticket.owner = agent
            elif retry_at is not None:
                row.state = "pending"
                row.next_attempt_at = retry_at
                note = f"attempt {row.attempts}: {outcome}, next try {retry_at.isoformat()}"
            else:
                row.state = "failed"
                note = f"attempt {row.attempts}: {outcome}, no tries left"
                reason = f"customer not reached after {row.attempts} callback attempts"
                if ticket.status != TicketStatus.WAITING.value:
                    check_transition(ticket.status, TicketStatus.WAITING)
                    record(
                        session,
                        ticket,
                        now=now,
                        actor=_ACTOR,
                        kind="status",
                        old=ticket.status,
                        new=TicketStatus.WAITING.value,
                        reason=reason,
                    )
                    ticket.status = TicketStatus.WAITING.value
                    enqueue_notification(session, ticket, kind="status", now=now)
            record(
                session,
                ticket,
                now=now,
                actor=actor,
                kind="callback",
                old=None,
                new=outcome,
                reason=note,
            )
            ticket.updated_at = now
            return _callback(row, ticket)

    async def get(self, callback_id: int) -> Callback:
        """The callback with this id (`CallbackNotFound` if none)."""
        async with self._read() as session:
            row = await session.get(CallbackRow, callback_id)
            if row is None:
                raise CallbackNotFound(f"no callback with id {callback_id}")
            return _callback(row, await session.get_one(TicketRow, row.ticket_id))

    async def for_ticket(self, number: str) -> builtins.list[Callback]:
        """The ticket's callbacks, oldest first."""
        async with self._read() as session:
            ticket = await ticket_row(session, number)
            rows = await session.scalars(
                select(CallbackRow)
                .where(CallbackRow.ticket_id == ticket.id)
                .order_by(CallbackRow.id)
            )
            return [_callback(row, ticket) for row in rows]

    async def attempts(self, callback_id: int) -> builtins.list[tuple[str | None, str | None]]:
        """Each attempt's (agent, outcome), oldest first (outcome None: still running)."""
        async with self._read() as session:
            rows = await session.execute(
                select(CallbackAttemptRow.agent, CallbackAttemptRow.outcome)
                .where(CallbackAttemptRow.callback_id == callback_id)
                .order_by(CallbackAttemptRow.id)
            )
            return [(agent, outcome) for agent, outcome in rows]

    async def pending_summary(self) -> builtins.list[PendingSummary]:
        """Per queue: callbacks not yet done or failed, and the oldest one's join time."""
        async with self._read() as session:
            rows = await session.execute(
                select(
                    CallbackRow.queue,
                    func.count(),
                    func.min(CallbackRow.queue_joined_at),
                )
                .where(CallbackRow.state.in_(ACTIVE_CALLBACK_STATES))
                .group_by(CallbackRow.queue)
                .order_by(CallbackRow.queue)
            )
            # min() of a UTC column comes back naive on SQLite (no type on an aggregate).
            return [PendingSummary(queue, count, _utc(oldest)) for queue, count, oldest in rows]


def _utc(value: dt.datetime | str) -> dt.datetime:
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _claimed_by(owner: str, now: dt.datetime, lease: dt.timedelta) -> dict[str, object]:
    """The columns a claim sets (`claim` and `claim_id` alike)."""
    return {
        "state": "claimed",
        "lease_owner": owner,
        "lease_expires_at": now + lease,
        "updated_at": now,
    }


def _order(row: CallbackRow) -> tuple[int, dt.datetime, int]:
    return (-row.priority, row.queue_joined_at, row.id)


async def _active(session: AsyncSession, number: str, queue: str) -> CallbackRow | None:
    query = (
        select(CallbackRow)
        .where(
            CallbackRow.number == number,
            CallbackRow.queue == queue,
            CallbackRow.state.in_(ACTIVE_CALLBACK_STATES),
        )
        .with_for_update()
    )
    return (await session.scalars(query)).one_or_none()


async def _join(
    session: AsyncSession,
    row: CallbackRow,
    now: dt.datetime,
    joined_at: dt.datetime,
    actor: str,
) -> CallbackRequest:
    ticket = await session.get_one(TicketRow, row.ticket_id)
    row.queue_joined_at = min(row.queue_joined_at, joined_at)
    row.updated_at = now
    ticket.updated_at = now
    record(
        session,
        ticket,
        now=now,
        actor=actor,
        kind="callback",
        old=None,
        new="requested_again",
        reason=f"{row.number} asked again; the request keeps its place",
    )
    return CallbackRequest(ticket_from_row(ticket), _callback(row, ticket), False)


async def _claimed(
    session: AsyncSession,
    callback_id: int,
    owner: str,
    now: dt.datetime,
    *,
    allow_expired: bool = False,
) -> CallbackRow:
    row = await session.get(CallbackRow, callback_id, with_for_update=True)
    if row is None:
        raise CallbackNotFound(f"no callback with id {callback_id}")
    expired = row.lease_expires_at is not None and row.lease_expires_at < now
    if row.state != "claimed" or row.lease_owner != owner or (expired and not allow_expired):
        raise LeaseLost(
            f"callback {callback_id} is {row.state}"
            + (f" by {row.lease_owner}" if row.lease_owner else "")
            + f", not claimed by {owner}"
        )
    return row


def _callback(row: CallbackRow, ticket: TicketRow) -> Callback:
    return Callback(
        id=row.id,
        ticket_number=ticket.number,
        number=row.number,
        queue=row.queue,
        queue_joined_at=row.queue_joined_at,
        priority=row.priority,
        state=row.state,
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at,
        lease_owner=row.lease_owner,
        lease_expires_at=row.lease_expires_at,
        created_at=row.created_at,
        uniqueid=row.uniqueid,
        last_outcome=row.last_outcome,
        category=ticket.category,
        skills=dict(ticket.skills),
    )
