"""Callback requests on real databases (SQLite and PostgreSQL): booking, claims, attempts.

The claim must hand every due callback to exactly one dialer, in order of priority and then
of the caller's original place in the queue; a dialer that died loses its claims when the
lease runs out. Two dialers with their own engines race over 1,000 callbacks below.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from acd.tickets import (
    CallbackStore,
    InvalidValue,
    LeaseLost,
    TicketStatus,
    TicketStore,
    create_engine_for,
)

T0 = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
LEASE = dt.timedelta(seconds=90)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


@pytest.fixture
def callbacks(engine: AsyncEngine) -> CallbackStore:
    return CallbackStore(engine)


async def _book(
    callbacks: CallbackStore,
    number: str = "+4930123456",
    *,
    queue: str = "first-level",
    joined: float = 0,
    now: float = 100,
    rank: int = 20,
) -> int:
    booked = await callbacks.request(
        now=at(now),
        number=number,
        queue=queue,
        queue_joined_at=at(joined),
        priority="normal",
        priority_rank=rank,
        deadline=at(3600),
        skills={"printing": 3},
        category="printing",
        uniqueid=f"1700000000.{number[-4:]}",
    )
    return booked.callback.id


async def test_a_request_books_a_ticket_and_a_callback_together(
    callbacks: CallbackStore, store: TicketStore
) -> None:
    booked = await callbacks.request(
        now=at(30),
        number="+4930123456",
        queue="first-level",
        queue_joined_at=at(0),
        priority="high",
        priority_rank=30,
        deadline=at(7200),
        skills={"printing": 3},
        category="printing",
        description="printer jams",
        uniqueid="1700000000.42",
    )
    assert booked.created
    ticket = await store.get(booked.ticket.number)
    assert ticket.caller_number == "+4930123456"
    assert ticket.queue == "first-level"
    assert ticket.skills == {"printing": 3}
    assert ticket.status is TicketStatus.FIRST_LEVEL
    callback = await callbacks.get(booked.callback.id)
    assert callback.ticket_number == ticket.number
    assert callback.queue_joined_at == at(0)
    assert callback.state == "pending"
    assert callback.uniqueid == "1700000000.42"
    kinds = [(h.kind, h.new_value) for h in await store.history(ticket.number)]
    assert kinds == [("created", "first_level"), ("callback", "requested")]


async def test_asking_again_joins_the_ticket_and_keeps_the_earlier_place(
    callbacks: CallbackStore, store: TicketStore
) -> None:
    first = await callbacks.request(
        now=at(60),
        number="+4930123456",
        queue="first-level",
        queue_joined_at=at(20),
        priority="normal",
        priority_rank=20,
        deadline=at(3600),
    )
    again = await callbacks.request(
        now=at(300),
        number="+4930123456",
        queue="first-level",
        queue_joined_at=at(10),
        priority="normal",
        priority_rank=20,
        deadline=at(3600),
    )
    assert not again.created
    assert again.ticket.number == first.ticket.number
    assert again.callback.id == first.callback.id
    assert again.callback.queue_joined_at == at(10)
    history = [h.new_value for h in await store.history(first.ticket.number)]
    assert history[-1] == "requested_again"
    # Another queue is another request.
    other = await _book(callbacks, "+4930123456", queue="second-printing")
    assert other != first.callback.id


async def test_concurrent_requests_from_one_number_make_one_ticket(
    callbacks: CallbackStore, store: TicketStore
) -> None:
    booked = await asyncio.gather(
        *(
            callbacks.request(
                now=at(30 + i),
                number="+4930999999",
                queue="first-level",
                queue_joined_at=at(i),
                priority="normal",
                priority_rank=20,
                deadline=at(3600),
            )
            for i in range(10)
        )
    )
    assert len({b.ticket.number for b in booked}) == 1
    assert sum(b.created for b in booked) == 1
    assert len(await store.list()) == 1


async def test_bad_requests_are_refused(callbacks: CallbackStore, store: TicketStore) -> None:
    with pytest.raises(InvalidValue):
        await _book(callbacks, "0301234")
    with pytest.raises(InvalidValue):
        await _book(callbacks, joined=60, now=30)
    assert await store.list() == []


async def test_claims_come_by_priority_then_original_join_time(callbacks: CallbackStore) -> None:
    late = await _book(callbacks, "+4930000001", joined=50)
    early = await _book(callbacks, "+4930000002", joined=10)
    urgent = await _book(callbacks, "+4930000003", joined=90, now=95, rank=40)
    other_queue = await _book(callbacks, "+4930000004", queue="second-printing", joined=0)
    claimed = await callbacks.claim(
        now=at(100), owner="a", lease=LEASE, queues={"first-level"}, limit=10
    )
    assert [c.id for c in claimed] == [urgent, early, late]
    assert all(c.state == "claimed" and c.lease_owner == "a" for c in claimed)
    assert [c.id for c in await callbacks.claim(now=at(100), owner="b", lease=LEASE)] == [
        other_queue
    ]
    assert await callbacks.claim(now=at(100), owner="b", lease=LEASE, limit=10) == []


async def test_the_callback_keeps_the_callers_queue_priority(callbacks: CallbackStore) -> None:
    boosted = await callbacks.request(
        now=at(100),
        number="+4930000009",
        queue="first-level",
        queue_joined_at=at(50),
        priority="normal",
        priority_rank=20,
        deadline=at(3600),
        queue_priority=23,  # normal, raised by the customer's SLA package
    )
    assert boosted.callback.priority == 23
    assert boosted.ticket.priority_rank == 20
    plain = await _book(callbacks, "+4930000010", joined=10)
    assert (await callbacks.get(plain)).priority == 20
    claimed = await callbacks.claim(now=at(100), owner="a", lease=LEASE, limit=2)
    assert [c.id for c in claimed] == [boosted.callback.id, plain]


async def test_nothing_is_claimed_before_its_next_attempt(callbacks: CallbackStore) -> None:
    ident = await _book(callbacks)
    [claimed] = await callbacks.claim(now=at(140), owner="a", lease=LEASE)
    await callbacks.start_attempt(
        ident, owner="a", now=at(141), agent="alice", uniqueid=None, lease=LEASE
    )
    await callbacks.finish_attempt(
        ident, owner="a", now=at(160), outcome="no_answer", retry_at=at(360)
    )
    assert await callbacks.claim(now=at(359), owner="a", lease=LEASE) == []
    assert [c.id for c in await callbacks.claim(now=at(360), owner="a", lease=LEASE)] == [ident]
    assert claimed.id == ident


async def test_an_expired_lease_is_taken_over_and_the_old_owner_loses(
    callbacks: CallbackStore, store: TicketStore
) -> None:
    ident = await _book(callbacks)
    [claimed] = await callbacks.claim(now=at(140), owner="daemon-a", lease=LEASE)
    assert await callbacks.claim(now=at(200), owner="daemon-b", lease=LEASE) == []
    await callbacks.renew(ident, owner="daemon-a", now=at(200), lease=LEASE)
    assert await callbacks.claim(now=at(280), owner="daemon-b", lease=LEASE) == []
    [taken] = await callbacks.claim(now=at(291), owner="daemon-b", lease=LEASE)
    assert taken.id == ident
    assert taken.lease_owner == "daemon-b"
    with pytest.raises(LeaseLost):
        await callbacks.renew(ident, owner="daemon-a", now=at(292), lease=LEASE)
    with pytest.raises(LeaseLost):
        await callbacks.start_attempt(
            ident, owner="daemon-a", now=at(292), agent="alice", uniqueid=None, lease=LEASE
        )
    history = await store.history(claimed.ticket_number)
    assert (history[-1].new_value, history[-1].old_value) == ("taken_over", "daemon-a")


async def test_a_release_makes_it_pending_again_without_an_attempt(
    callbacks: CallbackStore,
) -> None:
    ident = await _book(callbacks)
    await callbacks.claim(now=at(140), owner="a", lease=LEASE)
    await callbacks.release(ident, owner="a", now=at(141))
    again = await callbacks.get(ident)
    assert (again.state, again.attempts, again.lease_owner) == ("pending", 0, None)
    assert await callbacks.attempts(ident) == []


async def test_an_answered_attempt_closes_it_and_the_agent_owns_the_ticket(
    callbacks: CallbackStore, store: TicketStore
) -> None:
    ident = await _book(callbacks)
    [claimed] = await callbacks.claim(now=at(140), owner="a", lease=LEASE)
    await callbacks.start_attempt(
        ident, owner="a", now=at(141), agent="alice", uniqueid="x", lease=LEASE
    )
    done = await callbacks.finish_attempt(
        ident, owner="a", now=at(190), outcome="answered", retry_at=None
    )
    assert (done.state, done.attempts, done.last_outcome) == ("done", 1, "answered")
    ticket = await store.get(claimed.ticket_number)
    assert ticket.owner == "alice"
    assert ticket.status is TicketStatus.FIRST_LEVEL
    assert await callbacks.attempts(ident) == [("alice", "answered")]
    entries = [(h.kind, h.new_value) for h in await store.history(claimed.ticket_number)]
    assert entries[-3:] == [("callback", "attempt 1"), ("owner", "alice"), ("callback", "answered")]
    assert await callbacks.pending_summary() == []


async def test_no_tries_left_fails_it_and_the_ticket_waits_with_the_reason(
    callbacks: CallbackStore, store: TicketStore
) -> None:
    ident = await _book(callbacks)
    outcomes = ["busy", "no_answer", "failed"]
    for n, outcome in enumerate(outcomes):
        [claimed] = await callbacks.claim(now=at(100 * (n + 1)), owner="a", lease=LEASE)
        await callbacks.start_attempt(
            ident, owner="a", now=at(100 * (n + 1)), agent="bob", uniqueid=None, lease=LEASE
        )
        last = n == len(outcomes) - 1
        await callbacks.finish_attempt(
            ident,
            owner="a",
            now=at(100 * (n + 1) + 30),
            outcome=outcome,  # type: ignore[arg-type]
            retry_at=None if last else at(100 * (n + 2)),
        )
    final = await callbacks.get(ident)
    assert (final.state, final.attempts) == ("failed", 3)
    ticket = await store.get(claimed.ticket_number)
    assert ticket.status is TicketStatus.WAITING
    status = [h for h in await store.history(ticket.number) if h.kind == "status"]
    assert status[-1].reason == "customer not reached after 3 callback attempts"
    assert [o for _a, o in await callbacks.attempts(ident)] == outcomes
    # Failed for good: never claimed again.
    assert await callbacks.claim(now=at(99999), owner="a", lease=LEASE) == []
    # The number may ask again: a new request, a new ticket.
    again = await callbacks.request(
        now=at(500),
        number="+4930123456",
        queue="first-level",
        queue_joined_at=at(490),
        priority="normal",
        priority_rank=20,
        deadline=at(9000),
    )
    assert again.created
    assert again.ticket.number != ticket.number


async def test_pending_summary_counts_per_queue(callbacks: CallbackStore) -> None:
    await _book(callbacks, "+4930000001", joined=20)
    await _book(callbacks, "+4930000002", joined=5)
    await _book(callbacks, "+4930000003", queue="second-printing", joined=7)
    summary = {s.queue: (s.count, s.oldest_joined_at) for s in await callbacks.pending_summary()}
    assert summary == {"first-level": (2, at(5)), "second-printing": (1, at(7))}


async def test_two_dialers_never_claim_the_same_callback(
    database_url: str, engine: AsyncEngine
) -> None:
    """1,000 pending callbacks, two dialers on their own engines (two daemons).

    On PostgreSQL the dialers commit without waiting for the disk (synchronous_commit=off,
    a setting of these test connections only): locking is what is tested, not fsync. SQLite
    has one writer at a time by design; 300 callbacks show the same there.
    """
    postgres = engine.dialect.name == "postgresql"
    total = 1000 if postgres else 300

    def fast_engine() -> AsyncEngine:
        if postgres:
            settings = {"server_settings": {"synchronous_commit": "off"}}
            return create_engine_for(database_url, connect_args=settings)
        return create_engine_for(database_url)

    seeding = fast_engine()
    seeder = CallbackStore(seeding)
    try:
        for start in range(0, total, 100):
            await asyncio.gather(
                *(
                    _book(seeder, f"+49301{n:06d}", joined=n % 97, now=100)
                    for n in range(start, start + 100)
                )
            )
    finally:
        await seeding.dispose()

    async def dialer(name: str) -> list[int]:
        own = fast_engine()
        store = CallbackStore(own)
        mine: list[int] = []
        try:
            while True:
                batch = await store.claim(now=at(200), owner=name, lease=LEASE, limit=7)
                if not batch:
                    return mine
                for callback in batch:
                    await store.start_attempt(
                        callback.id,
                        owner=name,
                        now=at(201),
                        agent=name,
                        uniqueid=None,
                        lease=LEASE,
                    )
                    await store.finish_attempt(
                        callback.id, owner=name, now=at(202), outcome="answered", retry_at=None
                    )
                    mine.append(callback.id)
        finally:
            await own.dispose()

    first, second = await asyncio.gather(dialer("daemon-a"), dialer("daemon-b"))
    claims = Counter(first + second)
    assert len(claims) == total
    assert max(claims.values()) == 1
    assert first
    assert second
    assert await CallbackStore(engine).pending_summary() == []


async def test_a_booking_waits_only_its_lock_wait_for_another_writer(
    sqlite_engine: AsyncEngine, tmp_path: Path
) -> None:
    """A caller is on the line: with the database locked by another writer the booking
    fails after its own short wait (the caller is told and goes back into the queue),
    and other writers keep the engine's long busy timeout."""
    callbacks = CallbackStore(sqlite_engine, booking_lock_wait=0.2)
    blocker = sqlite3.connect(tmp_path / "tickets.db", isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        with pytest.raises(OperationalError, match="database is locked"):
            await _book(callbacks)
        blocker.execute("ROLLBACK")
        assert blocker.execute("SELECT count(*) FROM tickets").fetchone() == (0,)
        await _book(callbacks)  # the pooled connection is usable again
    finally:
        blocker.close()
    async with sqlite_engine.begin() as connection:
        wait = (await connection.exec_driver_sql("PRAGMA busy_timeout")).scalar()
    assert wait == 30_000  # other writers: the engine's usual wait
