"""The async database engine of the ticket store, set up right for SQLite and PostgreSQL.

`create_engine_for(url)` is the one place that knows SQLite's needs: WAL, a busy timeout,
foreign keys, and `BEGIN IMMEDIATE` for write transactions. PostgreSQL (asyncpg) gets a lock
timeout and an end to sessions left idle inside a transaction. This module runs no queries
of its own beyond those connection settings.
"""

# Why BEGIN IMMEDIATE: SQLite's default transaction is DEFERRED, taking the write lock only
# at the first write. Under WAL, a deferred transaction that has read and then wants to
# write while another connection committed a write in between cannot upgrade its snapshot:
# it fails at once with "database is locked" (SQLITE_BUSY), and the busy timeout does not
# help, because waiting cannot fix a stale snapshot. BEGIN IMMEDIATE takes the write lock
# up front, so a second writer waits (up to the busy timeout) and then reads fresh data.
# Readers need no lock in WAL, so read-only work uses a plain BEGIN (see `reader`) and never
# waits for a writer. pysqlite/aiosqlite would emit their own BEGIN; setting the driver
# connection's isolation_level to None stops that, and the "begin" event emits ours
# (the recipe from SQLAlchemy's SQLite dialect documentation).

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable
from typing import Any, Final, TypeVar

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import ConnectionPoolEntry

__all__ = [
    "READ_ONLY_OPTION",
    "OneHopReads",
    "WriterBusyError",
    "Writes",
    "create_engine_for",
    "reader",
    "with_lock_wait",
]

READ_ONLY_OPTION: Final = "firstline_read_only"
LOCK_WAIT_OPTION: Final = "firstline_lock_wait_ms"
# The pool attribute holding this process's writers' turn on a SQLite database (see `Writes`).
_WRITE_TURN: Final = "firstline_write_turn"
_BUSY_MS: Final = "firstline_busy_timeout_ms"
_T = TypeVar("_T")


@dataclasses.dataclass(frozen=True, slots=True)
class _WriteTurn:
    """This process's writers' queue on one SQLite database, and how long each may wait."""

    lock: asyncio.Lock
    busy_timeout: float


class WriterBusyError(SQLAlchemyError):
    """Another write transaction of this process held the database longer than the wait."""


class Writes:
    """Write transactions on the store's database: `async with writes.begin() as session`.

    SQLite has one writer at a time. Left to SQLite, a second writer sits in its busy
    handler (sleeping in steps of up to 100 ms, holding a pooled connection) while the first
    one's statements each wait for a turn of our event loop: under load the waiting writers
    took the whole pool and the callers' lookups, which need no lock at all, waited for a
    connection. So this process's writers queue on an asyncio lock shared through the
    engine's pool, take a connection only when it is their turn, and are woken at once when
    the writer before them is done. Other processes (the CLI, a second daemon) still meet
    SQLite's busy timeout. On PostgreSQL writers take row locks only: no queue.
    """

    def __init__(self, engine: AsyncEngine, *, lock_wait: float | None = None) -> None:
        """`lock_wait`: seconds to wait for other writers (default: the engine's busy
        timeout), then `WriterBusyError` (or the database's own lock error)."""
        bound = engine if lock_wait is None else with_lock_wait(engine, lock_wait)
        self._sessions = async_sessionmaker(bound, expire_on_commit=False)
        turn: _WriteTurn | None = getattr(engine.sync_engine.pool, _WRITE_TURN, None)
        self._turn = turn.lock if turn is not None else None
        default_wait = turn.busy_timeout if turn is not None else _DEFAULT_BUSY_TIMEOUT
        self._wait = lock_wait if lock_wait is not None else default_wait

    @contextlib.asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncSession]:
        """A session in a write transaction, committed at the end (rolled back on error)."""
        if self._turn is None:
            async with self._sessions.begin() as session:
                yield session
            return
        try:
            async with asyncio.timeout(self._wait):
                await self._turn.acquire()
        except TimeoutError:
            raise WriterBusyError(
                f"another writer held the database for over {self._wait:g} s"
            ) from None
        try:
            async with self._sessions.begin() as session:
                yield session
        finally:
            self._turn.release()


_DEFAULT_BUSY_TIMEOUT: Final = 30.0


class OneHopReads:
    """Read-only work written as a plain function of a `Connection`, run in one step.

    Through aiosqlite every statement is several round trips to the driver's thread (open a
    cursor, execute, fetch, close; BEGIN and ROLLBACK too), ~1.4 ms of CPU per statement on
    the benchmark machine. On SQLite the whole function runs instead on a synchronous
    connection of its own to the same file, in a worker thread: one hop (the caller's
    lookup: 5.7 -> 1.1 ms). On PostgreSQL asyncpg has no such cost and the function runs
    on the async engine (`run_sync`). Either way it sees one snapshot (a read transaction).
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = reader(engine)
        self._sync: Engine | None = None
        if engine.dialect.name == "sqlite":
            sync_url = engine.url.set(drivername="sqlite")
            # The connections move between the pool's worker threads, one at a time.
            self._sync = create_engine(sync_url, connect_args={"check_same_thread": False})
            turn: _WriteTurn | None = getattr(engine.sync_engine.pool, _WRITE_TURN, None)
            busy_timeout = turn.busy_timeout if turn is not None else _DEFAULT_BUSY_TIMEOUT
            _setup_sqlite(self._sync, busy_timeout_ms=int(busy_timeout * 1000))
            self._sync = self._sync.execution_options(**{READ_ONLY_OPTION: True})

    async def run(self, work: Callable[[Connection], _T]) -> _T:
        if self._sync is None:
            async with self._engine.connect() as connection:
                return await connection.run_sync(work)
        return await asyncio.to_thread(self._run_sync, work)

    def dispose(self) -> None:
        if self._sync is not None:
            self._sync.dispose()

    def _run_sync(self, work: Callable[[Connection], _T]) -> _T:
        assert self._sync is not None
        with self._sync.connect() as connection:
            return work(connection)


def create_engine_for(
    url: str | URL, *, busy_timeout: float = _DEFAULT_BUSY_TIMEOUT, **engine_kwargs: Any
) -> AsyncEngine:
    """An `AsyncEngine` for `url` (sqlite+aiosqlite:///file or postgresql+asyncpg://...).

    On SQLite, every connection gets WAL, `busy_timeout` (seconds a writer waits for
    another writer) and foreign keys, and write transactions begin IMMEDIATE. On
    PostgreSQL, a statement waits at most `busy_timeout` for a lock, and a session left idle
    inside a transaction is ended by the server (see `_with_postgres_guards`). Other
    keyword arguments go to `create_async_engine`.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql":
        engine_kwargs = _with_postgres_guards(engine_kwargs, lock_wait_ms=int(busy_timeout * 1000))
    engine = create_async_engine(parsed, **engine_kwargs)
    if engine.dialect.name == "sqlite":
        _setup_sqlite(engine.sync_engine, busy_timeout_ms=int(busy_timeout * 1000))
        # Shared by every `Writes` on this engine and the engines derived from it (same pool).
        setattr(engine.sync_engine.pool, _WRITE_TURN, _WriteTurn(asyncio.Lock(), busy_timeout))
    return engine


def reader(engine: AsyncEngine) -> AsyncEngine:
    """The same engine (same pool) for read-only work: on SQLite it begins DEFERRED."""
    return engine.execution_options(**{READ_ONLY_OPTION: True})


def with_lock_wait(engine: AsyncEngine, seconds: float) -> AsyncEngine:
    """The same engine (same pool) whose write transactions wait at most `seconds` for
    another writer's lock, then fail — for work a caller is waiting on, where a quick
    "no" beats a long silence. On SQLite it is the busy timeout of those transactions;
    PostgreSQL's writers take row locks only, released within a statement or two."""
    return engine.execution_options(**{LOCK_WAIT_OPTION: int(seconds * 1000)})


# A session idle inside a transaction this long has been lost by its client: none of ours
# idles in a transaction (mail is sent and calls are placed between transactions). A task
# cancelled in the middle of an asyncpg query can leave exactly that behind, holding row
# locks that would make every later writer of those rows wait for ever.
_IDLE_IN_TRANSACTION_MS: Final = 60_000


def _with_postgres_guards(engine_kwargs: dict[str, Any], *, lock_wait_ms: int) -> dict[str, Any]:
    """`engine_kwargs` with server settings that bound lock waits and lost transactions
    (settings the caller gave win)."""
    connect_args = dict(engine_kwargs.get("connect_args", {}))
    server_settings = {
        "lock_timeout": str(lock_wait_ms),
        "idle_in_transaction_session_timeout": str(_IDLE_IN_TRANSACTION_MS),
        **connect_args.get("server_settings", {}),
    }
    connect_args["server_settings"] = server_settings
    return {**engine_kwargs, "connect_args": connect_args}


def _setup_sqlite(engine: Engine, *, busy_timeout_ms: int) -> None:
    def on_connect(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            # busy_timeout first: switching to WAL may itself wait for another connection.
            cursor.execute(f"PRAGMA busy_timeout = {busy_timeout_ms:d}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()
        record.info[_BUSY_MS] = busy_timeout_ms

    def on_begin(connection: Connection) -> None:
        options = connection.get_execution_options()
        if options.get(READ_ONLY_OPTION, False):
            connection.exec_driver_sql("BEGIN")
            return
        # Checked on every write transaction: a pooled connection must not keep another
        # transaction's short wait. Set only when it differs: each statement is a round trip
        # to the driver's thread while this transaction holds the write lock.
        wait_ms = int(options.get(LOCK_WAIT_OPTION, busy_timeout_ms))
        if connection.info.get(_BUSY_MS) != wait_ms:
            connection.exec_driver_sql(f"PRAGMA busy_timeout = {wait_ms:d}")
            connection.info[_BUSY_MS] = wait_ms
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    event.listen(engine, "connect", on_connect)
    event.listen(engine, "begin", on_begin)
