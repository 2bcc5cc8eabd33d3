"""The ticket store: tickets with their history, and the customers who call about them.

`TicketStore` is the async API the daemon, the IVR and the callback worker use; it returns
frozen snapshots (`Ticket`, `Customer`, `HistoryEntry`), never ORM rows. Every change and
its history row are written in one transaction. The store never reads the clock (`now` is
an argument), never computes deadlines (`acd.tickets.deadline` does) and never decides a
status change by itself (`acd.tickets.status` does). It does not create the schema:
run `acd.tickets.migrate.migrate` first.
"""

# Why numbers come from a counter row: a ticket number must be unique, short, and readable
# on the phone ("2026-000042"). An upsert that increments the year's row and returns the
# new value runs inside the ticket's own transaction, so the increment and the ticket
# commit or vanish together, and concurrent creators queue on that one row (PostgreSQL's
# row lock; SQLite's single writer). A rolled-back creation releases its number, so numbers
# have no gaps except where a later statement of the same transaction failed.
#
# Why SELECT ... FOR UPDATE before a status change: on PostgreSQL (READ COMMITTED) two
# agents changing the same ticket would both read the old status and both pass the
# transition check; the row lock makes the second one read the first one's result. SQLite
# ignores FOR UPDATE and needs nothing: BEGIN IMMEDIATE already serialises writers.

from __future__ import annotations

import builtins
import dataclasses
import datetime as dt
import functools
import re
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Final, Self, cast

from sqlalchemy import ColumnElement, bindparam, func, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from acd.tickets.engine import OneHopReads, Writes, create_engine_for, reader
from acd.tickets.schema import (
    CustomerPhoneRow,
    CustomerRow,
    NotificationRow,
    TicketCounterRow,
    TicketHistoryRow,
    TicketRow,
)
from acd.tickets.status import OPEN_STATUSES, TicketStatus, check_transition

__all__ = [
    "Customer",
    "CustomerNotFound",
    "HistoryEntry",
    "InvalidValue",
    "PhoneNumberTaken",
    "Ticket",
    "TicketNotFound",
    "TicketStore",
    "TicketStoreError",
    "create_engine_for",
    "is_e164",
]

_E164: Final = re.compile(r"^\+[1-9][0-9]{1,14}$")
_LANGUAGE: Final = re.compile(r"^[a-z]{2}$")
_ACTOR_MAX: Final = 64


class TicketStoreError(Exception):
    """Base of the errors the ticket store reports."""


class TicketNotFound(TicketStoreError, LookupError):  # noqa: N818 - reads as what happened
    """No ticket has this number."""


class CustomerNotFound(TicketStoreError, LookupError):  # noqa: N818 - reads as what happened
    """No customer has this id."""


class InvalidValue(TicketStoreError, ValueError):  # noqa: N818 - reads as what happened
    """An argument the store refuses (a malformed number, a naive time, an empty actor)."""


class PhoneNumberTaken(TicketStoreError, ValueError):  # noqa: N818 - reads as what happened
    """A phone number already belongs to another customer."""


@dataclasses.dataclass(frozen=True, slots=True)
class Ticket:
    """A snapshot of one ticket (times are UTC)."""

    number: str
    status: TicketStatus
    priority: str
    priority_rank: int
    deadline: dt.datetime
    created_at: dt.datetime
    updated_at: dt.datetime
    closed_at: dt.datetime | None
    queue: str | None
    skills: Mapping[str, int]
    caller_number: str | None
    customer_id: str | None
    owner: str | None
    category: str | None
    description: str
    recording_path: str | None
    rating: int | None = None
    follow_up: bool = False

    @property
    def is_open(self) -> bool:
        """True unless the ticket is done."""
        return self.status in OPEN_STATUSES


@dataclasses.dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One change of a ticket.

    `kind` is 'created' (new_value: the first status), 'status', 'owner' (old and new
    agent id, None for nobody) or 'note' (new_value: the note's text).
    """

    at: dt.datetime
    actor: str
    kind: str
    old_value: str | None
    new_value: str | None
    reason: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class Customer:
    """A customer contact and the E.164 numbers they call from."""

    id: str
    company: str
    name: str
    phones: tuple[str, ...] = ()
    sla_package: str | None = None
    language: str | None = None
    account_manager: str | None = None
    email: str | None = None


def is_e164(number: str) -> bool:
    """True if `number` is an E.164 number ('+' and 2 to 15 digits, no leading zero)."""
    return _E164.match(number) is not None


class TicketStore:
    """Tickets, their history and customers in one SQL database (SQLite or PostgreSQL).

    Construct it with an `AsyncEngine` (shared, not disposed here) or a URL (the store then
    owns its engine: use `async with` or call `aclose`).
    """

    def __init__(self, engine: AsyncEngine | str) -> None:
        self._owns_engine = isinstance(engine, str)
        self._engine = create_engine_for(engine) if isinstance(engine, str) else engine
        if self._engine.dialect.name not in {"sqlite", "postgresql"}:
            raise InvalidValue(
                f"unsupported database '{self._engine.dialect.name}' (use SQLite or PostgreSQL)"
            )
        self._write = Writes(self._engine)
        self._read = async_sessionmaker(reader(self._engine), expire_on_commit=False)
        self._one_hop = OneHopReads(self._engine)

    @property
    def engine(self) -> AsyncEngine:
        """The engine the store works on."""
        return self._engine

    async def aclose(self) -> None:
        """Dispose of the engine if the store created it."""
        self._one_hop.dispose()
        if self._owns_engine:
            await self._engine.dispose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # --- tickets ------------------------------------------------------------------------

    async def create_ticket(
        self,
        *,
        now: dt.datetime,
        actor: str,
        priority: str,
        priority_rank: int,
        deadline: dt.datetime,
        status: TicketStatus | str = TicketStatus.FIRST_LEVEL,
        queue: str | None = None,
        skills: Mapping[str, int] | None = None,
        caller_number: str | None = None,
        customer_id: str | None = None,
        owner: str | None = None,
        category: str | None = None,
        description: str = "",
        recording_path: str | None = None,
        reason: str | None = None,
    ) -> Ticket:
        """Open a ticket with the next number of `now`'s year (UTC), e.g. '2026-000042'."""
        validate_new_ticket(now=now, deadline=deadline, actor=actor, priority=priority)
        first = _status(status)
        if caller_number is not None:
            _e164(caller_number)
        async with self._write.begin() as session:
            row = await insert_ticket(
                session,
                now=now,
                actor=actor,
                priority=priority,
                priority_rank=priority_rank,
                deadline=deadline,
                status=first,
                queue=queue,
                skills=skills,
                caller_number=caller_number,
                customer_id=customer_id,
                owner=owner,
                category=category,
                description=description,
                recording_path=recording_path,
                reason=reason,
            )
            return ticket_from_row(row)

    async def get(self, number: str) -> Ticket:
        """The ticket with this number (`TicketNotFound` if none)."""
        async with self._read() as session:
            return ticket_from_row(await ticket_row(session, number))

    async def count_by_status(self) -> dict[str, int]:
        """How many tickets there are in each status (statuses without any are absent)."""
        async with self._read() as session:
            rows = await session.execute(
                select(TicketRow.status, func.count().label("n")).group_by(TicketRow.status)
            )
            return {row.status: row.n for row in rows}

    async def list(
        self,
        *,
        status: TicketStatus | str | None = None,
        owner: str | None = None,
        customer: str | None = None,
        open_only: bool = False,
    ) -> builtins.list[Ticket]:
        """Tickets matching every given filter, oldest first (the desk works in order)."""
        conditions: builtins.list[ColumnElement[bool]] = []
        if status is not None:
            conditions.append(TicketRow.status == _status(status).value)
        if owner is not None:
            conditions.append(TicketRow.owner == owner)
        if customer is not None:
            conditions.append(TicketRow.customer_id == customer)
        if open_only:
            conditions.append(TicketRow.status != TicketStatus.DONE.value)
        return await self._tickets(*conditions)

    async def open_tickets_for_number(self, number: str) -> builtins.list[Ticket]:
        """Open tickets of the customer who owns `number`, or raised from `number` (IVR)."""
        _e164(number)
        owner = select(CustomerPhoneRow.customer_id).where(CustomerPhoneRow.number == number)
        return await self._tickets(
            TicketRow.status != TicketStatus.DONE.value,
            or_(TicketRow.caller_number == number, TicketRow.customer_id.in_(owner)),
        )

    async def set_status(
        self,
        number: str,
        status: TicketStatus | str,
        *,
        actor: str,
        reason: str,
        now: dt.datetime,
    ) -> Ticket:
        """Move the ticket to `status` (`IllegalTransition` if the lifecycle forbids it)."""
        _aware(now, "now")
        _actor(actor)
        target = _status(status)
        async with self._write.begin() as session:
            row = await ticket_row(session, number, for_update=True)
            check_transition(row.status, target)
            record(
                session,
                row,
                now=now,
                actor=actor,
                kind="status",
                old=row.status,
                new=target.value,
                reason=reason,
            )
            row.status = target.value
            row.closed_at = now if target is TicketStatus.DONE else None
            row.updated_at = now
            enqueue_notification(session, row, kind="status", now=now)
            return ticket_from_row(row)

    async def assign(
        self,
        number: str,
        agent_id: str | None,
        *,
        actor: str,
        now: dt.datetime,
        reason: str | None = None,
    ) -> Ticket:
        """Make `agent_id` the ticket's owner (None: nobody); no change, no history row."""
        _aware(now, "now")
        _actor(actor)
        async with self._write.begin() as session:
            row = await ticket_row(session, number, for_update=True)
            if row.owner != agent_id:
                record(
                    session,
                    row,
                    now=now,
                    actor=actor,
                    kind="owner",
                    old=row.owner,
                    new=agent_id,
                    reason=reason,
                )
                row.owner = agent_id
                row.updated_at = now
            return ticket_from_row(row)

    async def add_note(
        self, number: str, text: str, *, actor: str, now: dt.datetime
    ) -> HistoryEntry:
        """Append a note to the ticket's history."""
        _aware(now, "now")
        _actor(actor)
        if not text.strip():
            raise InvalidValue("a note must not be empty")
        async with self._write.begin() as session:
            row = await ticket_row(session, number, for_update=True)
            row.updated_at = now
            return _entry(
                record(
                    session, row, now=now, actor=actor, kind="note", old=None, new=text, reason=None
                )
            )

    async def rate(
        self, number: str, rating: int, *, actor: str, now: dt.datetime, low: int
    ) -> Ticket:
        """The caller's rating (1 to 5); at or below `low` the ticket is flagged for follow-up."""
        _aware(now, "now")
        _actor(actor)
        check_rating(rating)
        async with self._write.begin() as session:
            row = await ticket_row(session, number, for_update=True)
            record(
                session,
                row,
                now=now,
                actor=actor,
                kind="rating",
                old=None if row.rating is None else str(row.rating),
                new=str(rating),
                reason=None,
            )
            row.rating = rating
            if rating <= low and not row.follow_up:
                record(
                    session,
                    row,
                    now=now,
                    actor=actor,
                    kind="follow_up",
                    old="false",
                    new="true",
                    reason=f"rated {rating} of 5",
                )
                row.follow_up = True
            row.updated_at = now
            return ticket_from_row(row)

    async def link_recording(self, number: str, path: str, *, actor: str, now: dt.datetime) -> None:
        """A recorded conversation about this ticket (every one is in the history)."""
        _aware(now, "now")
        _actor(actor)
        async with self._write.begin() as session:
            row = await ticket_row(session, number, for_update=True)
            record(
                session,
                row,
                now=now,
                actor=actor,
                kind="recording",
                old=None,
                new=path,
                reason=None,
            )
            if row.recording_path is None:
                row.recording_path = path
            row.updated_at = now

    async def history(self, number: str) -> builtins.list[HistoryEntry]:
        """Every change of the ticket, in the order it was made."""
        async with self._read() as session:
            row = await ticket_row(session, number)
            rows = await session.scalars(
                select(TicketHistoryRow)
                .where(TicketHistoryRow.ticket_id == row.id)
                .order_by(TicketHistoryRow.id)
            )
            return [_entry(r) for r in rows]

    # --- customers ----------------------------------------------------------------------

    async def upsert_customer(self, customer: Customer) -> Customer:
        """Create or replace the customer with `customer.id`, phone numbers included.

        `PhoneNumberTaken` if a number belongs to another customer (nothing is written).
        """
        async with self._write.begin() as session:
            return await _upsert(session, customer)

    async def import_customers(self, customers: Iterable[Customer]) -> int:
        """Upsert many customers in one transaction (all or none); returns how many."""
        count = 0
        async with self._write.begin() as session:
            for customer in customers:
                await _upsert(session, customer)
                count += 1
        return count

    async def customer(self, customer_id: str) -> Customer:
        """The customer with this id (`CustomerNotFound` if none)."""
        async with self._read() as session:
            row = await session.get(CustomerRow, customer_id)
            if row is None:
                raise CustomerNotFound(f"no customer with id '{customer_id}'")
            return _customer(row)

    async def caller(self, number: str) -> tuple[Customer | None, builtins.list[Ticket]]:
        """`customer_by_number` and `open_tickets_for_number` in one read: what every call
        on the hotline asks, so it costs one step, not six (see `OneHopReads`)."""
        _e164(number)
        return await self._one_hop.run(functools.partial(_caller_rows, number=number))

    async def customer_by_number(self, number: str) -> Customer | None:
        """The customer who owns this E.164 number, if any."""
        _e164(number)
        async with self._read() as session:
            phone = await session.get(CustomerPhoneRow, number)
            if phone is None:
                return None
            row = await session.get(CustomerRow, phone.customer_id)
            return None if row is None else _customer(row)

    # --- helpers ------------------------------------------------------------------------

    async def _tickets(self, *conditions: ColumnElement[bool]) -> builtins.list[Ticket]:
        query = select(TicketRow).where(*conditions)
        async with self._read() as session:
            rows = await session.scalars(query.order_by(TicketRow.created_at, TicketRow.id))
            return [ticket_from_row(r) for r in rows]


async def insert_ticket(
    session: AsyncSession,
    *,
    now: dt.datetime,
    actor: str,
    priority: str,
    priority_rank: int,
    deadline: dt.datetime,
    status: TicketStatus,
    queue: str | None,
    skills: Mapping[str, int] | None,
    caller_number: str | None,
    customer_id: str | None,
    owner: str | None,
    category: str | None,
    description: str,
    recording_path: str | None,
    reason: str | None,
) -> TicketRow:
    """Add a ticket, its number and its 'created' history row to `session`'s transaction.

    The one way tickets come to be (the store's `create_ticket`, the callback request):
    the caller has checked the values; this checks what needs the database.
    """
    if customer_id is not None and await session.get(CustomerRow, customer_id) is None:
        raise CustomerNotFound(f"no customer with id '{customer_id}'")
    number = await _next_number(session, now.astimezone(dt.UTC).year)
    row = TicketRow(
        number=number,
        status=status.value,
        priority=priority,
        priority_rank=priority_rank,
        deadline=deadline,
        created_at=now,
        updated_at=now,
        closed_at=now if status is TicketStatus.DONE else None,
        queue=queue,
        skills=dict(skills or {}),
        caller_number=caller_number,
        customer_id=customer_id,
        owner=owner,
        category=category,
        description=description,
        recording_path=recording_path,
    )
    session.add(row)
    await session.flush()
    record(
        session,
        row,
        now=now,
        actor=actor,
        kind="created",
        old=None,
        new=status.value,
        reason=reason,
    )
    enqueue_notification(session, row, kind="created", now=now)
    return row


async def _next_number(session: AsyncSession, year: int) -> str:
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = (
        insert(TicketCounterRow)
        .values(year=year, last=1)
        .on_conflict_do_update(
            index_elements=[TicketCounterRow.year],
            set_={"last": TicketCounterRow.last + 1},
        )
        .returning(TicketCounterRow.last)
    )
    sequence = (await session.execute(statement)).scalar_one()
    return f"{year}-{sequence:06d}"


async def ticket_row(session: AsyncSession, number: str, *, for_update: bool = False) -> TicketRow:
    query = select(TicketRow).where(TicketRow.number == number)
    if for_update:
        query = query.with_for_update()
    row = (await session.scalars(query)).one_or_none()
    if row is None:
        raise TicketNotFound(f"no ticket with number '{number}'")
    return row


def record(
    session: AsyncSession,
    row: TicketRow,
    *,
    now: dt.datetime,
    actor: str,
    kind: str,
    old: str | None,
    new: str | None,
    reason: str | None,
) -> TicketHistoryRow:
    entry = TicketHistoryRow(
        ticket_id=row.id,
        at=now,
        actor=actor,
        kind=kind,
        old_value=old,
        new_value=new,
        reason=reason,
    )
    session.add(entry)
    return entry


def enqueue_notification(
    session: AsyncSession, row: TicketRow, *, kind: str, now: dt.datetime
) -> NotificationRow:
    """Queue the customer's e-mail about `row` (kind 'created' or 'status') in `session`.

    Call it in the transaction that makes the change, after the ticket has its id and new
    status: the outbox row then commits or vanishes with the change (see NotificationRow).
    """
    notification = NotificationRow(
        ticket_id=row.id,
        kind=kind,
        status=row.status,
        created_at=now,
        state="pending",
        attempts=0,
        next_attempt_at=now,
    )
    session.add(notification)
    return notification


async def _upsert(session: AsyncSession, customer: Customer) -> Customer:
    _check_customer(customer)
    phones = list(dict.fromkeys(customer.phones))  # keep the order, drop repeats
    if phones:
        taken = await session.scalars(
            select(CustomerPhoneRow).where(
                CustomerPhoneRow.number.in_(phones),
                CustomerPhoneRow.customer_id != customer.id,
            )
        )
        clash = [f"{p.number} (customer '{p.customer_id}')" for p in taken]
        if clash:
            raise PhoneNumberTaken(
                f"customer '{customer.id}': numbers already taken: {', '.join(clash)}"
            )
    row = await session.get(CustomerRow, customer.id)
    if row is None:
        row = CustomerRow(id=customer.id)
        session.add(row)
    row.company = customer.company
    row.name = customer.name
    row.sla_package = customer.sla_package
    row.language = customer.language
    row.account_manager = customer.account_manager
    row.email = customer.email
    have = {p.number: p for p in (row.phones or [])}
    row.phones = [have.get(n) or CustomerPhoneRow(number=n) for n in phones]
    await session.flush()
    return dataclasses.replace(customer, phones=tuple(sorted(phones)))


def _check_customer(customer: Customer) -> None:
    if not customer.id or len(customer.id) > 64:
        raise InvalidValue(f"customer id must have 1 to 64 characters (got '{customer.id}')")
    for number in customer.phones:
        _e164(number)
    if customer.language is not None and not _LANGUAGE.match(customer.language):
        raise InvalidValue(f"language '{customer.language}' is not an ISO 639-1 code like 'de'")


_PHONES = CustomerPhoneRow.__table__.c
_CUSTOMERS = CustomerRow.__table__.c
_TICKETS = TicketRow.__table__.c
# The caller's lookup, built once (building a statement costs more than running it here).
_OWNER_OF_NUMBER: Final = select(_PHONES.customer_id).where(_PHONES.number == bindparam("number"))
_CUSTOMER: Final = select(CustomerRow.__table__).where(_CUSTOMERS.id == bindparam("owner"))
_CUSTOMER_NUMBERS: Final = (
    select(_PHONES.number).where(_PHONES.customer_id == bindparam("owner")).order_by(_PHONES.number)
)
_OPEN: Final = _TICKETS.status != TicketStatus.DONE.value
_BY_CREATION: Final = (_TICKETS.created_at, _TICKETS.id)
_OPEN_FROM_NUMBER: Final = (
    select(TicketRow.__table__)
    .where(_OPEN, _TICKETS.caller_number == bindparam("number"))
    .order_by(*_BY_CREATION)
)
_OPEN_FROM_NUMBER_OR_OWNER: Final = (
    select(TicketRow.__table__)
    .where(
        _OPEN,
        or_(
            _TICKETS.caller_number == bindparam("number"),
            _TICKETS.customer_id == bindparam("owner"),
        ),
    )
    .order_by(*_BY_CREATION)
)


def _caller_rows(
    connection: Connection, *, number: str
) -> tuple[Customer | None, builtins.list[Ticket]]:
    owner = connection.scalar(_OWNER_OF_NUMBER, {"number": number})
    customer = None
    if owner is not None:
        row = connection.execute(_CUSTOMER, {"owner": owner}).first()
        if row is not None:
            customer = Customer(
                id=row.id,
                company=row.company,
                name=row.name,
                phones=tuple(connection.scalars(_CUSTOMER_NUMBERS, {"owner": owner})),
                sla_package=row.sla_package,
                language=row.language,
                account_manager=row.account_manager,
                email=row.email,
            )
    rows = (
        connection.execute(_OPEN_FROM_NUMBER, {"number": number})
        if owner is None
        else connection.execute(_OPEN_FROM_NUMBER_OR_OWNER, {"number": number, "owner": owner})
    )
    # A Core row has the mapped class's attribute names: one mapping for both.
    return customer, [ticket_from_row(cast(TicketRow, r)) for r in rows]


def ticket_from_row(row: TicketRow) -> Ticket:
    return Ticket(
        number=row.number,
        status=TicketStatus(row.status),
        priority=row.priority,
        priority_rank=row.priority_rank,
        deadline=row.deadline,
        created_at=row.created_at,
        updated_at=row.updated_at,
        closed_at=row.closed_at,
        queue=row.queue,
        skills=dict(row.skills),
        caller_number=row.caller_number,
        customer_id=row.customer_id,
        owner=row.owner,
        category=row.category,
        description=row.description,
        recording_path=row.recording_path,
        rating=row.rating,
        follow_up=bool(row.follow_up),
    )


def _entry(row: TicketHistoryRow) -> HistoryEntry:
    return HistoryEntry(
        at=row.at,
        actor=row.actor,
        kind=row.kind,
        old_value=row.old_value,
        new_value=row.new_value,
        reason=row.reason,
    )


def _customer(row: CustomerRow) -> Customer:
    return Customer(
        id=row.id,
        company=row.company,
        name=row.name,
        phones=tuple(sorted(p.number for p in row.phones)),
        sla_package=row.sla_package,
        language=row.language,
        account_manager=row.account_manager,
        email=row.email,
    )


def check_rating(rating: int) -> None:
    """Refuse a rating off the 1-to-5 scale callers are told (`InvalidValue`)."""
    if not 1 <= rating <= 5:
        raise InvalidValue(f"a rating runs from 1 to 5 (got {rating})")


def validate_new_ticket(
    *, now: dt.datetime, deadline: dt.datetime, actor: str, priority: str
) -> None:
    """Refuse what no new ticket may have (`InvalidValue`), before touching the database."""
    _aware(now, "now")
    _aware(deadline, "deadline")
    _actor(actor)
    if not priority:
        raise InvalidValue("priority must not be empty")


def _aware(value: dt.datetime, name: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidValue(f"{name} must be a timezone-aware datetime (got {value!r})")


def _actor(actor: str) -> None:
    if not actor or len(actor) > _ACTOR_MAX:
        raise InvalidValue(f"actor must have 1 to {_ACTOR_MAX} characters (got {actor!r})")


def _e164(number: str) -> None:
    if not is_e164(number):
        raise InvalidValue(f"'{number}' is not an E.164 number like '+4930123456'")


def _status(value: TicketStatus | str) -> TicketStatus:
    try:
        return TicketStatus(value)
    except ValueError:
        valid = ", ".join(s.value for s in TicketStatus)
        raise InvalidValue(f"unknown ticket status '{value}' (valid: {valid})") from None
