"""Gatehouse as production runs it, on this machine: one OS process per service (`gatehouse
serve <name>`, two replicas of monitoring), each with its own PostgreSQL database, all on one
Redis, behind a real Envoy; migrated beforehand by `gatehouse migrate`, as a deployment's
migration job does."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import redis.asyncio as redis
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import make_url

from gatehouse.edge.process import EdgeProcess
from gatehouse.runtime.config import SERVICE_NAMES, ServiceName, Settings
from gatehouse.runtime.secrets import new_secret_key_text
from tests.integration.conftest import _execute_autocommit, _reachable_admin_url
from tests.support.grpc_calls import SERVICE_DESCRIPTORS
from tests.support.mesh import channel_to

BIN = Path(sys.executable).parent
ADMIN_EMAIL = "ops@gatehouse.test"
ADMIN_PASSWORD = "a long operator passphrase"
STARTUP_TIMEOUT = 90.0
STOP_TIMEOUT = 40.0
REPLICATED: ServiceName = "monitoring"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Replica:
    """One `gatehouse serve <service>` process; restartable on the same port."""

    service: ServiceName
    port: int
    env: dict[str, str]
    log: Path
    certs: Path
    process: asyncio.subprocess.Process | None = None
    starts: int = 0

    async def start(self) -> None:
        self.starts += 1
        with self.log.open("ab") as sink:
            sink.write(f"--- start {self.starts}\n".encode())
            self.process = await asyncio.create_subprocess_exec(
                str(BIN / "gatehouse"),
                "serve",
                self.service,
                env=self.env,
                stdout=sink,
                stderr=sink,
                start_new_session=True,
            )
        await self.wait_serving()

    async def wait_serving(self) -> None:
        full_name = SERVICE_DESCRIPTORS[self.service].full_name
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STARTUP_TIMEOUT
        while True:
            if self.process is not None and self.process.returncode is not None:
                raise AssertionError(f"{self.name} exited: {self.log.read_text()[-3000:]}")
            try:
                async with channel_to(self.certs)(self.port) as channel:
                    response = await health_pb2_grpc.HealthStub(channel).Check(
                        health_pb2.HealthCheckRequest(service=full_name), timeout=2
                    )
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            if loop.time() > deadline:
                raise AssertionError(f"{self.name} never served: {self.log.read_text()[-3000:]}")
            await asyncio.sleep(0.2)

    async def stop(self) -> int:
        """SIGTERM, as Kubernetes sends it: the service drains, then exits."""
        process, self.process = self.process, None
        if process is None or process.returncode is not None:
            return 0 if process is None else process.returncode or 0
        process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(process.wait(), STOP_TIMEOUT)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise AssertionError(f"{self.name} did not stop on SIGTERM") from None

    @property
    def name(self) -> str:
        return f"{self.service}@{self.port}"


@dataclass
class Cluster:
    settings: Settings
    env: dict[str, str]
    replicas: dict[ServiceName, list[Replica]]
    edge: EdgeProcess
    migrate_output: list[str] = field(default_factory=list)

    def edge_channel(self) -> grpc.aio.Channel:
        certs = self.settings.certificates
        credentials = grpc.ssl_channel_credentials(
            root_certificates=(certs / "ca.pem").read_bytes(),
            private_key=(certs / "client-key.pem").read_bytes(),
            certificate_chain=(certs / "client.pem").read_bytes(),
        )
        return grpc.aio.secure_channel(f"localhost:{self.edge.port}", credentials)


async def gatehouse(env: Mapping[str, str], *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        str(BIN / "gatehouse"),
        *args,
        env=dict(env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


@asynccontextmanager
async def postgres_databases(prefix: str) -> AsyncIterator[str]:
    """One empty database per service; yields the URL with `{service}` in it."""
    admin = await _reachable_admin_url()
    names = [f"{prefix}_{service}" for service in SERVICE_NAMES]
    for name in names:
        await _execute_autocommit(admin, f'CREATE DATABASE "{name}"')
    try:
        # Rendering would percent-encode the braces: put them in after.
        placeholder = "servicenameplaceholder"
        rendered = admin.set(database=f"{prefix}_{placeholder}")
        url = rendered.render_as_string(hide_password=False).replace(placeholder, "{service}")
        assert make_url(url.replace("{service}", "auth")).database == f"{prefix}_auth"
        yield url
    finally:
        for name in names:
            await _execute_autocommit(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@asynccontextmanager
async def redis_namespace() -> AsyncIterator[tuple[str, str]]:
    """The Redis URL and a key prefix of our own; every key under it is deleted after."""
    url = os.environ.get("GATEHOUSE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    prefix = f"gatehouse-prod-test-{secrets.token_hex(4)}:"
    client = redis.Redis.from_url(url)
    try:
        await client.ping()
        yield url, prefix
    finally:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()


def base_environment(
    settings: Settings, database_url: str, redis_url: str, key_prefix: str, home: Path
) -> dict[str, str]:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("GATEHOUSE_")}
    return inherited | {
        "GATEHOUSE_HOME": str(home),
        "GATEHOUSE_CERTS_DIR": str(settings.certificates),
        "GATEHOUSE_DATABASE_URL": database_url,
        "GATEHOUSE_MIGRATE_ON_START": "false",
        "GATEHOUSE_REDIS_URL": redis_url,
        "GATEHOUSE_KEY_PREFIX": key_prefix,
        "GATEHOUSE_METRICS_PORT": "0",
        "GATEHOUSE_SHUTDOWN_GRACE_SECONDS": "10",
        # Every replica of a service shares its keys (a platform Secret in production).
        "GATEHOUSE_AUTH_KEY_ENCRYPTION_KEY": new_secret_key_text(),
        "GATEHOUSE_MONITORING_SECRET_KEY": new_secret_key_text(),
        "GATEHOUSE_ACCESS_SECRET_KEY": new_secret_key_text(),
        "GATEHOUSE_AUTH_BOOTSTRAP_ADMIN_EMAIL": ADMIN_EMAIL,
        "GATEHOUSE_AUTH_BOOTSTRAP_ADMIN_PASSWORD": ADMIN_PASSWORD,
        # A real relay in production; here nothing must listen on a fixed port.
        "GATEHOUSE_NOTIFICATIONS_SMTP_PORT": str(free_port()),
    }


@asynccontextmanager
async def running_cluster(settings: Settings, work: Path, base_id: int) -> AsyncIterator[Cluster]:
    async with (
        postgres_databases(f"gh_prod_{secrets.token_hex(4)}") as database_url,
        redis_namespace() as (redis_url, key_prefix),
    ):
        env = base_environment(settings, database_url, redis_url, key_prefix, work / "home")
        ports: dict[ServiceName, list[int]] = {
            service: [free_port() for _ in range(2 if service == REPLICATED else 1)]
            for service in SERVICE_NAMES
        }
        # Each process is told where every service is (the first replica stands for a
        # replicated one, as a Kubernetes Service name would).
        env |= {f"GATEHOUSE_{s.upper()}_PORT": str(p[0]) for s, p in ports.items()}
        edge_settings = settings.model_copy(
            update={
                "edge_port": 0,
                "edge_admin_port": 0,
                "edge_base_id": base_id,
                "edge_global_rate_per_second": 0,
                "edge_sensitive_rate_per_minute": 0,
            }
        )
        cluster = Cluster(settings, env, {}, EdgeProcess(edge_settings, directory=work / "edge"))
        for _ in range(2):  # from empty, then again as a no-op
            code, out, err = await gatehouse(env, "migrate")
            assert code == 0, err
            cluster.migrate_output.append(out)
        for service, service_ports in ports.items():
            cluster.replicas[service] = [
                Replica(
                    service,
                    port,
                    env | {f"GATEHOUSE_{service.upper()}_PORT": str(port)},
                    work / f"{service}-{port}.log",
                    settings.certificates,
                )
                for port in service_ports
            ]
        started: list[Replica] = []
        try:
            # auth first: it publishes the signing keys everyone verifies tokens with.
            for service in sorted(SERVICE_NAMES, key=lambda name: name != "auth"):
                for replica in cluster.replicas[service]:
                    await replica.start()
                    started.append(replica)
            await cluster.edge.start(ports)
            yield cluster
        finally:
            await cluster.edge.stop()
            await asyncio.gather(*(replica.stop() for replica in started), return_exceptions=True)
