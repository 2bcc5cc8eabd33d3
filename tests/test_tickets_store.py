"""The ticket store on real databases: SQLite (a temporary file) and PostgreSQL.

Every store test runs on both backends. PostgreSQL is the server on 127.0.0.1:5432 (or
FIRSTLINE_TEST_POSTGRES, a postgresql:// URL of a database to connect to for creating and
dropping ours); the session creates a database with a unique name and drops it at the end.
Without a server these tests are skipped, but with FIRSTLINE_REQUIRE_LIVE=1 they fail:
CI must never pass by skipping the tests that matter.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import sqlite3
import time
from collections.abc import Awaitable
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncEngine

from acd.tickets import (
    TRANSITIONS,
    Customer,
    CustomerNotFound,
    IllegalTransition,
    InvalidValue,
    PhoneNumberTaken,
    TicketNotFound,
    TicketStatus,
    TicketStore,
    alembic_config,
    create_engine_for,
    migrate,
)
from acd.tickets.engine import WriterBusyError, Writes
from acd.tickets.schema import metadata

T0 = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
DEADLINE = T0 + dt.timedelta(hours=4)
_DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def at(minutes: int) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


# --- backends --------------------------------------------------------------------------------


async def _new(store: TicketStore, **fields: object) -> str:
    arguments: dict[str, object] = {
        "now": T0,
        "actor": "ivr",
        "priority": "normal",
        "priority_rank": 20,
        "deadline": DEADLINE,
    }
    arguments.update(fields)
    ticket = await store.create_ticket(**arguments)  # type: ignore[arg-type]
    return ticket.number


# --- migrations ------------------------------------------------------------------------------


def _diff(connection: sa.Connection) -> list[object]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, metadata))


async def test_migrated_schema_equals_the_models(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        assert await connection.run_sync(_diff) == []
        current = await connection.run_sync(
            lambda c: MigrationContext.configure(c).get_current_heads()
        )
    head = ScriptDirectory.from_config(alembic_config()).get_heads()
    assert current == tuple(head)


async def test_the_comparison_sees_a_difference(engine: AsyncEngine) -> None:
    # Guards the test above: a column the migration lacks must show up as a diff.
    async with engine.begin() as connection:
        await connection.execute(sa.text("ALTER TABLE calls ADD COLUMN extra INTEGER"))
        diff = await connection.run_sync(_diff)
        await connection.execute(sa.text("ALTER TABLE calls DROP COLUMN extra"))
    assert [entry[0] for entry in diff] == ["remove_column"]  # type: ignore[index]


async def test_migrating_again_changes_nothing(engine: AsyncEngine) -> None:
    await migrate(engine)
    await migrate(engine)
    async with engine.connect() as connection:
        assert await connection.run_sync(_diff) == []


async def test_migrate_takes_a_url(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'by-url.db'}"
    await migrate(url)
    async with TicketStore(url) as store:
        assert await store.list() == []


# --- tickets ---------------------------------------------------------------------------------


async def test_create_and_get_keep_every_field(store: TicketStore) -> None:
    await store.upsert_customer(Customer(id="c1", company="ACME", name="Ada", phones=("+49301",)))
    berlin_time = T0.astimezone(dt.timezone(dt.timedelta(hours=1)))
    created = await store.create_ticket(
        now=berlin_time,
        actor="ivr",
        priority="high",
        priority_rank=40,
        deadline=DEADLINE,
        queue="cad-first",
        skills={"cad": 2, "de": 1},
        caller_number="+4930999",
        customer_id="c1",
        owner="alice",
        category="licence",
        description="Dongle not found",
        recording_path="/var/spool/asterisk/monitor/1.wav",
    )
    assert created.number == "2026-000001"
    got = await store.get(created.number)
    assert got == created
    assert got.status is TicketStatus.FIRST_LEVEL
    assert got.created_at == T0
    assert got.created_at.tzinfo is dt.UTC
    assert got.deadline == DEADLINE
    assert got.skills == {"cad": 2, "de": 1}
    assert (got.queue, got.caller_number, got.customer_id, got.owner) == (
        "cad-first",
        "+4930999",
        "c1",
        "alice",
    )
    assert (got.category, got.description, got.recording_path) == (
        "licence",
        "Dongle not found",
        "/var/spool/asterisk/monitor/1.wav",
    )
    assert got.is_open
    assert got.closed_at is None


async def test_numbers_count_per_year(store: TicketStore) -> None:
    first = await _new(store)
    second = await _new(store)
    new_year = await _new(store, now=dt.datetime(2027, 1, 1, tzinfo=dt.UTC))
    assert [first, second, new_year] == ["2026-000001", "2026-000002", "2027-000001"]


async def test_fifty_concurrent_creations_get_unique_numbers(store: TicketStore) -> None:
    numbers = await asyncio.gather(*(_new(store, actor=f"a{i}") for i in range(50)))
    assert sorted(numbers) == [f"2026-{n:06d}" for n in range(1, 51)]
    assert len(await store.list()) == 50


async def test_a_failed_creation_releases_its_number(store: TicketStore) -> None:
    with pytest.raises(CustomerNotFound):
        await _new(store, customer_id="nobody")
    assert await _new(store) == "2026-000001"


async def test_create_refuses_bad_input(store: TicketStore) -> None:
    with pytest.raises(InvalidValue, match=r"E\.164"):
        await _new(store, caller_number="030123")
    with pytest.raises(InvalidValue, match="timezone-aware"):
        await _new(store, now=dt.datetime(2026, 3, 2, 9, 0))
    with pytest.raises(InvalidValue, match="unknown ticket status"):
        await _new(store, status="closed")
    with pytest.raises(InvalidValue, match="actor"):
        await _new(store, actor="")
    assert await store.list() == []


async def test_a_ticket_may_start_at_another_status(store: TicketStore) -> None:
    number = await _new(store, status="second_level", actor="monitoring", reason="disk full")
    assert (await store.get(number)).status is TicketStatus.SECOND_LEVEL
    [created] = await store.history(number)
    assert (created.kind, created.new_value, created.reason) == (
        "created",
        "second_level",
        "disk full",
    )


async def test_unknown_ticket(store: TicketStore) -> None:
    with pytest.raises(TicketNotFound, match="2026-000099"):
        await store.get("2026-000099")
    with pytest.raises(TicketNotFound):
        await store.set_status("2026-000099", "done", actor="a", reason="r", now=T0)


_ILLEGAL = [
    (a, b) for a, b in itertools.product(TicketStatus, TicketStatus) if b not in TRANSITIONS[a]
]
_LEGAL = [(a, b) for a in TicketStatus for b in sorted(TRANSITIONS[a])]


async def test_every_illegal_transition_is_refused_and_changes_nothing(
    store: TicketStore,
) -> None:
    for current, target in _ILLEGAL:
        number = await _new(store, status=current)
        before = await store.get(number)
        with pytest.raises(IllegalTransition) as info:
            await store.set_status(number, target, actor="bob", reason="try", now=at(5))
        assert (info.value.current, info.value.target) == (current, target)
        assert await store.get(number) == before
        assert [e.kind for e in await store.history(number)] == ["created"]


async def test_every_legal_transition_is_made_and_recorded(store: TicketStore) -> None:
    for current, target in _LEGAL:
        number = await _new(store, status=current)
        ticket = await store.set_status(number, target, actor="bob", reason="why", now=at(5))
        assert ticket.status is target
        assert ticket.updated_at == at(5)
        assert ticket.closed_at == (at(5) if target is TicketStatus.DONE else None)
        assert await store.get(number) == ticket
        last = (await store.history(number))[-1]
        assert (last.at, last.actor, last.kind, last.old_value, last.new_value, last.reason) == (
            at(5),
            "bob",
            "status",
            current.value,
            target.value,
            "why",
        )


async def test_history_is_complete_and_in_order(store: TicketStore) -> None:
    number = await _new(store, actor="ivr", reason="callback requested")
    await store.assign(number, "alice", actor="dispatcher", now=at(1))
    await store.add_note(number, "Customer runs version 12.", actor="alice", now=at(2))
    await store.set_status(number, "second_level", actor="alice", reason="needs logs", now=at(3))
    await store.assign(number, "bob", actor="bob", now=at(4), reason="my area")
    await store.set_status(number, "dev", actor="bob", reason="bug", now=at(5))
    await store.set_status(number, "done", actor="bob", reason="fixed in 12.1", now=at(6))
    await store.set_status(number, "first_level", actor="ivr", reason="called again", now=at(7))
    await store.assign(number, None, actor="supervisor", now=at(8))
    history = [
        (e.at, e.actor, e.kind, e.old_value, e.new_value, e.reason)
        for e in await store.history(number)
    ]
    assert history == [
        (T0, "ivr", "created", None, "first_level", "callback requested"),
        (at(1), "dispatcher", "owner", None, "alice", None),
        (at(2), "alice", "note", None, "Customer runs version 12.", None),
        (at(3), "alice", "status", "first_level", "second_level", "needs logs"),
        (at(4), "bob", "owner", "alice", "bob", "my area"),
        (at(5), "bob", "status", "second_level", "dev", "bug"),
        (at(6), "bob", "status", "dev", "done", "fixed in 12.1"),
        (at(7), "ivr", "status", "done", "first_level", "called again"),
        (at(8), "supervisor", "owner", "bob", None, None),
    ]
    ticket = await store.get(number)
    assert (ticket.status, ticket.owner, ticket.closed_at, ticket.updated_at) == (
        TicketStatus.FIRST_LEVEL,
        None,
        None,
        at(8),
    )


async def test_assigning_the_same_owner_writes_nothing(store: TicketStore) -> None:
    number = await _new(store, owner="alice")
    ticket = await store.assign(number, "alice", actor="alice", now=at(1))
    assert ticket.updated_at == T0
    assert len(await store.history(number)) == 1


async def test_empty_notes_are_refused(store: TicketStore) -> None:
    number = await _new(store)
    with pytest.raises(InvalidValue, match="empty"):
        await store.add_note(number, "  ", actor="alice", now=at(1))
    assert len(await store.history(number)) == 1


async def test_concurrent_changes_of_one_ticket_pass_the_check_once(store: TicketStore) -> None:
    # Ten agents close the same ticket at once: done -> done is illegal, so exactly one wins.
    number = await _new(store)
    results = await asyncio.gather(
        *(
            store.set_status(number, "done", actor=f"agent{i}", reason="solved", now=at(1))
            for i in range(10)
        ),
        return_exceptions=True,
    )
    assert sum(not isinstance(r, BaseException) for r in results) == 1
    assert all(isinstance(r, IllegalTransition) for r in results if isinstance(r, BaseException))
    assert [e.kind for e in await store.history(number)] == ["created", "status"]


async def test_list_filters_and_orders_by_creation(store: TicketStore) -> None:
    await store.upsert_customer(Customer(id="c1", company="ACME", name="Ada"))
    late = await _new(store, now=at(10), owner="alice", customer_id="c1")
    early = await _new(store, now=at(1), owner="bob")
    done = await _new(store, now=at(5), owner="alice", status="done")
    assert [t.number for t in await store.list()] == [early, done, late]
    assert [t.number for t in await store.list(owner="alice")] == [done, late]
    assert [t.number for t in await store.list(open_only=True)] == [early, late]
    assert [t.number for t in await store.list(status="done")] == [done]
    assert [t.number for t in await store.list(customer="c1")] == [late]
    assert await store.list(owner="alice", status=TicketStatus.WAITING) == []


async def test_open_tickets_for_a_number(store: TicketStore) -> None:
    await store.upsert_customer(
        Customer(id="c1", company="ACME", name="Ada", phones=("+4930111", "+4930112"))
    )
    by_customer = await _new(store, customer_id="c1", caller_number="+4930112", now=at(1))
    by_caller = await _new(store, caller_number="+4930111", now=at(2))
    await _new(store, customer_id="c1", status="done", now=at(3))
    await _new(store, caller_number="+4930999", now=at(4))
    found = await store.open_tickets_for_number("+4930111")
    assert [t.number for t in found] == [by_customer, by_caller]
    assert [t.number for t in await store.open_tickets_for_number("+4930112")] == [by_customer]
    assert await store.open_tickets_for_number("+4930555") == []
    with pytest.raises(InvalidValue):
        await store.open_tickets_for_number("0301111")
    # The caller's lookup on every call reads the same in one step.
    for number in ("+4930111", "+4930112", "+4930555", "+4930999"):
        assert await store.caller(number) == (
            await store.customer_by_number(number),
            await store.open_tickets_for_number(number),
        )
    customer, _ = await store.caller("+4930112")
    assert customer is not None
    assert customer.phones == ("+4930111", "+4930112")
    with pytest.raises(InvalidValue):
        await store.caller("anonymous")


# --- customers -------------------------------------------------------------------------------


async def test_customers_are_upserted_with_their_numbers(store: TicketStore) -> None:
    ada = Customer(
        id="c1",
        company="ACME",
        name="Ada",
        phones=("+4930112", "+4930111", "+4930111"),
        sla_package="premium",
        language="de",
        account_manager="alice",
        email="ada@acme.example",
    )
    stored = await store.upsert_customer(ada)
    assert stored.phones == ("+4930111", "+4930112")
    assert await store.customer("c1") == stored
    assert await store.customer_by_number("+4930112") == stored
    moved = await store.upsert_customer(
        Customer(id="c1", company="ACME AG", name="Ada", phones=("+4930112", "+4930113"))
    )
    assert await store.customer("c1") == moved
    assert await store.customer_by_number("+4930111") is None
    assert (await store.customer_by_number("+4930113")) == moved
    with pytest.raises(CustomerNotFound):
        await store.customer("c2")


async def test_a_number_belongs_to_one_customer(store: TicketStore) -> None:
    await store.upsert_customer(Customer(id="c1", company="A", name="Ada", phones=("+4930111",)))
    with pytest.raises(PhoneNumberTaken, match=r"\+4930111 \(customer 'c1'\)"):
        await store.upsert_customer(
            Customer(id="c2", company="B", name="Bo", phones=("+4930222", "+4930111"))
        )
    assert await store.customer_by_number("+4930222") is None
    with pytest.raises(CustomerNotFound):
        await store.customer("c2")


async def test_import_is_all_or_nothing(store: TicketStore) -> None:
    rows = [
        Customer(id=f"c{i}", company="Co", name=f"N{i}", phones=(f"+49301{i:04d}",))
        for i in range(20)
    ]
    assert await store.import_customers(rows) == 20
    assert (await store.customer_by_number("+493010007")) == rows[7]
    clash = [
        Customer(id="d1", company="New", name="X", phones=("+49309999",)),
        Customer(id="d2", company="New", name="Y", phones=("+49309999",)),
    ]
    with pytest.raises(PhoneNumberTaken):
        await store.import_customers(clash)
    with pytest.raises(CustomerNotFound):
        await store.customer("d1")
    with pytest.raises(InvalidValue, match=r"E\.164"):
        await store.import_customers([Customer(id="e1", company="C", name="Z", phones=("123",))])


# --- PostgreSQL: bounded lock waits, no transaction left open for ever ---------------------


async def test_postgres_sessions_bound_lock_waits_and_lost_transactions(postgres_url: str) -> None:
    engine = create_engine_for(postgres_url, busy_timeout=7)
    try:
        async with engine.connect() as connection:
            lock = (await connection.exec_driver_sql("SHOW lock_timeout")).scalar_one()
            idle = (
                await connection.exec_driver_sql("SHOW idle_in_transaction_session_timeout")
            ).scalar_one()
    finally:
        await engine.dispose()
    assert (lock, idle) == ("7s", "1min")


async def test_a_lock_held_by_a_lost_session_fails_the_writer_instead_of_hanging(
    postgres_url: str,
) -> None:
    engine = create_engine_for(postgres_url, busy_timeout=0.5)
    store = TicketStore(engine)
    try:
        number = await _new(store)
        async with engine.connect() as holder:
            await holder.execute(
                sa.text("SELECT id FROM tickets WHERE number = :number FOR UPDATE"),
                {"number": number},
            )
            with pytest.raises(sa.exc.DBAPIError, match="lock timeout"):
                await store.set_status(
                    number, "second_level", actor="alice", reason="escalated", now=T0
                )
            await holder.rollback()
    finally:
        await engine.dispose()


# --- SQLite: WAL and BEGIN IMMEDIATE ------------------------------------------------------


async def test_sqlite_runs_in_wal_mode(sqlite_engine: AsyncEngine) -> None:
    async with sqlite_engine.connect() as connection:
        mode = (await connection.exec_driver_sql("PRAGMA journal_mode")).scalar_one()
        keys = (await connection.exec_driver_sql("PRAGMA foreign_keys")).scalar_one()
    assert (mode, keys) == ("wal", 1)


async def test_writers_of_one_process_take_turns_and_leave_connections_to_readers(
    tmp_path: Path,
) -> None:
    # Two pooled connections: the first writer holds one. A second writer left to SQLite's
    # busy handler would hold the other, and the reader would find the pool empty.
    url = f"sqlite+aiosqlite:///{tmp_path / 'tickets.db'}"
    await migrate(url)
    engine = create_engine_for(url, pool_size=2, max_overflow=0, pool_timeout=1)
    store = TicketStore(engine)
    first_writes = Writes(engine)
    try:
        number = await _new(store)
        release = asyncio.Event()

        async def first_writer() -> None:
            async with first_writes.begin() as session:
                await session.execute(sa.text("UPDATE tickets SET category = 'first'"))
                await release.wait()

        holder = asyncio.create_task(first_writer())
        await asyncio.sleep(0.1)
        second = asyncio.create_task(
            store.set_status(number, "second_level", actor="alice", reason="escalated", now=T0)
        )
        await asyncio.sleep(0.1)
        assert (await store.get(number)).status is TicketStatus.FIRST_LEVEL  # read meanwhile
        with pytest.raises(WriterBusyError):
            async with Writes(engine, lock_wait=0.2).begin():
                pass
        release.set()
        await holder
        assert (await second).status is TicketStatus.SECOND_LEVEL
        assert (await store.get(number)).category == "first"
    finally:
        await engine.dispose()


async def test_a_queued_writer_waits_the_engines_busy_timeout(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'tickets.db'}"
    await migrate(url)
    engine = create_engine_for(url, busy_timeout=0.2)
    try:
        async with Writes(engine).begin():
            async with asyncio.timeout(5):  # the default 30 s would fail here
                with pytest.raises(WriterBusyError, match=r"over 0\.2 s"):
                    async with Writes(engine).begin():
                        pass
    finally:
        await engine.dispose()


def test_deferred_transactions_fail_at_once_under_wal(tmp_path: Path) -> None:
    # The hazard BEGIN IMMEDIATE avoids: reader-turned-writer on a stale snapshot.
    path = tmp_path / "plain.db"
    first = sqlite3.connect(path, isolation_level=None, timeout=5)
    second = sqlite3.connect(path, isolation_level=None, timeout=5)
    try:
        first.execute("PRAGMA journal_mode = WAL")
        first.execute("CREATE TABLE counter (n INTEGER)")
        first.execute("INSERT INTO counter VALUES (0)")
        first.execute("BEGIN")
        second.execute("BEGIN")
        first.execute("SELECT n FROM counter").fetchone()
        second.execute("SELECT n FROM counter").fetchone()
        first.execute("UPDATE counter SET n = n + 1")
        first.execute("COMMIT")
        started = time.monotonic()
        with pytest.raises(sqlite3.OperationalError, match="database is locked"):
            second.execute("UPDATE counter SET n = n + 1")
        assert time.monotonic() - started < 2  # the 5 s busy timeout did not help
    finally:
        first.close()
        second.close()


async def test_a_second_writer_waits_instead_of_failing(sqlite_engine: AsyncEngine) -> None:
    read = sa.text("SELECT last FROM ticket_counters WHERE year = 2026")
    bump = sa.text("UPDATE ticket_counters SET last = :value WHERE year = 2026")
    async with sqlite_engine.begin() as setup:
        await setup.execute(sa.text("INSERT INTO ticket_counters VALUES (2026, 0)"))

    async def read_then_write() -> None:
        async with sqlite_engine.begin() as connection:
            value = (await connection.execute(read)).scalar_one()
            await connection.execute(bump, {"value": value + 1})

    async with sqlite_engine.connect() as first:
        await first.begin()
        value = (await first.execute(read)).scalar_one()
        second = asyncio.create_task(read_then_write())
        await asyncio.sleep(0.3)
        assert not second.done()  # waiting for the write lock, not failed
        await first.execute(bump, {"value": value + 1})
        await first.commit()
    await asyncio.wait_for(second, 10)
    async with sqlite_engine.connect() as check:
        assert (await check.execute(read)).scalar_one() == 2  # no lost update


async def test_readers_do_not_wait_for_a_writer(sqlite_engine: AsyncEngine) -> None:
    store = TicketStore(sqlite_engine)
    number = await _new(store)
    async with sqlite_engine.connect() as writer:
        await writer.begin()
        await writer.execute(sa.text("UPDATE tickets SET description = 'x'"))
        ticket = await asyncio.wait_for(store.get(number), 5)  # busy timeout is 30 s
        assert ticket.description == ""
        await writer.rollback()


async def test_many_concurrent_writers_on_sqlite(sqlite_engine: AsyncEngine) -> None:
    store = TicketStore(sqlite_engine)
    numbers = [await _new(store) for _ in range(5)]
    jobs: list[Awaitable[object]] = [
        store.add_note(number, f"note {i}", actor=f"agent{i}", now=at(i))
        for i, number in enumerate(numbers * 8)
    ]
    jobs += [
        store.set_status(number, "second_level", actor="x", reason="y", now=at(9))
        for number in numbers
    ]
    await asyncio.gather(*jobs)
    for number in numbers:
        kinds = [e.kind for e in await store.history(number)]
        assert sorted(kinds) == sorted(["created", "status"] + ["note"] * 8)


async def test_tickets_are_counted_by_status(store: TicketStore) -> None:
    assert await store.count_by_status() == {}
    first = await _new(store)
    await _new(store)
    await store.set_status(
        first, "second_level", actor="alice", reason="needs an expert", now=at(5)
    )
    assert await store.count_by_status() == {"first_level": 1, "second_level": 1}
