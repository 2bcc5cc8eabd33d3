"""Call records on real databases (SQLite and PostgreSQL): one row per call, upserted."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from acd.tickets import CallStore, Customer, InvalidValue, TicketStore

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
    await calls.arrived(
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
    await calls.finished(
        "1700000000.1",
        now=at(95),
        queue="first-level",
        outcome="answered",
        joined_at=at(12),
        answered_at=at(40),
        agent="alice",
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
    await calls.arrived("u1", now=at(0), caller_number=None, category="general")
    await calls.arrived("u1", now=at(30), caller_number=None, category="printing")
    record = await calls.get("u1")
    assert record is not None
    assert (record.arrived_at, record.category) == (at(0), "printing")
    # Never routed by this daemon (fallback, or before a restart): finished makes the row.
    await calls.finished(
        "u2",
        now=at(50),
        queue="first-level",
        outcome="abandoned",
        joined_at=at(20),
        answered_at=None,
        agent=None,
    )
    late = await calls.get("u2")
    assert late is not None
    assert (late.arrived_at, late.outcome) == (at(20), "abandoned")


async def test_bad_records_are_refused(calls: CallStore) -> None:
    with pytest.raises(InvalidValue):
        await calls.arrived("", now=at(0), caller_number=None)
    with pytest.raises(InvalidValue):
        await calls.arrived("u", now=at(0), caller_number="anonymous")
    with pytest.raises(InvalidValue):
        await calls.arrived("u", now=at(0), caller_number=None, answers={"x": "9" * 500})
    assert await calls.get("u") is None


async def test_an_unknown_customer_is_not_linked(calls: CallStore) -> None:
    await calls.arrived("u3", now=at(0), caller_number=None, customer_id="gone")
    record = await calls.get("u3")
    assert record is not None
    assert record.customer_id is None
