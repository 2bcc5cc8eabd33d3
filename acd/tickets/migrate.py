"""Bring a ticket database to the newest schema with Alembic, from Python.

`migrate(url)` is what the daemon and the tests call at start; `alembic_config(url)` is the
Alembic configuration for anyone who wants other commands (history, downgrade, new
revisions). No alembic.ini: the scripts live in the package, found by path.
"""

# Why the upgrade runs inside our own transaction: on PostgreSQL two daemons starting at
# once would both try to create the tables, so the upgrade first takes a transaction-level
# advisory lock, and the second one finds the schema already at head. On SQLite the write
# transaction (BEGIN IMMEDIATE) serialises them the same way, and DDL is transactional on
# both, so a failed revision leaves no half-made schema.

from __future__ import annotations

from pathlib import Path
from typing import Final

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from acd.tickets.engine import create_engine_for

__all__ = ["SCRIPT_LOCATION", "alembic_config", "migrate"]

SCRIPT_LOCATION: Final = Path(__file__).resolve().parent / "migrations"
# Any fixed 64-bit number; it only has to differ from other advisory locks in the database.
_PG_LOCK_KEY: Final = 0x46_49_52_53_54_4C_4E_45  # "FIRSTLNE"


def alembic_config(url: str = "") -> Config:
    """An Alembic `Config` for the ticket store's migrations (and `url`, if given)."""
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    if url:
        # ConfigParser would read '%' in a password as interpolation.
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


async def migrate(target: str | AsyncEngine, *, revision: str = "head") -> None:
    """Upgrade the database at `target` (a URL or an engine) to `revision` (default head)."""
    engine = create_engine_for(target) if isinstance(target, str) else target
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_upgrade, revision)
    finally:
        if isinstance(target, str):
            await engine.dispose()


def _upgrade(connection: Connection, revision: str) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, revision)
