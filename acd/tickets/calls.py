"""Call records: one row per hotline call, what the IVR captured and how the call ended.

The daemon writes a record when it routes a call (`arrival`: caller, language, skills,
answers, category, customer) and completes it when the live state says the queue visit
ended (`finish`: queue, times, agent, outcome). Both are upserts keyed by the caller
channel's Uniqueid, so a call routed again (a transfer) or finished after a daemon restart
still has one record. Reports read these rows. This module never reads the clock.

Each change is a `CallChange` (made by `arrival`, `finish`, `recording` and `rating`, which
check the values), and `CallStore.write` applies a list of them in one transaction, in
order. The daemon does not wait for its records: it hands them to a `CallJournal`, which
writes whatever has accumulated as one batch while the calls go on. Per call that was two
write transactions of four statements each; on SQLite through aiosqlite every statement is
several hops to the driver's thread, ~5 ms of CPU per record on the benchmark machine, the
larger part of the daemon's cost per call (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import itertools
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, cast

from sqlalchemy import ColumnElement, Table, bindparam, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from acd.tickets.engine import Writes, reader
from acd.tickets.schema import AGENT_ID_MAX, CallRow, CustomerRow
from acd.tickets.store import InvalidValue, TicketStoreError, check_rating, is_e164

__all__ = [
    "CallChange",
    "CallJournal",
    "CallRecord",
    "CallStore",
    "arrival",
    "finish",
    "rating",
    "recording",
]

_UNIQUEID_MAX = 64
_ANSWER_MAX = 64  # a typed customer or contract number, never free text
# The columns' sizes (CallRow): PostgreSQL refuses longer values, SQLite would keep them.
_OUTCOME_MAX: Final = 32
_LANGUAGE_MAX: Final = 2
_CATEGORY_MAX: Final = 64
# Core, not the ORM: a batch is one executemany per run of changes, no identity map.
_CALLS: Final = cast(Table, CallRow.__table__)


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One call as the store keeps it."""

    uniqueid: str
    caller_number: str | None
    arrived_at: dt.datetime
    language: str | None
    priority: int | None
    skills: Mapping[str, int]
    answers: Mapping[str, str]
    category: str | None
    customer_id: str | None
    queue: str | None
    queue_joined_at: dt.datetime | None
    answered_at: dt.datetime | None
    left_at: dt.datetime | None
    agent: str | None
    outcome: str | None
    recording_path: str | None
    rating: int | None


class ChangeKind(enum.Enum):
    ARRIVAL = "arrival"
    FINISH = "finish"
    RECORDING = "recording"
    RATING = "rating"


@dataclass(frozen=True, slots=True)
class CallChange:
    """One checked change of one call's record; `CallStore.write` applies it."""

    kind: ChangeKind
    uniqueid: str
    # Column values: for an arrival, finish or recording the row to insert, whose columns
    # other than arrived_at also update an existing row; for a rating, the new rating.
    values: Mapping[str, Any]


# What each kind of change updates in an existing record (besides a recording, kept once
# linked); arrived_at is never updated: the first change made the record.
_UPDATED_COLUMNS: Final = {
    ChangeKind.ARRIVAL: (
        "caller_number",
        "language",
        "priority",
        "skills",
        "answers",
        "category",
        "customer_id",
    ),
    ChangeKind.FINISH: ("queue", "outcome", "queue_joined_at", "answered_at", "left_at", "agent"),
    ChangeKind.RECORDING: (),
}


def _upsert(insert: Any, updated: tuple[str, ...]) -> Any:
    excluded = insert.excluded
    set_: dict[str, ColumnElement[Any]] = {name: excluded[name] for name in updated}
    set_["recording_path"] = func.coalesce(excluded.recording_path, _CALLS.c.recording_path)
    return insert.on_conflict_do_update(index_elements=[_CALLS.c.uniqueid], set_=set_)


def arrival(
    uniqueid: str,
    *,
    now: dt.datetime,
    caller_number: str | None,
    language: str | None = None,
    priority: int | None = None,
    skills: Mapping[str, int] | None = None,
    answers: Mapping[str, str] | None = None,
    category: str | None = None,
    customer_id: str | None = None,
    recording_path: str | None = None,
) -> CallChange:
    """What is known when the call is routed (a call routed again updates its record)."""
    _check_uniqueid(uniqueid)
    if caller_number is not None and not is_e164(caller_number):
        raise InvalidValue(f"'{caller_number}' is not an E.164 number")
    for key, value in (answers or {}).items():
        if len(key) > _ANSWER_MAX or len(value) > _ANSWER_MAX:
            raise InvalidValue(f"answer '{key[:_ANSWER_MAX]}' is too long")
    if language is not None and len(language) > _LANGUAGE_MAX:
        raise InvalidValue(f"language '{language[:20]}' is not a two-letter code")
    if category is not None and len(category) > _CATEGORY_MAX:
        raise InvalidValue(f"category '{category[:_CATEGORY_MAX]}...' is too long")
    return CallChange(
        ChangeKind.ARRIVAL,
        uniqueid,
        {
            "arrived_at": now,
            "caller_number": caller_number,
            "language": language,
            "priority": priority,
            "skills": dict(skills) if skills else None,
            "answers": dict(answers) if answers else None,
            "category": category,
            "customer_id": customer_id,
            "recording_path": recording_path,
        },
    )


def finish(
    uniqueid: str,
    *,
    now: dt.datetime,
    queue: str | None,
    outcome: str,
    joined_at: dt.datetime | None,
    answered_at: dt.datetime | None,
    agent: str | None,
    recording_path: str | None = None,
) -> CallChange:
    """How the call's (last) queue visit ended. A call this daemon never routed (the
    dialplan's fallback, or routed before a restart) gets its record here."""
    _check_uniqueid(uniqueid)
    for name, value in (("queue", queue), ("agent", agent)):
        if value is not None and len(value) > AGENT_ID_MAX:
            raise InvalidValue(f"{name} '{value[:AGENT_ID_MAX]}...' is too long")
    if len(outcome) > _OUTCOME_MAX:
        raise InvalidValue(f"outcome '{outcome[:_OUTCOME_MAX]}...' is too long")
    return CallChange(
        ChangeKind.FINISH,
        uniqueid,
        {
            "arrived_at": joined_at or now,
            "queue": queue,
            "outcome": outcome,
            "queue_joined_at": joined_at,
            "answered_at": answered_at,
            "left_at": now,
            "agent": agent,
            "recording_path": recording_path,
        },
    )


def recording(uniqueid: str, path: str, *, now: dt.datetime) -> CallChange:
    """The recorded conversation of this call."""
    _check_uniqueid(uniqueid)
    return CallChange(ChangeKind.RECORDING, uniqueid, {"arrived_at": now, "recording_path": path})


def rating(uniqueid: str, stars: int) -> CallChange:
    """The caller's rating (1 to 5) of the help they got; a call without a record keeps none."""
    _check_uniqueid(uniqueid)
    check_rating(stars)
    return CallChange(ChangeKind.RATING, uniqueid, {"rating": stars})


class CallStore:
    """Call records on the ticket store's database (SQLite or PostgreSQL)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._write = Writes(engine)
        self._read = async_sessionmaker(reader(engine), expire_on_commit=False)
        insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
        # Made once: building the upsert (its `excluded` alias above all) costs more than
        # executing it for a batch.
        self._upserts = {
            kind: _upsert(insert(_CALLS), updated) for kind, updated in _UPDATED_COLUMNS.items()
        }

    async def write(self, changes: Sequence[CallChange]) -> None:
        """Apply `changes` in one transaction, in order (all or none)."""
        if not changes:
            return
        async with self._write.begin() as session:
            for kind, run in itertools.groupby(changes, key=lambda change: change.kind):
                await self._apply(session, kind, list(run))

    async def get(self, uniqueid: str) -> CallRecord | None:
        """The record of this call, if any."""
        async with self._read() as session:
            row = await session.get(CallRow, uniqueid)
            return None if row is None else _record(row)

    async def _apply(
        self, session: AsyncSession, kind: ChangeKind, changes: list[CallChange]
    ) -> None:
        # One statement for a run of changes of one kind (executemany); upserts, so that
        # an arrival and its finish in the same run, or a call routed twice, make one row.
        if kind is ChangeKind.RATING:
            await session.execute(
                update(_CALLS).where(_CALLS.c.uniqueid == bindparam("key")),
                [{"key": c.uniqueid, "rating": c.values["rating"]} for c in changes],
            )
            return
        rows = [{"uniqueid": c.uniqueid, **c.values} for c in changes]
        if kind is ChangeKind.ARRIVAL:
            await self._unlink_missing_customers(session, rows)
        await session.execute(self._upserts[kind], rows)

    @staticmethod
    async def _unlink_missing_customers(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
        # A customer deleted since the caller's lookup: keep the call, drop the link (the
        # foreign key would refuse the row, and the whole batch with it).
        wanted = {row["customer_id"] for row in rows if row["customer_id"] is not None}
        if not wanted:
            return
        found = set(await session.scalars(select(CustomerRow.id).where(CustomerRow.id.in_(wanted))))
        for row in rows:
            if row["customer_id"] not in found:
                row["customer_id"] = None


LostRecord = Callable[[CallChange, BaseException], None]


class CallJournal:
    """Writes call records behind the calls: `add` never waits, `run` writes in batches.

    A change waits up to `linger` seconds for others to join it, and whatever accumulates
    while one batch is written goes as the next (at most `batch_size` changes): one
    transaction carries many calls' records (a single record's transaction costs as much
    as forty records' in one batch). Changes keep their order. A batch the database
    refuses is tried change by change, so one bad change costs only itself; a change that
    cannot be written (or that finds `limit` changes already waiting) is handed to
    `on_lost` and dropped: records never hold up a call, and a lost database cannot make
    the daemon grow without bound.
    """

    def __init__(
        self,
        calls: CallStore,
        *,
        on_lost: LostRecord,
        linger: float = 0.25,
        batch_size: int = 500,
        limit: int = 20_000,
    ) -> None:
        self._calls = calls
        self._linger = linger
        self._on_lost = on_lost
        self._batch_size = batch_size
        self._limit = limit
        self._pending: deque[CallChange] = deque()
        self._more = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def pending(self) -> int:
        """Changes not yet written (the batch being written included)."""
        return len(self._pending)

    def add(self, change: CallChange) -> None:
        if len(self._pending) >= self._limit:
            self._on_lost(change, OverflowError(f"{self._limit} call records waiting"))
            return
        self._pending.append(change)
        self._idle.clear()
        self._more.set()

    async def run(self) -> None:
        """Write the changes as they come, until cancelled."""
        while True:
            await self._more.wait()
            await asyncio.sleep(self._linger)
            self._more.clear()
            while self._pending:
                batch = list(itertools.islice(self._pending, self._batch_size))
                await self._write(batch)
                for _ in batch:
                    self._pending.popleft()
            self._idle.set()

    async def drain(self, seconds: float) -> bool:
        """Wait up to `seconds` for every change added so far to be written (or
        lost); False if some still wait. `run` must be running."""
        try:
            async with asyncio.timeout(seconds):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    async def _write(self, batch: list[CallChange]) -> None:
        try:
            await self._calls.write(batch)
        except (SQLAlchemyError, TicketStoreError) as error:
            if len(batch) == 1:
                self._on_lost(batch[0], error)
                return
        else:
            return
        for change in batch:
            try:
                await self._calls.write([change])
            except (SQLAlchemyError, TicketStoreError) as error:
                self._on_lost(change, error)


def _check_uniqueid(uniqueid: str) -> None:
    if not uniqueid or len(uniqueid) > _UNIQUEID_MAX:
        raise InvalidValue(f"a call's uniqueid must have 1 to {_UNIQUEID_MAX} characters")


def _record(row: CallRow) -> CallRecord:
    return CallRecord(
        uniqueid=row.uniqueid,
        caller_number=row.caller_number,
        arrived_at=row.arrived_at,
        language=row.language,
        priority=row.priority,
        skills=dict(row.skills or {}),
        answers=dict(row.answers or {}),
        category=row.category,
        customer_id=row.customer_id,
        queue=row.queue,
        queue_joined_at=row.queue_joined_at,
        answered_at=row.answered_at,
        left_at=row.left_at,
        agent=row.agent,
        outcome=row.outcome,
        recording_path=row.recording_path,
        rating=row.rating,
    )
