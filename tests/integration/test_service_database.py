"""Every service migrates and checks its database on start, on SQLite and on PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import inspect, text

from gatehouse.mesh.runner import Mesh
from gatehouse.runtime.config import ConfigurationError, Settings
from gatehouse.runtime.db import Database, DatabaseUnavailableError
from gatehouse.runtime.telemetry import create_tracer_provider
from tests.support.mesh import channel_to


async def _tables(url: str) -> set[str]:
    async with Database(url) as database, database.engine.connect() as connection:
        names = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
        versions = await connection.execute(text("SELECT version_num FROM alembic_version"))
        assert versions.scalars().all(), "no migration recorded"
    return set(names)


async def test_service_start_runs_migrations(
    settings: Settings, database_url: str, certs_dir: Path
) -> None:
    configured = settings.model_copy(update={"database_url": database_url})
    mesh = Mesh(configured, ["payments"], tracer_provider=create_tracer_provider("t"))
    ports = await mesh.start()
    try:
        async with channel_to(certs_dir)(ports["payments"]) as channel:
            response = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest()
            )
        assert response.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await mesh.stop(grace=0)
    assert {"alembic_version", "idempotency_records"} <= await _tables(database_url)


async def test_restart_on_a_migrated_database_is_a_no_op(
    settings: Settings, database_url: str
) -> None:
    configured = settings.model_copy(update={"database_url": database_url})
    for _ in range(2):
        mesh = Mesh(configured, ["notifications"], tracer_provider=create_tracer_provider("t"))
        await mesh.start()
        await mesh.stop(grace=0)
    assert "idempotency_records" in await _tables(database_url)


async def test_unreachable_database_stops_the_start_before_any_port_opens(
    settings: Settings,
) -> None:
    # Port 1 refuses at once; the start must fail instead of reporting SERVING.
    configured = settings.model_copy(
        update={
            "database_url": "postgresql+asyncpg://gatehouse:s3cret@127.0.0.1:1/gatehouse_{service}",
            "migrate_on_start": False,
        }
    )
    mesh = Mesh(configured, ["auth", "access"], tracer_provider=create_tracer_provider("t"))
    with pytest.raises(DatabaseUnavailableError) as raised:
        await mesh.start()
    assert "s3cret" not in str(raised.value)
    assert all(server.port == 0 for server in mesh.servers.values())


async def test_several_services_may_not_share_one_database(settings: Settings) -> None:
    shared = settings.model_copy(
        update={"database_url": "postgresql+asyncpg://127.0.0.1/gatehouse"}
    )
    with pytest.raises(ConfigurationError, match=r"\{service\}"):
        Mesh(shared, ["auth", "payments"], tracer_provider=create_tracer_provider("t"))
    # One service alone may have the database the URL names.
    Mesh(shared, ["payments"], tracer_provider=create_tracer_provider("t"))
