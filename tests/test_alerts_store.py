"""Monitoring alerts in the store, on real databases (SQLite and PostgreSQL).

An alert opens one high-priority ticket per dedupe key, whatever the repeats and however
many arrive at once; the customer's open alert ticket is found for their next call.
"""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from acd.config.model import Sla, SlaPriority
from acd.tickets import (
    ALERT_ACTOR,
    Alert,
    AlertStore,
    AlertTicket,
    Customer,
    CustomerNotFound,
    InvalidValue,
    TicketStatus,
    TicketStore,
    alert_priority,
    create_engine_for,
)
from acd.tickets.alerts import AlertRow

T0 = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)


def at(minutes: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def disk_full(key: str = "srv42/disk", customer: str = "acme", summary: str = "") -> Alert:
    return Alert(
        customer_id=customer,
        severity="critical",
        summary=summary or "Disk /var full on srv42",
        dedupe_key=key,
    )


@pytest.fixture
async def alerts(engine: AsyncEngine, store: TicketStore) -> AlertStore:
    await store.upsert_customer(Customer(id="acme", company="ACME", name="Ada"))
    await store.upsert_customer(Customer(id="globex", company="Globex", name="Hank"))
    return AlertStore(engine)


async def _open(alerts: AlertStore, alert: Alert, minutes: float = 0) -> AlertTicket:
    return await alerts.open_ticket(
        alert,
        now=at(minutes),
        priority="urgent",
        priority_rank=40,
        deadline=at(minutes + 240),
        queue="first-level",
        skills={"servers": 2},
    )


async def test_an_alert_opens_a_first_level_ticket_with_its_history(
    alerts: AlertStore, store: TicketStore
) -> None:
    opened = await _open(alerts, disk_full())
    assert opened.created
    number, created = opened  # unpacks like the (number, created) pair it is
    assert created
    ticket = await store.get(number)
    assert ticket.status is TicketStatus.FIRST_LEVEL
    assert (ticket.priority, ticket.priority_rank, ticket.deadline) == ("urgent", 40, at(240))
    assert (ticket.customer_id, ticket.queue, dict(ticket.skills)) == (
        "acme",
        "first-level",
        {"servers": 2},
    )
    assert ticket.description == "Disk /var full on srv42"
    assert ticket.caller_number is None
    [entry] = await store.history(number)
    assert (entry.actor, entry.kind, entry.new_value, entry.at) == (
        ALERT_ACTOR,
        "created",
        "first_level",
        T0,
    )
    assert entry.reason == "critical alert srv42/disk: Disk /var full on srv42"


async def test_the_same_dedupe_key_again_returns_the_first_ticket(
    alerts: AlertStore, store: TicketStore
) -> None:
    first = await _open(alerts, disk_full())
    again = await _open(alerts, disk_full(summary="Disk /var still full"), minutes=5)
    later = await _open(alerts, disk_full(), minutes=3)
    assert again == later == AlertTicket(first.number, created=False)
    assert [t.number for t in await store.list()] == [first.number]
    assert len(await store.history(first.number)) == 1
    record = await alerts.get("srv42/disk")
    assert record is not None
    assert record.ticket_number == first.number
    assert record.summary == "Disk /var full on srv42"  # the first alert's words stay
    assert (record.received_at, record.last_received_at, record.repeats) == (T0, at(5), 2)
    other = await _open(alerts, disk_full(key="srv42/cpu"), minutes=6)
    assert other.created
    assert other.number != first.number
    assert await alerts.get("no-such-key") is None


async def test_a_done_ticket_still_answers_for_its_key(
    alerts: AlertStore, store: TicketStore
) -> None:
    first = await _open(alerts, disk_full())
    await store.set_status(first.number, "done", actor="alice", reason="disk cleaned", now=at(30))
    assert await _open(alerts, disk_full(), minutes=60) == AlertTicket(first.number, False)


async def test_concurrent_duplicates_make_one_ticket(
    database_url: str, alerts: AlertStore, store: TicketStore
) -> None:
    """Two daemons (their own engines) receive the same alert ten times each, at once."""
    engines = [create_engine_for(database_url) for _ in range(2)]
    try:
        daemons = [AlertStore(engine) for engine in engines]
        opened = await asyncio.gather(
            *(_open(daemons[i % 2], disk_full(), minutes=i / 10) for i in range(20))
        )
    finally:
        for engine in engines:
            await engine.dispose()
    assert len({o.number for o in opened}) == 1
    assert sum(o.created for o in opened) == 1
    assert len(await store.list()) == 1
    record = await alerts.get("srv42/disk")
    assert record is not None
    assert record.repeats == 19


async def test_the_database_refuses_a_second_row_for_a_key(
    engine: AsyncEngine, alerts: AlertStore
) -> None:
    # Guards the test above on SQLite, where BEGIN IMMEDIATE alone would serialise them.
    first = await _open(alerts, disk_full())
    record = await alerts.get("srv42/disk")
    assert record is not None
    sessions = async_sessionmaker(engine)

    async def insert_again() -> None:
        async with sessions.begin() as session:
            ticket_id = (await session.execute(AlertRow.__table__.select())).one().ticket_id
            session.add(
                AlertRow(
                    dedupe_key="srv42/disk",
                    ticket_id=ticket_id,
                    customer_id="acme",
                    severity="major",
                    summary="again",
                    received_at=T0,
                    last_received_at=T0,
                    repeats=0,
                )
            )

    with pytest.raises(IntegrityError):
        await insert_again()
    assert (await alerts.get("srv42/disk")) == record
    assert first.created


async def test_the_active_alert_ticket_of_a_customer(
    alerts: AlertStore, store: TicketStore
) -> None:
    assert await alerts.active_alert_ticket("acme") is None
    disk = await _open(alerts, disk_full())
    assert await alerts.active_alert_ticket("acme") == disk.number
    assert await alerts.active_alert_ticket("globex") is None
    cpu = await _open(alerts, disk_full(key="srv42/cpu"), minutes=10)
    assert await alerts.active_alert_ticket("acme") == cpu.number  # the newest
    await store.set_status(cpu.number, "second_level", actor="bob", reason="", now=at(20))
    assert await alerts.active_alert_ticket("acme") == cpu.number  # still open
    await store.set_status(cpu.number, "done", actor="bob", reason="fan replaced", now=at(30))
    assert await alerts.active_alert_ticket("acme") == disk.number
    await store.set_status(disk.number, "done", actor="bob", reason="cleaned", now=at(40))
    assert await alerts.active_alert_ticket("acme") is None
    # A ticket the customer opened by phone is not an alert ticket.
    await store.create_ticket(
        now=at(50), actor="ivr", priority="normal", priority_rank=20, deadline=at(500),
        customer_id="acme",
    )  # fmt: skip
    assert await alerts.active_alert_ticket("acme") is None


async def test_an_unknown_customer_opens_nothing(alerts: AlertStore, store: TicketStore) -> None:
    with pytest.raises(CustomerNotFound):
        await _open(alerts, disk_full(customer="initech"))
    assert await store.list() == []
    assert await alerts.get("srv42/disk") is None
    assert (await _open(alerts, disk_full())).created  # the key was not used up


async def test_naive_times_are_refused(alerts: AlertStore, store: TicketStore) -> None:
    with pytest.raises(InvalidValue):
        await alerts.open_ticket(
            disk_full(),
            now=T0.replace(tzinfo=None),
            priority="urgent",
            priority_rank=40,
            deadline=at(240),
        )
    assert await store.list() == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("customer_id", ""),
        ("customer_id", "x" * 65),
        ("customer_id", " acme"),
        ("customer_id", "ac\nme"),
        ("severity", "fatal"),
        ("severity", "Critical"),
        ("summary", ""),
        ("summary", "x" * 501),
        ("summary", "bell\x07"),
        ("summary", "trailing "),
        ("dedupe_key", ""),
        ("dedupe_key", "has space"),
        ("dedupe_key", "-leading"),
        ("dedupe_key", "k" * 201),
        ("dedupe_key", "é"),
    ],
)
def test_an_alert_refuses_bad_fields(field: str, value: str) -> None:
    fields = {
        "customer_id": "acme",
        "severity": "critical",
        "summary": "Disk full",
        "dedupe_key": "srv42/disk",
    }
    Alert(**fields)  # the valid baseline
    fields[field] = value
    with pytest.raises(InvalidValue) as refused:
        Alert(**fields)
    assert len(str(refused.value)) < 200  # log-safe, whatever the value


def test_an_alert_accepts_what_it_documents() -> None:
    alert = Alert(
        customer_id="ACME GmbH #7",
        severity="info",
        summary="line one\n\tline two",
        dedupe_key="a" + "._:/@#+=-" + "z" * 190,
    )
    assert len(alert.dedupe_key) == 200


def test_alert_tickets_get_the_highest_priority() -> None:
    def priority(rank: int) -> SlaPriority:
        return SlaPriority(rank=rank, respond_within=60, resolve_within=3600)

    sla = Sla(priorities={"normal": priority(20), "urgent": priority(40), "low": priority(10)})
    assert alert_priority(sla) == ("urgent", 40)
