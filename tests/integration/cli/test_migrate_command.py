"""`gatehouse migrate`, run as a deployment's migration job would: from an empty database to
the newest schema of every service, then again as a no-op."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from sqlalchemy import inspect

from gatehouse.mesh.catalog import all_services, migrations_of
from gatehouse.runtime.db import Database, current_revisions

BIN = Path(sys.executable).parent
TIMEOUT = 120.0


async def gatehouse_migrate(database_url: str, home: Path, *services: str) -> tuple[int, str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("GATEHOUSE_")}
    env |= {"GATEHOUSE_HOME": str(home), "GATEHOUSE_DATABASE_URL": database_url}
    process = await asyncio.create_subprocess_exec(
        str(BIN / "gatehouse"),
        "migrate",
        *services,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), TIMEOUT)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def tables(database_url: str) -> set[str]:
    async with Database(database_url) as database, database.engine.connect() as connection:
        names = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
    return set(names)


async def test_an_empty_database_is_migrated_once_and_then_left_alone(
    database_url: str, tmp_path: Path
) -> None:
    # The database a deployment gives one service (each service owns its database).
    assert await current_revisions(database_url) == frozenset()
    code, out, err = await gatehouse_migrate(database_url, tmp_path, "payments")
    assert code == 0, err
    assert out.startswith("payments: migrated to payments_0")
    heads = await current_revisions(database_url)
    # The runtime's chain (outbox, processed events, idempotency) and the service's own.
    assert {head.split("_")[0] for head in heads} == {"runtime", "payments"}
    schema = await tables(database_url)
    assert {"outbox_events", "payments_payments", "alembic_version"} <= schema

    code, out, err = await gatehouse_migrate(database_url, tmp_path, "payments")
    assert code == 0, err
    assert out.startswith("payments: up to date at payments_0")
    assert await current_revisions(database_url) == heads
    assert await tables(database_url) == schema


async def test_every_service_gets_its_own_database(tmp_path: Path) -> None:
    per_service = f"sqlite+aiosqlite:///{tmp_path}/{{service}}.db"
    code, out, err = await gatehouse_migrate(per_service, tmp_path)
    assert code == 0, err
    lines = out.splitlines()
    assert [line.split(":")[0] for line in lines] == list(all_services())
    assert all(": migrated to " in line for line in lines), out
    for name in all_services():
        heads = await current_revisions(per_service.replace("{service}", name))
        assert {head.split("_")[0] for head in heads} == {"runtime", name}
    code, out, err = await gatehouse_migrate(per_service, tmp_path)
    assert code == 0, err
    assert all(": up to date at " in line for line in out.splitlines()), out


async def test_one_url_for_several_services_is_refused(database_url: str, tmp_path: Path) -> None:
    code, out, err = await gatehouse_migrate(database_url, tmp_path, "auth", "payments")
    assert code == 2
    assert out == ""
    assert "{service}" in err
    assert await current_revisions(database_url) == frozenset()


def test_every_service_names_its_migrations() -> None:
    for name in all_services():
        (location,) = migrations_of(name)
        assert location.is_dir(), name
        assert any(location.glob(f"{name}_0001_*.py")), name


async def test_an_unreachable_database_is_reported_in_one_line(tmp_path: Path) -> None:
    unreachable = "postgresql+asyncpg://nobody@127.0.0.1:1/none"
    code, out, err = await gatehouse_migrate(unreachable, tmp_path, "auth")
    assert code == 1
    assert out == ""
    assert err.startswith("auth: ")
    assert "Traceback" not in err
