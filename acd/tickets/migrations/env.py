"""Alembic environment of the ticket store: runs the revisions on a given connection.

`acd.tickets.migrate` passes an open connection in `config.attributes["connection"]`; the
`alembic` command line (for writing new revisions) gets a URL and a fresh engine instead.
This script must not change the schema by itself: revisions in versions/ do that.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from acd.tickets.engine import create_engine_for
from acd.tickets.schema import metadata


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things: later revisions must copy-and-move tables.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _online(url: str) -> None:
    engine = create_engine_for(url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_configure)
    finally:
        await engine.dispose()


def _main() -> None:
    config = context.config
    given = config.attributes.get("connection")
    url = config.get_main_option("sqlalchemy.url")
    if isinstance(given, Connection):
        _configure(given)
    elif context.is_offline_mode():
        context.configure(url=url, target_metadata=metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
    elif url:
        asyncio.run(_online(url))
    else:
        raise RuntimeError("no connection and no sqlalchemy.url to migrate")


_main()
