"""The Alembic environment shared by every Gatehouse service database.

Alembic runs this file for every command. It holds nothing service-specific: which chains
exist comes from `version_locations` and what to compare against from the
`target_metadata` attribute, both set by `gatehouse.runtime.db.alembic_config()`.

- `migrate()` passes an open connection (attribute `connection`) inside its own transaction
  and lock; the migrations run on it.
- Without a connection (e.g. `command.revision(..., autogenerate=True)` from a shell), this
  opens one from `sqlalchemy.url` with the same engine settings as the services.
- Offline (`--sql`) mode renders SQL for `sqlalchemy.url`'s dialect.
"""

from __future__ import annotations

import asyncio
from typing import Any

from alembic import context
from sqlalchemy import Connection, MetaData
from sqlalchemy.schema import SchemaItem

from gatehouse.runtime.db import Database


def _target_metadata() -> MetaData | list[MetaData] | None:
    metadata: MetaData | list[MetaData] | None = context.config.attributes.get("target_metadata")
    return metadata


def _include_object(
    item: SchemaItem, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    # Several chains share one database: a table that exists but is not in the metadata being
    # compared belongs to another chain, so autogenerate must not propose dropping it.
    return not (type_ == "table" and reflected and compare_to is None)


def _run_on(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=_target_metadata(),
        include_object=_include_object,
        # Batch mode renders ALTERs that SQLite can run (table copy); PostgreSQL runs them as
        # plain ALTERs, so one migration file serves both backends.
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_with_own_connection(url: str) -> None:
    async with Database(url) as database, database.engine.begin() as connection:
        await connection.run_sync(_run_on)


def _run_online() -> None:
    connection: Connection | None = context.config.attributes.get("connection")
    if connection is not None:
        _run_on(connection)
        return
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no connection attribute and no sqlalchemy.url to migrate")
    asyncio.run(_run_with_own_connection(url))


def _run_offline() -> None:
    context.configure(
        url=context.config.get_main_option("sqlalchemy.url"),
        target_metadata=_target_metadata(),
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    _run_offline()
else:
    _run_online()
