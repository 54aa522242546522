"""Real databases for integration tests: a SQLite file and a throwaway PostgreSQL database.

`database_url` runs a test once per backend ("sqlite", "postgresql"); each run starts from an
empty database. PostgreSQL comes from `GATEHOUSE_TEST_POSTGRES_URL` (any database the server
lets us connect to, used only to create and drop the test database) or else the local server
as `postgres` or `root`. One database named `gatehouse_test_<random>` serves the whole test
run and is dropped at the end; between tests its `public` schema is recreated.

When no PostgreSQL answers, the PostgreSQL tests are skipped with a warning, except under
`CI=true`, where a missing database is a broken pipeline and fails them instead.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import warnings
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import URL, make_url, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from gatehouse.runtime.db import sqlite_url

_LOCAL_POSTGRES_URLS = (
    "postgresql+asyncpg://postgres@127.0.0.1:5432/test",
    "postgresql+asyncpg://root@127.0.0.1:5432/test",
)
_CONNECT_TIMEOUT_SECONDS = 10.0


async def _execute_autocommit(url: URL, *statements: str) -> None:
    # CREATE/DROP DATABASE refuse to run inside a transaction block.
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        async with asyncio.timeout(_CONNECT_TIMEOUT_SECONDS), engine.connect() as connection:
            for statement in statements:
                await connection.execute(text(statement))
    finally:
        await engine.dispose()


async def _reachable_admin_url() -> URL:
    configured = os.environ.get("GATEHOUSE_TEST_POSTGRES_URL")
    candidates = (configured,) if configured else _LOCAL_POSTGRES_URLS
    failures = []
    for candidate in candidates:
        url = make_url(candidate)
        try:
            await _execute_autocommit(url, "SELECT 1")
        except Exception as error:
            failures.append(f"{url.render_as_string(hide_password=True)}: {error!r}")
        else:
            return url
    problem = (
        f"PostgreSQL did not answer ({'; '.join(failures)}). Start it with "
        "`pg_ctlcluster --skip-systemctl-redirect <version> main start` or set "
        "GATEHOUSE_TEST_POSTGRES_URL."
    )
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true, so this fails instead of skipping: {problem}")
    reason = f"EVERY POSTGRESQL TEST IS SKIPPED: {problem}"
    warnings.warn(reason, stacklevel=1)
    pytest.skip(reason)


@pytest.fixture(scope="session")
async def postgres_url() -> AsyncIterator[str]:
    """URL of an empty PostgreSQL database created for this test run and dropped after it."""
    admin_url = await _reachable_admin_url()
    name = f"gatehouse_test_{secrets.token_hex(6)}"
    await _execute_autocommit(admin_url, f'CREATE DATABASE "{name}"')
    try:
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        # FORCE ends connections a failed test may have leaked, which would block the drop.
        await _execute_autocommit(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def fresh_postgres_url(postgres_url: str) -> str:
    """`postgres_url` with every table, type and migration record of earlier tests gone."""
    await _execute_autocommit(
        make_url(postgres_url),
        "DROP SCHEMA IF EXISTS public CASCADE",
        "CREATE SCHEMA public",
    )
    return postgres_url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database per test, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        # A directory that does not exist yet: creating it is part of what Database does.
        return sqlite_url(tmp_path / "data" / "service.db")
    url: str = request.getfixturevalue("fresh_postgres_url")
    return url
