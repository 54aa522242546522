"""Typed clients for the five Gatehouse services.

`GatehouseClients` holds one channel per service and exposes each service as its mypy-protobuf
typed async stub; `connect` does the same for a single service. Neither builds anything until
it is entered inside the running event loop.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, fields
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Literal, Self, overload

import grpc
from google.protobuf.descriptor import ServiceDescriptor

from gatehouse.access.v1 import access_pb2, access_pb2_grpc
from gatehouse.auth.v1 import auth_pb2, auth_pb2_grpc
from gatehouse.clients.channel import ChannelFactory, ClientCredentials
from gatehouse.clients.interceptors import TokenProvider
from gatehouse.clients.retry import RetryPolicy
from gatehouse.monitoring.v1 import monitoring_pb2, monitoring_pb2_grpc
from gatehouse.notifications.v1 import notifications_pb2, notifications_pb2_grpc
from gatehouse.payments.v1 import payments_pb2, payments_pb2_grpc

if TYPE_CHECKING:
    # Typing-only classes of the generated stubs (`@type_check_only`): at run time the
    # `XServiceStub(aio_channel)` constructors return them.
    from gatehouse.access.v1.access_pb2_grpc import AccessServiceAsyncStub
    from gatehouse.auth.v1.auth_pb2_grpc import AuthServiceAsyncStub
    from gatehouse.monitoring.v1.monitoring_pb2_grpc import MonitoringServiceAsyncStub
    from gatehouse.notifications.v1.notifications_pb2_grpc import NotificationsServiceAsyncStub
    from gatehouse.payments.v1.payments_pb2_grpc import PaymentsServiceAsyncStub

ServiceName = Literal["auth", "access", "monitoring", "payments", "notifications"]

# Long enough for a payment provider round trip, short enough that a hung peer is noticed.
DEFAULT_UNARY_TIMEOUT: Final = 10.0
DEFAULT_RETRY: Final = RetryPolicy()

SERVICE_DESCRIPTORS: Final[Mapping[ServiceName, ServiceDescriptor]] = {
    "auth": auth_pb2.DESCRIPTOR.services_by_name["AuthService"],
    "access": access_pb2.DESCRIPTOR.services_by_name["AccessService"],
    "monitoring": monitoring_pb2.DESCRIPTOR.services_by_name["MonitoringService"],
    "payments": payments_pb2.DESCRIPTOR.services_by_name["PaymentsService"],
    "notifications": notifications_pb2.DESCRIPTOR.services_by_name["NotificationsService"],
}


@dataclass(frozen=True, slots=True)
class Targets:
    """Where each service listens (`host:port`); defaults are the embedded mesh's ports."""

    auth: str = "127.0.0.1:50051"
    access: str = "127.0.0.1:50052"
    monitoring: str = "127.0.0.1:50053"
    payments: str = "127.0.0.1:50054"
    notifications: str = "127.0.0.1:50055"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Targets:
        """Defaults overridden by `GATEHOUSE_<SERVICE>_TARGET` (e.g. `GATEHOUSE_AUTH_TARGET`)."""
        env = os.environ if environ is None else environ
        found = {
            field.name: value.strip()
            for field in fields(cls)
            if (value := env.get(f"GATEHOUSE_{field.name.upper()}_TARGET", "")).strip()
        }
        return cls(**found)

    def of(self, service: ServiceName) -> str:
        target: str = getattr(self, service)
        return target


@dataclass(frozen=True, slots=True)
class _Open:
    channels: Mapping[ServiceName, grpc.aio.Channel]
    auth: AuthServiceAsyncStub
    access: AccessServiceAsyncStub
    monitoring: MonitoringServiceAsyncStub
    payments: PaymentsServiceAsyncStub
    notifications: NotificationsServiceAsyncStub


class GatehouseClients:
    """The five services as typed async stubs, one channel each, for the life of an `async with`.

        async with GatehouseClients(credentials, token_provider=tokens) as mesh:
            user = await mesh.auth.GetUser(auth_pb2.GetUserRequest(name="users/u1"))

    Every call gets the behaviour of `ChannelFactory`: the token from `token_provider`, a
    `default_timeout` deadline on unary and client-streaming calls that have none (never on
    streamed responses), a `request_id` for mutating calls, and gRPC retries of the methods
    the contracts make retryable (`retry=None` turns retries and request-id filling off).
    `targets` defaults to `Targets.from_env()`. All channels open on entering, inside the
    running loop, and close on leaving, cancelling calls still in flight.
    """

    def __init__(
        self,
        credentials: ClientCredentials,
        *,
        targets: Targets | None = None,
        token_provider: TokenProvider | None = None,
        default_timeout: float | None = DEFAULT_UNARY_TIMEOUT,
        retry: RetryPolicy | None = DEFAULT_RETRY,
        server_name_override: str | None = None,
    ) -> None:
        self._factory = ChannelFactory(
            credentials,
            token_provider=token_provider,
            default_timeout=default_timeout,
            retry=retry,
            server_name_override=server_name_override,
        )
        self.targets = targets if targets is not None else Targets.from_env()
        self._open: _Open | None = None
        self._used = False

    async def __aenter__(self) -> Self:
        if self._used:
            raise RuntimeError("GatehouseClients can be entered once; make a new one")
        self._used = True
        channels = {
            name: self._factory.channel(self.targets.of(name), descriptor)
            for name, descriptor in SERVICE_DESCRIPTORS.items()
        }
        self._open = _Open(
            channels=channels,
            auth=auth_pb2_grpc.AuthServiceStub(channels["auth"]),
            access=access_pb2_grpc.AccessServiceStub(channels["access"]),
            monitoring=monitoring_pb2_grpc.MonitoringServiceStub(channels["monitoring"]),
            payments=payments_pb2_grpc.PaymentsServiceStub(channels["payments"]),
            notifications=notifications_pb2_grpc.NotificationsServiceStub(
                channels["notifications"]
            ),
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close every channel; idempotent."""
        opened, self._open = self._open, None
        if opened is not None:
            await asyncio.gather(*(channel.close() for channel in opened.channels.values()))

    def channel(self, service: ServiceName) -> grpc.aio.Channel:
        """The channel to `service`, for stubs of other APIs on it (health, reflection)."""
        return self._opened().channels[service]

    @property
    def auth(self) -> AuthServiceAsyncStub:
        return self._opened().auth

    @property
    def access(self) -> AccessServiceAsyncStub:
        return self._opened().access

    @property
    def monitoring(self) -> MonitoringServiceAsyncStub:
        return self._opened().monitoring

    @property
    def payments(self) -> PaymentsServiceAsyncStub:
        return self._opened().payments

    @property
    def notifications(self) -> NotificationsServiceAsyncStub:
        return self._opened().notifications

    def _opened(self) -> _Open:
        if self._open is None:
            state = "closed" if self._used else "not entered yet"
            raise RuntimeError(f"GatehouseClients is {state}; use it inside `async with`")
        return self._open


@overload
def connect(
    service: Literal["auth"],
    credentials: ClientCredentials,
    *,
    target: str | None = None,
    token_provider: TokenProvider | None = None,
    default_timeout: float | None = DEFAULT_UNARY_TIMEOUT,
    retry: RetryPolicy | None = DEFAULT_RETRY,
) -> AbstractAsyncContextManager[AuthServiceAsyncStub]: ...
@overload
def connect(
    service: Literal["access"],
    credentials: ClientCredentials,
    *,
    target: str | None = None,
    token_provider: TokenProvider | None = None,
    default_timeout: float | None = DEFAULT_UNARY_TIMEOUT,
    retry: RetryPolicy | None = DEFAULT_RETRY,
) -> AbstractAsyncContextManager[AccessServiceAsyncStub]: ...
@overload
def connect(
    service: Literal["monitoring"],
    credentials: ClientCredentials,
    *,
    target: str | None = None,
    token_provider: TokenProvider | None = None,
    default_timeout: float | None = DEFAULT_UNARY_TIMEOUT,
    retry: RetryPolicy | None = DEFAULT_RETRY,
) -> AbstractAsyncContextManager[MonitoringServiceAsyncStub]: ...
@overload
def connect(
    service: Literal["payments"],
    credentials: ClientCredentials,
    *,
    target: str | None = None,
    token_provider: TokenProvider | None = None,
    default_timeout: float | None = DEFAULT_UNARY_TIMEOUT,
    retry: RetryPolicy | None = DEFAULT_RETRY,
) -> AbstractAsyncContextManager[PaymentsServiceAsyncStub]: ...
@overload
def connect(
    service: Literal["notifications"],
    credentials: ClientCredentials,
    *,
    target: str | None = None,
    token_provider: TokenProvider | None = None,
    default_timeout: float | None = DEFAULT_UNARY_TIMEOUT,
    retry: RetryPolicy | None = DEFAULT_RETRY,
) -> AbstractAsyncContextManager[NotificationsServiceAsyncStub]: ...
def connect(
    service: ServiceName,
    credentials: ClientCredentials,
    *,
    target: str | None = None,
    token_provider: TokenProvider | None = None,
    default_timeout: float | None = DEFAULT_UNARY_TIMEOUT,
    retry: RetryPolicy | None = DEFAULT_RETRY,
) -> AbstractAsyncContextManager[Any]:
    """One service's typed stub over its own channel, closed when the block ends.

        async with connect("payments", credentials, token_provider=tokens) as payments:
            await payments.GetPayment(payments_pb2.GetPaymentRequest(name=name))

    Same behaviour as `GatehouseClients`; `target` defaults to `Targets.from_env()`'s.
    """
    factory = ChannelFactory(
        credentials, token_provider=token_provider, default_timeout=default_timeout, retry=retry
    )
    return _connected(factory, service, target or Targets.from_env().of(service))


@asynccontextmanager
async def _connected(
    factory: ChannelFactory, service: ServiceName, target: str
) -> AsyncIterator[Any]:
    async with factory.channel(target, SERVICE_DESCRIPTORS[service]) as channel:
        yield _STUBS[service](channel)


_STUBS: Final[Mapping[ServiceName, Any]] = {
    "auth": auth_pb2_grpc.AuthServiceStub,
    "access": access_pb2_grpc.AccessServiceStub,
    "monitoring": monitoring_pb2_grpc.MonitoringServiceStub,
    "payments": payments_pb2_grpc.PaymentsServiceStub,
    "notifications": notifications_pb2_grpc.NotificationsServiceStub,
}
