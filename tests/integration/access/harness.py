"""Running the real access service in tests: a real gRPC server on port 0 over mTLS, the real
access rules, TestIssuer tokens, a movable clock, and door controllers with their own
certificates.

Buildings and doors come from a `StaticDirectory` (what monitoring would answer), unless a
test runs access against a real monitoring service (tests/integration/access/test_open_door).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import grpc

from gatehouse.access.app import AccessApp, create_access
from gatehouse.access.handlers.ports import (
    BuildingInfo,
    Directory,
    DirectoryUnavailableError,
    DoorCommands,
    DoorInfo,
)
from gatehouse.access.settings import AccessSettings
from gatehouse.access.v1 import access_pb2, access_pb2_grpc
from gatehouse.events.v1.envelope_pb2 import Event
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

if TYPE_CHECKING:
    from gatehouse.access.v1.access_pb2_grpc import AccessServiceAsyncStub

T = TypeVar("T")

SECRET_KEY = b"a" * 32
BUILDING = "b1"
ZONE = "Europe/Madrid"
DOORS = {"main": "d-main", "side": "d-side", "garage": "d-garage"}

FAST = AccessSettings(
    _env_file=None,  # type: ignore[call-arg]
    lockout_max_failures=3,
    lockout_window=timedelta(minutes=1),
    lockout_duration=timedelta(minutes=5),
    watch_heartbeat_interval=timedelta(milliseconds=300),
    command_timeout=timedelta(seconds=5),
)


def request_id() -> str:
    return str(uuid.uuid4())


def door(name: str, building: str = BUILDING) -> str:
    return f"buildings/{building}/doors/{name}"


def controller(name: str, building: str = BUILDING) -> str:
    return f"buildings/{building}/devices/{DOORS[name]}"


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


class MovableClock:
    """The wall clock plus an offset the test moves: "time passes" without sleeping."""

    def __init__(self, start: datetime | None = None) -> None:
        self.offset = timedelta() if start is None else start - datetime.now(UTC)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, delta: timedelta) -> None:
        self.offset += delta

    def set(self, when: datetime) -> None:
        self.offset = when - datetime.now(UTC)


@dataclass
class StaticDirectory:
    """What monitoring would say: buildings with zones, doors with their controllers."""

    buildings: dict[str, str] = field(default_factory=lambda: {BUILDING: ZONE})
    doors: dict[tuple[str, str], str] = field(
        default_factory=lambda: {(BUILDING, d): controller(d) for d in DOORS}
    )
    down: bool = False

    async def building(self, building_id: str) -> BuildingInfo | None:
        if self.down:
            raise DirectoryUnavailableError("down")
        zone = self.buildings.get(building_id)
        return None if zone is None else BuildingInfo(building_id, zone)

    async def door(self, building_id: str, door_id: str) -> DoorInfo | None:
        if self.down:
            raise DirectoryUnavailableError("down")
        found = self.doors.get((building_id, door_id))
        return None if found is None else DoorInfo(building_id, door_id, found)

    async def list_doors(self, building_id: str) -> list[DoorInfo]:
        return [DoorInfo(b, d, c) for (b, d), c in sorted(self.doors.items()) if b == building_id]


class _DirectoryView:
    """Adapts StaticDirectory (whose `doors` attribute is the data) to the Directory port."""

    def __init__(self, directory: StaticDirectory) -> None:
        self._directory = directory

    async def building(self, building_id: str) -> BuildingInfo | None:
        return await self._directory.building(building_id)

    async def door(self, building_id: str, door_id: str) -> DoorInfo | None:
        return await self._directory.door(building_id, door_id)

    async def doors(self, building_id: str) -> list[DoorInfo]:
        return await self._directory.list_doors(building_id)


class AuthedStub:
    """The service stub with fixed metadata (an operator's token) on every call."""

    def __init__(self, stub: AccessServiceAsyncStub, metadata: tuple[tuple[str, str], ...]) -> None:
        self._stub = stub
        self._metadata = metadata

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._stub, name)

        def invoke(request: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("metadata", self._metadata)
            return method(request, **kwargs)

        return invoke


@dataclass
class AccessHarness:
    app: AccessApp
    server: ServiceServer
    port: int
    issuer: TestIssuer
    certs_dir: Path
    bus: InProcessEventBus
    live: LiveHub
    clock: MovableClock
    directory: StaticDirectory
    stack: AsyncExitStack

    async def channel(self, identity: str = "client") -> grpc.aio.Channel:
        channel = channel_to(self.certs_dir, identity)(self.port)
        await self.stack.enter_async_context(channel)
        return channel

    async def operator(
        self, *permissions: str, subject: str = "users/operator"
    ) -> AccessServiceAsyncStub:
        metadata = self.issuer.bearer(
            subject=subject, permissions=list(permissions) or ["access.*"]
        )
        stub = access_pb2_grpc.AccessServiceStub(await self.channel())
        return cast("AccessServiceAsyncStub", AuthedStub(stub, metadata))

    async def controller(self, door_name: str) -> AccessServiceAsyncStub:
        """A stub presenting the door controller's own certificate (issued on first use)."""
        device = controller(door_name)
        if not (self.certs_dir / f"{device_certificate_file_name(device)}.pem").exists():
            issue_device_certificate(self.certs_dir, device)
        return access_pb2_grpc.AccessServiceStub(
            await self.channel(device_certificate_file_name(device))
        )

    async def issue(
        self, doors: list[str] | None = None, **grant_fields: Any
    ) -> access_pb2.IssuePinResponse:
        stub = await self.operator()
        grant_fields.setdefault("holder", "users/ana")
        pin_length = grant_fields.pop("pin_length", 0)
        response: access_pb2.IssuePinResponse = await stub.IssuePin(
            access_pb2.IssuePinRequest(
                parent=f"buildings/{BUILDING}",
                grant=access_pb2.Grant(doors=doors or [door("main")], **grant_fields),
                pin_length=pin_length,
                request_id=request_id(),
            )
        )
        return response

    async def validate(
        self, door_name: str, pin: str, *, rid: str | None = None
    ) -> access_pb2.ValidatePinResponse:
        stub = await self.controller(door_name)
        response: access_pb2.ValidatePinResponse = await stub.ValidatePin(
            access_pb2.ValidatePinRequest(
                door=door(door_name), pin=pin, request_id=rid or request_id()
            )
        )
        return response

    async def entries(self, **filters: Any) -> list[access_pb2.AccessLogEntry]:
        stub = await self.operator()
        response: access_pb2.ListAccessLogsResponse = await stub.ListAccessLogs(
            access_pb2.ListAccessLogsRequest(
                parent=f"buildings/{BUILDING}", order_by="sequence_number", **filters
            )
        )
        return list(response.access_logs)

    async def events(self, stream: str, *, wait_for: int = 0) -> list[Event]:
        """The events published on `stream` (waits until `wait_for` are there: the outbox
        relay publishes after the commit)."""

        async def enough() -> list[Event] | None:
            entries = await self.bus.read(stream, after=None, count=10_000)
            found = [event for _, event in entries]
            return found if len(found) >= wait_for else None

        if wait_for:
            return await eventually(enough)
        return [event for _, event in await self.bus.read(stream, after=None, count=10_000)]


@asynccontextmanager
async def running_access(
    settings: Settings,
    certs_dir: Path,
    database_url: str,
    *,
    access_settings: AccessSettings = FAST,
    directory: StaticDirectory | None = None,
    doors: DoorCommands | None = None,
    real_directory: Directory | None = None,
    bus: InProcessEventBus | None = None,
    monitoring_channel: Callable[[], grpc.aio.Channel] | None = None,
) -> AsyncIterator[AccessHarness]:
    issuer = TestIssuer()
    bus = bus or InProcessEventBus()
    static = directory or StaticDirectory()
    clock = MovableClock()
    async with AsyncExitStack() as stack:
        live = LiveHub(bus, LiveHubOptions(read_block=timedelta(milliseconds=100)))
        await live.start()
        stack.push_async_callback(live.stop)
        lifecycle = Lifecycle()
        context = ServiceContext(
            name="access",
            settings=settings.model_copy(update={"database_url": database_url}),
            lifecycle=lifecycle,
            kv=InMemoryKeyValueStore(),
            bus=bus,
            live=live,
        )
        use_static = real_directory is None and monitoring_channel is None
        definition, app = create_access(
            context,
            settings=access_settings,
            clock=clock,
            secret_key=SECRET_KEY,
            directory=_DirectoryView(static) if use_static else real_directory,
            doors=doors,
            monitoring_channel=monitoring_channel,
            consumer_options=RunnerOptions(block=timedelta(milliseconds=100)),
            # Tests run business-hours rounds themselves (`app.check_door_hours()`).
            door_hours=False,
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
        yield AccessHarness(app, server, port, issuer, certs_dir, bus, live, clock, static, stack)
