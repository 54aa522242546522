"""Running the real monitoring service in tests: real gRPC servers on port 0 over mTLS, the
real access rules, short intervals, and helpers for operators and simulated devices."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import grpc

from gatehouse.monitoring.app import MonitoringApp, create_monitoring
from gatehouse.monitoring.settings import MonitoringSettings
from gatehouse.monitoring.simulator import SimulatedDevice
from gatehouse.monitoring.v1 import monitoring_pb2, monitoring_pb2_grpc
from gatehouse.runtime.bus import InProcessEventBus
from gatehouse.runtime.config import Settings
from gatehouse.runtime.consumers import RunnerOptions
from gatehouse.runtime.identity import JwksTokenVerifier, StaticKeySource
from gatehouse.runtime.kv import InMemoryKeyValueStore
from gatehouse.runtime.live import LiveHub, LiveHubOptions
from gatehouse.runtime.server import Lifecycle, ServiceServer
from gatehouse.runtime.service_context import ServiceContext
from gatehouse.runtime.tls import device_certificate_file_name, issue_device_certificate
from tests.support.mesh import channel_to, single_server
from tests.support.tokens import TestIssuer

T = TypeVar("T")

FAST = MonitoringSettings(
    _env_file=None,  # type: ignore[call-arg]
    heartbeat_interval=timedelta(milliseconds=200),
    # 1.6 s of silence before a device is offline: quick for the tests that wait for it, and
    # beyond the pauses a loaded 2-core CI machine gives a healthy simulated device.
    missed_heartbeats=8,
    check_interval=timedelta(milliseconds=50),
    heartbeat_flush_interval=timedelta(milliseconds=100),
    feed_heartbeat_interval=timedelta(seconds=1),
)
SECRET_KEY = b"k" * 32


def fast_settings(**overrides: Any) -> MonitoringSettings:
    return FAST.model_copy(update=overrides)


def request_id() -> str:
    return str(uuid.uuid4())


async def eventually(
    check: Callable[[], Awaitable[T | None]], *, timeout: float = 10.0, every: float = 0.02
) -> T:
    """Poll `check` until it returns something truthy; generous deadline, no fixed sleeps."""
    async with asyncio.timeout(timeout):
        while True:
            result = await check()
            if result:
                return result
            await asyncio.sleep(every)


@dataclass
class Shared:
    """What replicas of one deployment share: the bus, the key-value store, a live hub each
    (the hub is per process; replicas in one test process each get their own)."""

    bus: InProcessEventBus = field(default_factory=InProcessEventBus)
    kv: InMemoryKeyValueStore = field(default_factory=InMemoryKeyValueStore)


@dataclass
class Replica:
    app: MonitoringApp
    server: ServiceServer
    port: int
    live: LiveHub
    lifecycle: Lifecycle


@dataclass
class MonitoringHarness:
    certs_dir: Path
    issuer: TestIssuer
    shared: Shared
    replicas: list[Replica]
    stack: AsyncExitStack

    @property
    def port(self) -> int:
        return self.replicas[0].port

    @property
    def app(self) -> MonitoringApp:
        return self.replicas[0].app

    def admin_metadata(self, *permissions: str) -> tuple[tuple[str, str], ...]:
        return self.issuer.bearer(permissions=list(permissions) or ["monitoring.*"])

    async def channel(self, identity: str = "client", replica: int = 0) -> grpc.aio.Channel:
        channel = channel_to(self.certs_dir, identity)(self.replicas[replica].port)
        await self.stack.enter_async_context(channel)
        return channel

    async def stub(self, replica: int = 0) -> AdminStub:
        return AdminStub(
            monitoring_pb2_grpc.MonitoringServiceStub(await self.channel(replica=replica)),
            self.admin_metadata(),
        )

    async def device_channel(self, device: str, replica: int = 0) -> grpc.aio.Channel:
        """A channel presenting the device's own certificate (issued on first use)."""
        if not (self.certs_dir / f"{device_certificate_file_name(device)}.pem").exists():
            issue_device_certificate(self.certs_dir, device)
        return await self.channel(device_certificate_file_name(device), replica)

    async def building(self, **fields: Any) -> monitoring_pb2.Building:
        stub = await self.stub()
        fields.setdefault("display_name", "Harbour Tower")
        fields.setdefault("time_zone", "Europe/Madrid")
        response: monitoring_pb2.CreateBuildingResponse = await stub.CreateBuilding(
            monitoring_pb2.CreateBuildingRequest(
                building=monitoring_pb2.Building(**fields), request_id=request_id()
            )
        )
        return response.building

    async def register(
        self,
        building: str,
        kind: int = monitoring_pb2.DEVICE_KIND_CAMERA,
        *,
        token: bool = False,
        **fields: Any,
    ) -> tuple[monitoring_pb2.Device, str]:
        stub = await self.stub()
        response = await stub.RegisterDevice(
            monitoring_pb2.RegisterDeviceRequest(
                parent=building,
                device=monitoring_pb2.Device(kind=kind, **fields),  # type: ignore[arg-type]
                credential_type=monitoring_pb2.DEVICE_CREDENTIAL_TYPE_TOKEN
                if token
                else monitoring_pb2.DEVICE_CREDENTIAL_TYPE_CERTIFICATE,
                request_id=request_id(),
            )
        )
        return response.device, response.device_token

    async def device(
        self,
        device: monitoring_pb2.Device,
        token: str = "",
        *,
        replica: int = 0,
        connect: bool = True,
        **options: Any,
    ) -> SimulatedDevice:
        """A simulated device with its own credential, connected unless told otherwise."""
        if token:
            channel = await self.channel(replica=replica)
        else:
            channel = await self.device_channel(device.name, replica)
        simulated = SimulatedDevice(channel, device.name, token=token or None, **options)
        if connect:
            await simulated.connect()
            self.stack.push_async_callback(_quietly_abort, simulated)
        return simulated

    async def get_device(self, name: str) -> monitoring_pb2.Device:
        stub = await self.stub()
        response: monitoring_pb2.GetDeviceResponse = await stub.GetDevice(
            monitoring_pb2.GetDeviceRequest(name=name)
        )
        return response.device

    async def wait_state(self, name: str, state: int, timeout: float = 10.0) -> None:
        async def reached() -> bool:
            return (await self.get_device(name)).state == state

        await eventually(reached, timeout=timeout)

    async def alerts(self, building: str, **filters: Any) -> list[monitoring_pb2.Alert]:
        stub = await self.stub()
        response = await stub.ListAlerts(
            monitoring_pb2.ListAlertsRequest(parent=building, **filters)
        )
        return list(response.alerts)


async def _quietly_abort(device: SimulatedDevice) -> None:
    with suppress(Exception):
        await device.abort()


class AdminStub:
    """The service stub with an operator's token on every call."""

    def __init__(
        self,
        stub: monitoring_pb2_grpc.MonitoringServiceStub,
        metadata: tuple[tuple[str, str], ...],
    ) -> None:
        self._stub = stub
        self._metadata = metadata

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._stub, name)

        def call(request: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("metadata", self._metadata)
            return method(request, **kwargs)

        return call


async def start_replica(
    settings: Settings,
    certs_dir: Path,
    database_url: str,
    issuer: TestIssuer,
    shared: Shared,
    monitoring_settings: MonitoringSettings,
    stack: AsyncExitStack,
) -> Replica:
    live = LiveHub(shared.bus, LiveHubOptions(read_block=timedelta(milliseconds=200)))
    await live.start()
    stack.push_async_callback(live.stop)
    lifecycle = Lifecycle()
    context = ServiceContext(
        name="monitoring",
        settings=settings.model_copy(update={"database_url": database_url}),
        lifecycle=lifecycle,
        kv=shared.kv,
        bus=shared.bus,
        live=live,
    )
    definition, app = create_monitoring(
        context,
        settings=monitoring_settings,
        secret_key=SECRET_KEY,
        consumer_options=RunnerOptions(block=timedelta(milliseconds=200)),
    )
    server = single_server(
        definition,
        certs_dir,
        verifier=JwksTokenVerifier(
            StaticKeySource(issuer.jwks()), issuer="gatehouse", audience="gatehouse"
        ),
        lifecycle=lifecycle,
    )
    port = await server.start()
    stack.push_async_callback(server.stop, 0.5)
    return Replica(app=app, server=server, port=port, live=live, lifecycle=lifecycle)


@asynccontextmanager
async def running_monitoring(
    settings: Settings,
    certs_dir: Path,
    database_url: str,
    *,
    replicas: int = 1,
    monitoring_settings: MonitoringSettings = FAST,
) -> AsyncIterator[MonitoringHarness]:
    issuer = TestIssuer()
    shared = Shared()
    async with AsyncExitStack() as stack:
        started = [
            await start_replica(
                settings, certs_dir, database_url, issuer, shared, monitoring_settings, stack
            )
            for _ in range(replicas)
        ]
        yield MonitoringHarness(certs_dir, issuer, shared, started, stack)
