"""Running the real notifications service in tests: a real gRPC server on port 0 with mTLS,
the real access rules (TestIssuer tokens), a real database, the in-process bus and live hub,
a real SMTP sink (aiosmtpd) and a real HTTP webhook receiver."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from gatehouse.notifications.adapters.directory import StaticUserDirectory
from gatehouse.notifications.adapters.sink import MailSink
from gatehouse.notifications.app import NotificationsApp
from gatehouse.notifications.handlers.delivery import RoundReport
from gatehouse.notifications.handlers.ports import UserInfo
from gatehouse.notifications.settings import NotificationsSettings
from gatehouse.notifications.v1 import notifications_pb2 as pb
from gatehouse.notifications.v1 import notifications_pb2_grpc
from gatehouse.runtime.bus import InProcessEventBus
from gatehouse.runtime.config import Settings
from gatehouse.runtime.identity import JwksTokenVerifier, StaticKeySource
from gatehouse.runtime.kv import InMemoryKeyValueStore
from gatehouse.runtime.live import LiveHub, LiveHubOptions
from gatehouse.runtime.server import Lifecycle, ServiceServer
from gatehouse.runtime.service_context import ServiceContext
from tests.integration.notifications.webhook_server import WebhookServer
from tests.support.grpc_calls import detail, error_info, rich_status
from tests.support.mesh import channel_to, single_server
from tests.support.tokens import TestIssuer

ALICE = "users/alice"
BOB = "users/bob"
STAFF = "users/staff"
WEBHOOK_SECRET = b"webhook-secret"
SENDER_PERMISSIONS = ("notifications.send",)
STAFF_PERMISSIONS = (
    "notifications.send",
    "notifications.read_all",
    "notifications.templates.manage",
)

Metadata = tuple[tuple[str, str], ...]


async def eventually(
    check: Callable[[], Awaitable[bool]], what: str, timeout: float = 30.0
) -> None:
    """Wait (bounded) for what a background task (the worker, the sweep) brings about."""
    try:
        async with asyncio.timeout(timeout):
            # Polls another task's database writes: there is no event to wait on.
            while True:
                if await check():
                    return
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"not within {timeout} s: {what}") from None


def request_id() -> str:
    return str(uuid.uuid4())


class MovableClock:
    """The wall clock plus an offset the test moves forward: "time passes" without sleeping."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, delta: timedelta) -> None:
        self.offset += delta


def fast_settings(**overrides: Any) -> NotificationsSettings:
    values: dict[str, Any] = {
        "mail_sink": False,
        "smtp_timeout": timedelta(seconds=5),
        "webhook_timeout": timedelta(milliseconds=500),
        "send_timeout": timedelta(seconds=5),
        "webhook_allowed_hosts": ["127.0.0.1", "hooks.example.com"],
        "webhook_allow_loopback_http": True,
        "webhook_secret": WEBHOOK_SECRET.decode(),
        "watch_heartbeat": timedelta(seconds=1),
        "watch_poll_interval": timedelta(milliseconds=100),
        "retry_first_backoff": timedelta(seconds=30),
        "retry_max_backoff": timedelta(minutes=10),
    }
    values.update(overrides)
    return NotificationsSettings(_env_file=None, **values)  # type: ignore[call-arg]


async def refused(call: Awaitable[Any], code: grpc.StatusCode, reason: str) -> status_pb2.Status:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    assert raised.value.code() == code, (raised.value.code(), raised.value.details())
    status = rich_status(raised.value)
    info = error_info(status)
    assert info.reason == reason, (info.reason, raised.value.details())
    assert info.domain == "notifications.gatehouse"
    return status


def bad_request(status: status_pb2.Status) -> error_details_pb2.BadRequest:
    found: error_details_pb2.BadRequest = detail(status, error_details_pb2.BadRequest)
    return found


def email(address: str) -> pb.Address:
    return pb.Address(email_address=address)


def inline(subject: str = "Hello", text: str = "Plain body", html: str = "") -> pb.InlineContent:
    return pb.InlineContent(subject=subject, text_body=text, html_body=html)


@dataclass
class NotificationsHarness:
    app: NotificationsApp
    server: ServiceServer
    port: int
    issuer: TestIssuer
    certs_dir: Path
    bus: InProcessEventBus
    live: LiveHub
    clock: MovableClock
    sink: MailSink
    webhook: WebhookServer
    directory: StaticUserDirectory
    channels: list[grpc.aio.Channel] = field(default_factory=list)

    def stub(self) -> notifications_pb2_grpc.NotificationsServiceAsyncStub:
        channel = channel_to(self.certs_dir)(self.port)
        self.channels.append(channel)
        return notifications_pb2_grpc.NotificationsServiceStub(channel)

    def user(self, user: str = ALICE, permissions: Sequence[str] = ()) -> Metadata:
        return self.issuer.bearer(subject=user, permissions=list(permissions))

    def sender(self) -> Metadata:
        return self.user(STAFF, SENDER_PERMISSIONS)

    def staff(self) -> Metadata:
        return self.user(STAFF, STAFF_PERMISSIONS)

    async def send(self, metadata: Metadata | None = None, **fields: Any) -> list[pb.Notification]:
        fields.setdefault("channel", pb.CHANNEL_EMAIL)
        fields.setdefault("request_id", request_id())
        if "template" not in fields:
            fields.setdefault("inline_content", inline())
        response = await self.stub().SendNotification(
            pb.SendNotificationRequest(**fields), metadata=metadata or self.staff()
        )
        return list(response.notifications)

    async def get(self, name: str) -> pb.Notification:
        response = await self.stub().GetNotification(
            pb.GetNotificationRequest(name=name), metadata=self.staff()
        )
        return response.notification

    async def deliver(self) -> RoundReport:
        return await self.app.deliver()

    async def deliver_until_idle(self, rounds: int = 10) -> None:
        for _ in range(rounds):
            report = await self.app.deliver()
            if not (report.claimed or report.held or report.lost):
                return

    async def set_preferences(
        self, user: str, preferences: pb.NotificationPreferences, *paths: str
    ) -> pb.NotificationPreferences:
        from google.protobuf import field_mask_pb2  # noqa: PLC0415

        preferences.name = f"{user}/notificationPreferences"
        response = await self.stub().SetPreferences(
            pb.SetPreferencesRequest(
                preferences=preferences,
                update_mask=field_mask_pb2.FieldMask(paths=list(paths)),
                request_id=request_id(),
            ),
            metadata=self.user(user),
        )
        return response.preferences


@asynccontextmanager
async def running_notifications(
    database_url: str,
    settings: Settings,
    certs_dir: Path,
    *,
    notifications_settings: NotificationsSettings | None = None,
    bus: InProcessEventBus | None = None,
    consumers: bool = False,
    worker: bool = False,
    directory: StaticUserDirectory | None = None,
    **overrides: Any,
) -> AsyncIterator[NotificationsHarness]:
    issuer = TestIssuer()
    own_bus = bus is None
    bus = bus or InProcessEventBus()
    live = LiveHub(bus, LiveHubOptions(heartbeat_interval=timedelta(seconds=1)))
    sink = MailSink()
    await sink.start()
    webhook = WebhookServer()
    await webhook.start()
    directory = directory or StaticUserDirectory(
        [
            UserInfo(ALICE, "alice@example.com", "Alice"),
            UserInfo(BOB, "bob@example.com", "Bob"),
        ],
        {"roles/operator": [ALICE, BOB]},
    )
    context = ServiceContext(
        name="notifications",
        settings=settings.model_copy(update={"database_url": database_url}),
        lifecycle=Lifecycle(),
        kv=InMemoryKeyValueStore(),
        bus=bus,
        live=live,
    )
    clock = MovableClock()
    app = NotificationsApp(
        context,
        notifications_settings or fast_settings(**{"smtp_port": sink.port, **overrides}),
        directory=directory,
        clock=clock,
        worker=worker,
        consumers=consumers,
    )
    verifier = JwksTokenVerifier(
        StaticKeySource(issuer.jwks()), issuer="gatehouse", audience="gatehouse"
    )
    server = single_server(
        app.definition(), certs_dir, verifier=verifier, lifecycle=context.lifecycle
    )
    await live.start()
    port = await server.start()
    harness = NotificationsHarness(
        app, server, port, issuer, certs_dir, bus, live, clock, sink, webhook, directory
    )
    try:
        yield harness
    finally:
        for channel in harness.channels:
            await channel.close()
        await server.stop(0)
        await live.stop()
        await webhook.stop()
        await sink.stop()
        if own_bus:
            await bus.close()
