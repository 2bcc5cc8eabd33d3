"""Call records on real databases (SQLite and PostgreSQL): one row per call, upserted."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence

import pytest
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from acd.tickets import CallStore, Customer, InvalidValue, TicketStore
from acd.tickets.calls import CallChange, CallJournal, arrival, finish, rating, recording

T0 = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


@pytest.fixture
def calls(engine: AsyncEngine) -> CallStore:
    return CallStore(engine)


async def test_a_call_keeps_what_the_ivr_captured_and_how_it_ended(
    calls: CallStore, store: TicketStore
) -> None:
    await store.upsert_customer(
        Customer(id="acme-1", company="ACME", name="Ana", phones=("+4930123456",))
    )
    await calls.write(
        [
            arrival(
                "1700000000.1",
                now=at(0),
                caller_number="+4930123456",
                language="fr",
                priority=30,
                skills={"printing": 3},
                answers={"customer_number": "79927398713"},
                category="printing",
                customer_id="acme-1",
            )
        ]
    )
    await calls.write(
        [
            finish(
                "1700000000.1",
                now=at(95),
                queue="first-level",
                outcome="answered",
                joined_at=at(12),
                answered_at=at(40),
                agent="alice",
            )
        ]
    )
    record = await calls.get("1700000000.1")
    assert record is not None
    assert (record.language, record.priority, record.category) == ("fr", 30, "printing")
    assert record.skills == {"printing": 3}
    assert record.answers == {"customer_number": "79927398713"}
    assert record.customer_id == "acme-1"
    assert (record.queue, record.outcome, record.agent) == ("first-level", "answered", "alice")
    assert (record.arrived_at, record.queue_joined_at, record.answered_at, record.left_at) == (
        at(0),
        at(12),
        at(40),
        at(95),
    )


async def test_routing_again_updates_and_a_late_finish_still_makes_one_record(
    calls: CallStore,
) -> None:
    await calls.write([arrival("u1", now=at(0), caller_number=None, category="general")])
    await calls.write([arrival("u1", now=at(30), caller_number=None, category="printing")])
    record = await calls.get("u1")
    assert record is not None
    assert (record.arrived_at, record.category) == (at(0), "printing")
    # Never routed by this daemon (fallback, or before a restart): finished makes the row.
    await calls.write(
        [
            finish(
                "u2",
                now=at(50),
                queue="first-level",
                outcome="abandoned",
                joined_at=at(20),
                answered_at=None,
                agent=None,
            )
        ]
    )
    late = await calls.get("u2")
    assert late is not None
    assert (late.arrived_at, late.outcome) == (at(20), "abandoned")


async def test_bad_records_are_refused(calls: CallStore) -> None:
    with pytest.raises(InvalidValue):
        await calls.write([arrival("", now=at(0), caller_number=None)])
    with pytest.raises(InvalidValue):
        await calls.write([arrival("u", now=at(0), caller_number="anonymous")])
    with pytest.raises(InvalidValue):
        await calls.write([arrival("u", now=at(0), caller_number=None, answers={"x": "9" * 500})])
    with pytest.raises(InvalidValue):
        await calls.write([arrival("u", now=at(0), caller_number=None, language="english")])
    with pytest.raises(InvalidValue):
        await calls.write([arrival("u", now=at(0), caller_number=None, category="c" * 65)])
    assert await calls.get("u") is None


async def test_an_unknown_customer_is_not_linked(calls: CallStore) -> None:
    await calls.write([arrival("u3", now=at(0), caller_number=None, customer_id="gone")])
    record = await calls.get("u3")
    assert record is not None
    assert record.customer_id is None


async def test_a_recording_stays_linked_and_a_rating_needs_a_record(calls: CallStore) -> None:
    await calls.write([recording("u4", "/rec/u4.wav", now=at(5))])  # before the arrival: makes it
    await calls.write([arrival("u4", now=at(6), caller_number=None)])
    await calls.write([rating("u4", 2)])
    await calls.write([rating("nobody", 5)])
    record = await calls.get("u4")
    assert record is not None
    assert (record.arrived_at, record.recording_path, record.rating) == (at(5), "/rec/u4.wav", 2)
    assert await calls.get("nobody") is None
    with pytest.raises(InvalidValue):
        await calls.write([rating("u4", 6)])


async def test_one_write_applies_many_calls_changes_in_order(
    calls: CallStore, store: TicketStore
) -> None:
    await store.upsert_customer(Customer(id="acme-1", company="ACME", name="Ana", phones=()))
    changes = []
    for n in range(50):
        uid = f"1700000000.{n}"
        changes += [
            arrival(uid, now=at(n), caller_number=None, customer_id="acme-1", category="a"),
            arrival(uid, now=at(n + 1), caller_number=None, customer_id="gone", category="b"),
            finish(
                uid,
                now=at(n + 60),
                queue="first-level",
                outcome="answered",
                joined_at=at(n + 10),
                answered_at=at(n + 20),
                agent="alice",
            ),
            rating(uid, 1 + n % 5),
        ]
    await calls.write(changes)
    for n in (0, 49):
        record = await calls.get(f"1700000000.{n}")
        assert record is not None
        # the second arrival won, its unknown customer unlinked; the first arrival's time kept
        assert (record.arrived_at, record.category, record.customer_id) == (at(n), "b", None)
        assert (record.outcome, record.left_at, record.rating) == (
            "answered",
            at(n + 60),
            1 + n % 5,
        )


async def test_the_journal_writes_what_accumulated_in_batches_and_drains(
    calls: CallStore, engine: AsyncEngine
) -> None:
    lost: list[tuple[CallChange, BaseException]] = []
    transactions = 0
    write = calls.write

    async def counted_write(changes: Sequence[CallChange]) -> None:
        nonlocal transactions
        transactions += 1
        await write(changes)

    calls.write = counted_write  # type: ignore[method-assign]
    journal = CallJournal(
        calls, on_lost=lambda c, e: lost.append((c, e)), linger=0.0, batch_size=40
    )
    runner = asyncio.create_task(journal.run())
    try:
        for n in range(100):
            journal.add(arrival(f"u{n}", now=at(n), caller_number=None))
        assert journal.pending == 100
        assert await journal.drain(seconds=30)
        assert journal.pending == 0
        # 100 added before the journal ran: batches of at most 40, not 100 transactions
        assert transactions == 3
        journal.add(
            finish(
                "u7",
                now=at(90),
                queue="q",
                outcome="abandoned",
                joined_at=None,
                answered_at=None,
                agent=None,
            )
        )
        assert await journal.drain(seconds=30)
    finally:
        runner.cancel()
    record = await calls.get("u7")
    assert record is not None
    assert record.outcome == "abandoned"
    assert lost == []


async def test_the_journal_hands_on_what_it_cannot_write_and_keeps_the_rest(
    calls: CallStore,
) -> None:
    lost: list[str] = []
    journal = CallJournal(calls, on_lost=lambda c, e: lost.append(c.uniqueid), limit=3)
    # a finish whose queue name the schema cannot hold: refused by the checks up front
    with pytest.raises(InvalidValue):
        finish(
            "x",
            now=at(0),
            queue="q" * 300,
            outcome="answered",
            joined_at=None,
            answered_at=None,
            agent=None,
        )
    for n in range(4):
        journal.add(arrival(f"u{n}", now=at(n), caller_number=None))
    assert lost == ["u3"]  # the limit: dropped and reported, never queued
    runner = asyncio.create_task(journal.run())
    try:
        assert await journal.drain(seconds=30)
    finally:
        runner.cancel()
    assert [await calls.get(f"u{n}") is not None for n in range(4)] == [True, True, True, False]


async def test_a_batch_the_database_refuses_is_written_change_by_change(
    calls: CallStore,
) -> None:
    write = calls.write

    async def refusing_u2(changes: Sequence[CallChange]) -> None:
        if any(c.uniqueid == "u2" for c in changes):
            raise OperationalError("INSERT", {}, Exception("disk I/O error"))
        await write(changes)

    calls.write = refusing_u2  # type: ignore[method-assign]
    lost: list[str] = []
    journal = CallJournal(calls, on_lost=lambda c, e: lost.append(c.uniqueid))
    for n in range(4):
        journal.add(arrival(f"u{n}", now=at(n), caller_number=None))
    runner = asyncio.create_task(journal.run())
    try:
        assert await journal.drain(seconds=30)
    finally:
        runner.cancel()
    assert lost == ["u2"]
    assert [await calls.get(f"u{n}") is not None for n in range(4)] == [True, True, False, True]
