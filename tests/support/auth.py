"""Running the real auth service in tests: fast argon2, a clock tests move, helpers to
register, sign in and call with a token."""

from __future__ import annotations

import datetime as dt
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import status_pb2
from sqlalchemy import text

from gatehouse.auth.app import AuthApp, create_auth
from gatehouse.auth.settings import AuthSettings
from gatehouse.auth.v1 import auth_pb2, auth_pb2_grpc, events_pb2
from gatehouse.events.v1.envelope_pb2 import Event
from gatehouse.runtime.bus import InProcessEventBus
from gatehouse.runtime.config import Settings
from gatehouse.runtime.identity import (
    JwksTokenVerifier,
    KeyValueKeySource,
    KeyValueRevocationList,
)
from gatehouse.runtime.kv import InMemoryKeyValueStore, KeyValueStore
from gatehouse.runtime.live import LiveHub
from gatehouse.runtime.server import Lifecycle, ServiceServer
from gatehouse.runtime.service_context import ServiceContext
from tests.support.grpc_calls import error_info, rich_status
from tests.support.mesh import channel_to, single_server

PASSWORD = "correct horse battery"


class TestClock:
    """Wall clock (datetime) and monotonic seconds moving together, only when told."""

    __test__ = False

    def __init__(self) -> None:
        # Starts at the real time: tokens it stamps must also pass the runtime's verifier,
        # which checks `exp`/`iat` against the real clock.
        self._now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        self._monotonic = 1_000.0

    def __call__(self) -> dt.datetime:
        return self._now

    def monotonic(self) -> float:
        return self._monotonic

    def advance(self, by: dt.timedelta) -> None:
        self._now += by
        self._monotonic += by.total_seconds()


def fast_auth_settings(**overrides: Any) -> AuthSettings:
    """Argon2 at its minimum cost (tests hash hundreds of passwords) unless overridden."""
    values: dict[str, Any] = {
        "argon2_time_cost": 1,
        "argon2_memory_kib": 64,
        "argon2_parallelism": 1,
        "key_refresh_interval": dt.timedelta(hours=1),
    }
    values.update(overrides)
    return AuthSettings(_env_file=None, **values)  # type: ignore[call-arg]


async def refused(call: Awaitable[Any], code: grpc.StatusCode, reason: str) -> status_pb2.Status:
    """Await a call that must fail with `code` and ErrorInfo `reason`; its rich status."""
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    assert raised.value.code() == code, (raised.value.code(), raised.value.details())
    status = rich_status(raised.value)
    info = error_info(status)
    assert info.reason == reason, (info.reason, raised.value.details())
    assert info.domain == "auth.gatehouse"
    return status


def bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


def request_id() -> str:
    return str(uuid.uuid4())


def unique_email(prefix: str = "user") -> str:
    return f"{prefix}-{secrets.token_hex(4)}@example.com"


@dataclass
class AuthHarness:
    app: AuthApp
    server: ServiceServer
    port: int
    certs_dir: Path
    clock: TestClock
    kv: KeyValueStore
    verifier: JwksTokenVerifier
    channels: list[grpc.aio.Channel] = field(default_factory=list)

    def channel(self, identity: str = "client") -> grpc.aio.Channel:
        channel = channel_to(self.certs_dir, identity)(self.port)
        self.channels.append(channel)
        return channel

    def stub(self, identity: str = "client") -> auth_pb2_grpc.AuthServiceAsyncStub:
        return auth_pb2_grpc.AuthServiceStub(self.channel(identity))

    async def register(
        self, email: str | None = None, password: str = PASSWORD, display_name: str = "Ana"
    ) -> auth_pb2.User:
        response = await self.stub().Register(
            auth_pb2.RegisterRequest(
                email=email or unique_email(), password=password, display_name=display_name
            )
        )
        return response.user

    async def login(self, email: str, password: str = PASSWORD) -> auth_pb2.LoginResponse:
        response: auth_pb2.LoginResponse = await self.stub().Login(
            auth_pb2.LoginRequest(email=email, password=password)
        )
        return response

    async def signed_in(
        self, email: str | None = None, password: str = PASSWORD
    ) -> tuple[auth_pb2.User, auth_pb2.Tokens]:
        user = await self.register(email, password)
        return user, (await self.login(user.email, password)).tokens

    async def admin(self) -> tuple[auth_pb2.User, auth_pb2.Tokens]:
        """A user holding roles/admin (bootstrapped the way the CLI does it)."""
        from gatehouse.auth.handlers.accounts import CreateAdmin, create_admin  # noqa: PLC0415

        email = unique_email("admin")
        await create_admin(
            CreateAdmin(email=email, password=PASSWORD), self.app.uow(), self.app.deps
        )
        response = await self.login(email)
        me = await self.stub().GetCurrentUser(
            auth_pb2.GetCurrentUserRequest(), metadata=bearer(response.tokens.access_token)
        )
        return me.user, response.tokens

    async def outbox(self, event_type: str | None = None) -> list[Event]:
        """Events committed to the outbox, oldest first."""
        async with self.app.database.database.engine.connect() as connection:
            rows = await connection.execute(text("SELECT payload FROM outbox_events ORDER BY id"))
            events = [Event.FromString(row[0]) for row in rows]
        return [e for e in events if event_type is None or e.type == event_type]

    async def security_events(self) -> list[events_pb2.SecurityEventRecorded]:
        recorded = []
        for event in await self.outbox("security_event.recorded"):
            payload = events_pb2.SecurityEventRecorded()
            event.data.Unpack(payload)
            recorded.append(payload)
        return recorded


@asynccontextmanager
async def running_auth(
    settings: Settings,
    certs_dir: Path,
    database_url: str,
    *,
    auth_settings: AuthSettings | None = None,
    kv: KeyValueStore | None = None,
    clock: TestClock | None = None,
    kek: bytes | None = None,
) -> AsyncIterator[AuthHarness]:
    clock = clock or TestClock()
    kv = kv if kv is not None else InMemoryKeyValueStore(clock=clock.monotonic)
    bus = InProcessEventBus()
    context = ServiceContext(
        name="auth",
        settings=settings.model_copy(update={"database_url": database_url}),
        lifecycle=Lifecycle(),
        kv=kv,
        bus=bus,
        live=LiveHub(bus),
    )
    definition, app = create_auth(
        context,
        settings=auth_settings or fast_auth_settings(),
        clock=clock,
        kek=kek or secrets.token_bytes(32),
    )
    verifier = JwksTokenVerifier(
        KeyValueKeySource(kv),
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        revocations=KeyValueRevocationList(kv),
        # Reread at once on an unknown kid: rotation tests sign with a new key immediately.
        min_reload=dt.timedelta(0),
    )
    server = single_server(definition, certs_dir, verifier=verifier)
    port = await server.start()
    harness = AuthHarness(app, server, port, certs_dir, clock, kv, verifier)
    try:
        yield harness
    finally:
        for channel in harness.channels:
            await channel.close()
        await server.stop(grace=0)
