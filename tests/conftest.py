"""Shared fixtures: the live Asterisk (one at a time, behind a file lock) and helpers.

Live tests are marked ``live``. Without an Asterisk root they are skipped on a developer
machine, but with FIRSTLINE_REQUIRE_LIVE=1 (set by .ci/run) a missing PBX fails the run:
CI must never pass by skipping the tests that matter.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from acd.tickets import TicketStore, create_engine_for, migrate
from acd.tickets.schema import metadata

REPO = Path(__file__).resolve().parent.parent
PBX_SCRIPT = REPO / "asterisk" / "pbx"
LOCK_PATH = Path("/tmp/firstline-pbx.lock")


class LivePbx:
    """Drives the real Asterisk through ``asterisk/pbx``."""

    def __init__(self) -> None:
        self.root = Path(self._run("root").strip())
        self._full_log = self.root / "var/log/asterisk/full"
        self._log_offset = 0
        self.conf_dir: Path | None = None  # what the running Asterisk was started on

    def _run(self, *args: str, check: bool = True) -> str:
        done = subprocess.run(
            [str(PBX_SCRIPT), *args], capture_output=True, text=True, timeout=120, check=False
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"asterisk/pbx {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
        return done.stdout

    @property
    def installed(self) -> bool:
        return (self.root / "usr/sbin/asterisk").exists()

    def start(self, conf_dir: Path, *, fresh_state: bool = False) -> None:
        """(Re)start Asterisk on the rendered configuration in ``conf_dir``.

        ``fresh_state`` forgets what Asterisk kept from earlier runs (its astdb holds
        persistent queue members), so a test starts from logged-out agents.
        """
        self.conf_dir = conf_dir
        self._run("stop", check=False)
        if fresh_state:
            (self.root / "var/lib/asterisk/astdb.sqlite3").unlink(missing_ok=True)
        self._log_offset = self._full_log.stat().st_size if self._full_log.exists() else 0
        self._run("start", str(conf_dir))

    def stop(self) -> None:
        self._run("stop", check=False)

    def cli(self, command: str) -> str:
        return self._run("cli", command)

    def log_since_start(self) -> str:
        if not self._full_log.exists():
            return ""
        with self._full_log.open("rb") as log:
            log.seek(self._log_offset)
            return log.read().decode("utf-8", "replace")

    def errors_since_start(self) -> list[str]:
        return [line for line in self.log_since_start().splitlines() if " ERROR[" in line]


@pytest.fixture(scope="session")
def pbx() -> Iterator[LivePbx]:
    """The one live Asterisk, held under the machine-wide lock for the whole session."""
    live = LivePbx()
    if not live.installed:
        if os.environ.get("FIRSTLINE_REQUIRE_LIVE") == "1":
            pytest.fail("no Asterisk root: run 'asterisk/pbx install' (make test does)")
        pytest.skip("no Asterisk root: run 'asterisk/pbx install' to enable live tests")
    with LOCK_PATH.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield live
        finally:
            live.stop()
            fcntl.flock(lock, fcntl.LOCK_UN)


# --- databases: every store test runs on SQLite and PostgreSQL -----------------------------
# PostgreSQL is the server on 127.0.0.1:5432 (or FIRSTLINE_TEST_POSTGRES, a postgresql:// URL
# of a database to connect to for creating and dropping ours); the session creates a database
# with a unique name and drops it at the end. Without a server these tests are skipped, but
# with FIRSTLINE_REQUIRE_LIVE=1 they fail.

_DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this session (asyncpg URL); dropped after."""
    admin = os.environ.get("FIRSTLINE_TEST_POSTGRES", _DEFAULT_ADMIN_URL)
    name = f"firstline_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"

    admin_url = make_url(admin).set(drivername="postgresql+asyncpg")

    async def admin_sql(sql: str) -> None:
        # CREATE/DROP DATABASE cannot run in a transaction: AUTOCOMMIT.
        engine = create_async_engine(
            admin_url, isolation_level="AUTOCOMMIT", connect_args={"timeout": 5}
        )
        try:
            async with engine.connect() as connection:
                await connection.execute(sa.text(sql))
        finally:
            await engine.dispose()

    try:
        asyncio.run(admin_sql(f'CREATE DATABASE "{name}"'))
    except (OSError, sa.exc.DBAPIError, TimeoutError) as error:
        message = f"no PostgreSQL at {admin} ({error!r}); set FIRSTLINE_TEST_POSTGRES"
        if os.environ.get("FIRSTLINE_REQUIRE_LIVE") == "1":
            pytest.fail(message)
        pytest.skip(message)
    url = admin_url.set(database=name)
    rendered = url.render_as_string(hide_password=False)
    try:
        asyncio.run(migrate(rendered))
        yield rendered
    finally:
        asyncio.run(admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _empty_postgres(engine: AsyncEngine) -> None:
    tables = ", ".join(t.name for t in metadata.sorted_tables)
    async with engine.begin() as connection:
        await connection.execute(sa.text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a database of each backend (sync: the PostgreSQL set-up runs its own loop)."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'tickets.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """A migrated, empty database of each backend."""
    created = create_engine_for(database_url)
    if created.dialect.name == "sqlite":
        await migrate(created)
    else:
        await _empty_postgres(created)
    try:
        yield created
    finally:
        await created.dispose()


@pytest.fixture
async def store(engine: AsyncEngine) -> TicketStore:
    return TicketStore(engine)


@pytest.fixture
async def sqlite_engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    created = create_engine_for(f"sqlite+aiosqlite:///{tmp_path / 'tickets.db'}")
    await migrate(created)
    try:
        yield created
    finally:
        await created.dispose()
