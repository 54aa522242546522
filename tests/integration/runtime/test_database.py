"""Database, unit of work, migrations and the SQL idempotency repository, on real databases.

Every test that takes `database_url` (or `database`) runs once on SQLite and once on
PostgreSQL (see tests/integration/conftest.py), so both backends keep the same contract.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import textwrap
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

# The runtime's tables register on `runtime_metadata` when their modules load; load them all
# so the comparison with the migrations sees every table.
import gatehouse.runtime.consumers
import gatehouse.runtime.outbox  # noqa: F401
from gatehouse.runtime.db import (
    Database,
    DatabaseUnavailableError,
    DuplicateKeyError,
    SqlAlchemyUnitOfWork,
    alembic_config,
    migrate,
    runtime_metadata,
    sqlite_url,
)
from gatehouse.runtime.idempotency import (
    IdempotencyRecord,
    IdempotencyRecordRow,
    IdempotencyRepository,
    SqlAlchemyIdempotencyRepository,
)

SCOPE = "gatehouse.payments.v1.PaymentsService/CreatePayment|spiffe://gatehouse/access"
NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def _runtime_head() -> str:
    """The newest revision of the runtime chain: every new runtime migration moves it."""
    script = ScriptDirectory.from_config(alembic_config("sqlite+aiosqlite:///unused.db"))
    (head,) = script.get_heads()
    return str(head)


RUNTIME_HEAD = _runtime_head()


class RuntimeUnitOfWork(SqlAlchemyUnitOfWork):
    """What a service's unit of work looks like, reduced to the runtime's repository."""

    idempotency: IdempotencyRepository

    def _create_repositories(self, session: AsyncSession) -> None:
        self.idempotency = SqlAlchemyIdempotencyRepository(session)


def make_record(
    request_id: str = "0b7e8f0e-3c0d-4b8e-9d67-0a4bfb0e8d21",
    *,
    scope: str = SCOPE,
    response: bytes = b"\x0a\x10payments/01J8\x00\xff",
    expires_at: datetime = NOW + timedelta(hours=24),
) -> IdempotencyRecord:
    return IdempotencyRecord(
        scope=scope,
        request_id=request_id,
        request_fingerprint=hashlib.sha256(b"amount=100 EUR").digest(),
        response=response,
        response_type="gatehouse.payments.v1.CreatePaymentResponse",
        # The retention window the services use; only its end matters to the repository.
        created_at=expires_at - timedelta(hours=24),
        expires_at=expires_at,
    )


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    await migrate(database_url, [])
    async with Database(database_url) as database:
        yield database


async def stored(database: Database, scope: str, request_id: str) -> IdempotencyRecord | None:
    """What another transaction sees once the one under test has ended."""
    async with RuntimeUnitOfWork(database.sessionmaker) as uow:
        return await uow.idempotency.get(scope, request_id)


async def record_count(database: Database) -> int:
    async with database.sessionmaker() as session:
        count = await session.scalar(select(func.count()).select_from(IdempotencyRecordRow))
        assert count is not None
        return count


async def applied_revisions(database_url: str) -> set[str]:
    def current_heads(connection: Connection) -> set[str]:
        return set(MigrationContext.configure(connection).get_current_heads())

    async with Database(database_url) as database, database.engine.connect() as connection:
        return await connection.run_sync(current_heads)


# --- migrations ---------------------------------------------------------------------------


async def test_migrate_twice_is_a_no_op(database_url: str) -> None:
    await migrate(database_url, [])
    async with Database(database_url) as database:
        async with RuntimeUnitOfWork(database.sessionmaker) as uow:
            await uow.idempotency.add(make_record())
            await uow.commit()

        await migrate(database_url, [])

        assert await applied_revisions(database_url) == {RUNTIME_HEAD}
        assert await stored(database, SCOPE, make_record().request_id) == make_record()


async def test_concurrent_migrations_of_a_fresh_database_both_succeed(database_url: str) -> None:
    # Replicas starting together must not both try to create the same tables.
    async with asyncio.TaskGroup() as replicas:
        replicas.create_task(migrate(database_url, []))
        replicas.create_task(migrate(database_url, []))

    assert await applied_revisions(database_url) == {RUNTIME_HEAD}


async def test_one_process_can_migrate_several_databases_at_once(tmp_path: Path) -> None:
    # `gatehouse up` starts every service, and so migrates every service database, together.
    urls = [sqlite_url(tmp_path / f"{service}.db") for service in ("auth", "access", "payments")]

    async with asyncio.TaskGroup() as services:
        for url in urls:
            services.create_task(migrate(url, []))

    for url in urls:
        assert await applied_revisions(url) == {RUNTIME_HEAD}


async def test_migrate_applies_service_chains_beside_the_runtime_chain(
    database_url: str, tmp_path: Path
) -> None:
    versions = tmp_path / "widgets_versions"
    versions.mkdir()
    (versions / "widgets_0001_widgets.py").write_text(
        textwrap.dedent(
            '''
            """A service chain of its own, with its own branch label."""
            import sqlalchemy as sa
            from alembic import op

            revision = "widgets_0001"
            down_revision = None
            branch_labels = ("widgets",)
            depends_on = None


            def upgrade() -> None:
                op.create_table("widgets", sa.Column("id", sa.String(36), primary_key=True))


            def downgrade() -> None:
                op.drop_table("widgets")
            '''
        )
    )

    await migrate(database_url, [versions])
    await migrate(database_url, [versions])

    assert await applied_revisions(database_url) == {RUNTIME_HEAD, "widgets_0001"}


async def test_the_runtime_models_match_the_runtime_migrations(database: Database) -> None:
    def differences(connection: Connection) -> list[object]:
        return list(compare_metadata(MigrationContext.configure(connection), runtime_metadata))

    async with database.engine.connect() as connection:
        diff = await connection.run_sync(differences)

    # The database also holds alembic_version, which is in no model.
    assert [d for d in diff if "alembic_version" not in repr(d)] == []


async def test_alembic_commands_run_outside_migrate_share_its_environment(
    database: Database,
) -> None:
    # What a developer runs before writing a migration: env.py opens its own connection, and
    # autogenerate finds nothing the runtime models lack.
    config = alembic_config(
        database.url.render_as_string(hide_password=False), target_metadata=runtime_metadata
    )

    await asyncio.to_thread(command.check, config)


# --- idempotency repository ---------------------------------------------------------------


async def test_add_then_get_round_trips_every_field(database: Database) -> None:
    madrid_summer = timezone(timedelta(hours=2))
    original = replace(
        make_record(),
        created_at=datetime(2030, 6, 1, 14, 30, 15, 123456, tzinfo=madrid_summer),
        expires_at=datetime(2030, 6, 2, 14, 30, 15, 123456, tzinfo=madrid_summer),
    )
    async with RuntimeUnitOfWork(database.sessionmaker) as uow:
        await uow.idempotency.add(original)
        await uow.commit()

    loaded = await stored(database, original.scope, original.request_id)

    assert loaded == original
    assert loaded.created_at.utcoffset() == timedelta(0)
    assert loaded.created_at == datetime(2030, 6, 1, 12, 30, 15, 123456, tzinfo=UTC)


async def test_get_of_an_unknown_key_is_none(database: Database) -> None:
    async with RuntimeUnitOfWork(database.sessionmaker) as uow:
        await uow.idempotency.add(make_record("known"))
        await uow.commit()

    assert await stored(database, SCOPE, "unknown") is None
    assert await stored(database, "another/Method|caller", "known") is None


async def test_the_same_request_id_in_two_scopes_is_two_records(database: Database) -> None:
    async with RuntimeUnitOfWork(database.sessionmaker) as uow:
        await uow.idempotency.add(make_record("r1", scope="a/Create|alice"))
        await uow.idempotency.add(make_record("r1", scope="a/Create|bob"))
        await uow.commit()

    assert await record_count(database) == 2


async def test_a_duplicate_key_raises_duplicate_key_error_and_the_session_stays_usable(
    database: Database,
) -> None:
    original = make_record("r1")
    async with RuntimeUnitOfWork(database.sessionmaker) as uow:
        await uow.idempotency.add(original)
        await uow.commit()

    async with RuntimeUnitOfWork(database.sessionmaker) as uow:
        with pytest.raises(DuplicateKeyError) as caught:
            await uow.idempotency.add(replace(original, response=b"a second result"))
        # Only the savepoint was rolled back: the same transaction reads and writes on.
        assert await uow.idempotency.get(SCOPE, "r1") == original
        await uow.idempotency.add(make_record("r2"))
        await uow.commit()

    assert not isinstance(caught.value, IntegrityError)
    assert caught.value.__cause__ is None
    assert "INSERT" not in str(caught.value).upper()
    assert await stored(database, SCOPE, "r1") == original
    assert await stored(database, SCOPE, "r2") == make_record("r2")


async def test_a_duplicate_found_only_at_commit_raises_duplicate_key_error(
    database: Database,
) -> None:
    async with RuntimeUnitOfWork(database.sessionmaker) as uow:
        await uow.idempotency.add(make_record("r1"))
        await uow.commit()

    async with RuntimeUnitOfWork(database.sessionmaker) as uow:
        # Added without a flush, as a service's own repository might: the insert happens
        # in commit().
        uow.session.add(IdempotencyRecordRow.from_record(make_record("r1")))
        with pytest.raises(DuplicateKeyError):
            await uow.commit()

    assert await record_count(database) == 1


async def test_of_two_concurrent_adds_of_the_same_key_exactly_one_wins(
    database: Database,
) -> None:
    both_open = asyncio.Barrier(2)

    async def attempt(response: bytes) -> bool:
        async with RuntimeUnitOfWork(database.sessionmaker) as uow:
            await both_open.wait()
            try:
                await uow.idempotency.add(make_record("twin", response=response))
            except DuplicateKeyError:
                # What a retried RPC does next: replay the winner's response.
                winner = await uow.idempotency.get(SCOPE, "twin")
                assert winner is not None
                assert winner.response != response
                return False
            await uow.commit()
            return True

    async with asyncio.TaskGroup() as twins:
        first = twins.create_task(attempt(b"first"))
        second = twins.create_task(attempt(b"second"))

    assert sorted([first.result(), second.result()]) == [False, True]
    assert await record_count(database) == 1
    winner = await stored(database, SCOPE, "twin")
    assert winner is not None
    assert winner.response == (b"first" if first.result() else b"second")


async def test_delete_expired_removes_exactly_the_expired_records(database: Database) -> None:
    async with RuntimeUnitOfWork(database.sessionmaker) as uow:
        await uow.idempotency.add(make_record("long-gone", expires_at=NOW - timedelta(days=1)))
        await uow.idempotency.add(make_record("expires-now", expires_at=NOW))
        await uow.idempotency.add(make_record("still-valid", expires_at=NOW + timedelta(seconds=1)))
        await uow.commit()

    async with RuntimeUnitOfWork(database.sessionmaker) as uow:
        deleted = await uow.idempotency.delete_expired(NOW)
        await uow.commit()

    assert deleted == 2
    assert await stored(database, SCOPE, "long-gone") is None
    assert await stored(database, SCOPE, "expires-now") is None
    assert await stored(database, SCOPE, "still-valid") is not None
    async with RuntimeUnitOfWork(database.sessionmaker) as uow:
        assert await uow.idempotency.delete_expired(NOW) == 0


# --- unit of work -------------------------------------------------------------------------


async def test_a_unit_of_work_left_without_commit_writes_nothing(database: Database) -> None:
    async with RuntimeUnitOfWork(database.sessionmaker) as uow:
        await uow.idempotency.add(make_record("r1"))
        await uow.idempotency.add(make_record("r2"))

    assert await record_count(database) == 0


async def test_a_unit_of_work_rolls_back_when_its_block_raises(database: Database) -> None:
    class HandlerFailed(Exception):
        pass

    async def failing_handler() -> None:
        async with RuntimeUnitOfWork(database.sessionmaker) as uow:
            await uow.idempotency.add(make_record("r1"))
            raise HandlerFailed

    with pytest.raises(HandlerFailed):
        await failing_handler()

    assert await record_count(database) == 0


async def test_changes_after_a_commit_need_their_own_commit(database: Database) -> None:
    async with RuntimeUnitOfWork(database.sessionmaker) as uow:
        await uow.idempotency.add(make_record("committed"))
        await uow.commit()
        await uow.idempotency.add(make_record("not-committed"))

    assert await stored(database, SCOPE, "committed") is not None
    assert await stored(database, SCOPE, "not-committed") is None


async def test_a_unit_of_work_can_be_reused_but_not_nested(database: Database) -> None:
    uow = RuntimeUnitOfWork(database.sessionmaker)
    with pytest.raises(RuntimeError, match="not open"):
        _ = uow.session

    async with uow:
        with pytest.raises(RuntimeError, match="already open"):
            await uow.__aenter__()
    async with uow:
        await uow.idempotency.add(make_record())
        await uow.commit()

    assert await record_count(database) == 1


# --- database -----------------------------------------------------------------------------


async def test_ping_answers(database: Database) -> None:
    await database.ping()


async def test_ping_of_an_unreachable_database_raises_unavailable() -> None:
    # Port 1 on loopback: refused at once, no server needed.
    async with Database("postgresql+asyncpg://nobody:secret@127.0.0.1:1/nothing") as database:
        with pytest.raises(DatabaseUnavailableError):
            await database.ping(timeout=timedelta(seconds=10))
        assert "secret" not in repr(database)


def test_urls_of_other_drivers_are_refused() -> None:
    with pytest.raises(ValueError, match="unsupported database URL"):
        Database("postgresql+psycopg2://postgres@127.0.0.1/test")
    with pytest.raises(ValueError, match="unsupported database URL"):
        Database("mysql+aiomysql://root@127.0.0.1/test")


async def test_sqlite_files_get_their_directory_and_pragmas(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "data" / "auth.db"
    async with Database(sqlite_url(path)) as database, database.engine.connect() as connection:
        pragmas = {
            name: (await connection.exec_driver_sql(f"PRAGMA {name}")).scalar()
            for name in ("journal_mode", "foreign_keys", "synchronous", "busy_timeout")
        }

    assert path.is_file()
    assert pragmas == {
        "journal_mode": "wal",
        "foreign_keys": 1,
        "synchronous": 1,  # NORMAL
        "busy_timeout": 5000,
    }
    # WAL is a property of the file: any other client opening it sees it too.
    with sqlite3.connect(path) as plain:
        assert plain.execute("PRAGMA journal_mode").fetchone() == ("wal",)
