"""The notifications migrations (`notifications_0001`, `notifications_0002`) build exactly the
tables, columns and indexes the models declare."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect

from gatehouse.notifications.adapters.orm import NOTIFICATIONS_VERSIONS_DIR, NotificationsBase
from gatehouse.runtime.db import Database, migrate


def _ours(difference: object) -> bool:
    # The database also holds the runtime's tables (and alembic_version), in no model of ours.
    text = repr(difference)
    return "notifications_" in text and "remove_table" not in text


async def test_the_migrations_match_the_models(database_url: str) -> None:
    await migrate(database_url, [NOTIFICATIONS_VERSIONS_DIR])
    await migrate(database_url, [NOTIFICATIONS_VERSIONS_DIR])  # idempotent

    def differences(connection: Connection) -> list[object]:
        context = MigrationContext.configure(connection)
        return list(compare_metadata(context, NotificationsBase.metadata))

    def indexes(connection: Connection) -> set[str]:
        found = inspect(connection).get_indexes("notifications_notifications")
        return {str(index["name"]) for index in found}

    database = Database(database_url)
    try:
        async with database.engine.connect() as connection:
            found = await connection.run_sync(differences)
            names = await connection.run_sync(indexes)
    finally:
        await database.dispose()
    assert [d for d in found if _ours(d)] == []
    assert "ix_notifications_notifications_status_update_time" in names
