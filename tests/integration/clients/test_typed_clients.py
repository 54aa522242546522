"""The typed clients against real grpc.aio servers with mTLS: ids, retries, tokens, deadlines."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gatehouse.access.v1 import access_pb2, access_pb2_grpc
from gatehouse.auth.v1 import auth_pb2, auth_pb2_grpc
from gatehouse.clients import (
    ClientCredentials,
    GatehouseClients,
    RetryPolicy,
    Targets,
    bearer_token,
    connect,
)
from gatehouse.clients.mesh import DEFAULT_UNARY_TIMEOUT, SERVICE_DESCRIPTORS, ServiceName
from gatehouse.monitoring.v1 import monitoring_pb2, monitoring_pb2_grpc
from gatehouse.notifications.v1 import notifications_pb2, notifications_pb2_grpc
from gatehouse.payments.v1 import payments_pb2, payments_pb2_grpc
from gatehouse.runtime.errors import Unauthenticated, Unavailable
from gatehouse.runtime.identity import TokenClaims
from gatehouse.runtime.server import ServiceDefinition, ServiceServer
from tests.support.mesh import single_server

TOKEN = "token-of-the-test-client"
NO_DEADLINE = "none"


@dataclass
class Seen:
    """What a fake server observed about one call."""

    method: str
    request_id: str = ""
    time_remaining: float | str = NO_DEADLINE
    authorization: str | None = None


def observe(method: str, request: Any, context: Any) -> Seen:
    remaining = context.time_remaining()
    metadata = dict(context.invocation_metadata() or ())
    return Seen(
        method=method,
        request_id=getattr(request, "request_id", ""),
        time_remaining=NO_DEADLINE if remaining is None else remaining,
        authorization=metadata.get("authorization"),
    )


@dataclass
class Script:
    """Shared by the fakes: what they saw and how many calls to fail with UNAVAILABLE."""

    seen: list[Seen] = field(default_factory=list)
    failures_left: int = 0

    def record(self, method: str, request: Any, context: Any) -> int:
        """Record the call; raise UNAVAILABLE while failures are scripted; return the attempt."""
        self.seen.append(observe(method, request, context))
        if self.failures_left > 0:
            self.failures_left -= 1
            raise Unavailable("scripted outage", retry_after=dt.timedelta(milliseconds=10))
        return len(self.seen)

    def of(self, method: str) -> list[Seen]:
        return [s for s in self.seen if s.method == method]


class FakeAuth(auth_pb2_grpc.AuthServiceServicer):
    def __init__(self, script: Script) -> None:
        self.script = script

    async def Login(self, request: Any, context: Any) -> Any:
        attempt = self.script.record("Login", request, context)
        return auth_pb2.LoginResponse(user=f"users/attempt-{attempt}")

    async def GetUser(self, request: Any, context: Any) -> Any:
        self.script.record("GetUser", request, context)
        return auth_pb2.GetUserResponse(user=auth_pb2.User(name=request.name))


class FakeAccess(access_pb2_grpc.AccessServiceServicer):
    def __init__(self, script: Script) -> None:
        self.script = script

    async def GetDoorSchedule(self, request: Any, context: Any) -> Any:
        self.script.record("GetDoorSchedule", request, context)
        return access_pb2.GetDoorScheduleResponse()


class FakeMonitoring(monitoring_pb2_grpc.MonitoringServiceServicer):
    def __init__(self, script: Script) -> None:
        self.script = script

    async def GetBuilding(self, request: Any, context: Any) -> Any:
        self.script.record("GetBuilding", request, context)
        return monitoring_pb2.GetBuildingResponse()

    async def ReportReadings(self, request_iterator: Any, context: Any) -> Any:
        self.script.record("ReportReadings", None, context)
        batches = [request async for request in request_iterator]
        return monitoring_pb2.ReportReadingsResponse(batch_count=len(batches))

    async def ConnectDevice(self, request_iterator: Any, context: Any) -> AsyncIterator[Any]:
        self.script.record("ConnectDevice", None, context)
        async for request in request_iterator:
            yield monitoring_pb2.ConnectDeviceResponse(message_id=request.message_id)


class FakePayments(payments_pb2_grpc.PaymentsServiceServicer):
    def __init__(self, script: Script) -> None:
        self.script = script

    async def CreatePayment(self, request: Any, context: Any) -> Any:
        attempt = self.script.record("CreatePayment", request, context)
        return payments_pb2.CreatePaymentResponse(
            payment=payments_pb2.Payment(name=f"payments/attempt-{attempt}")
        )

    async def GetPayment(self, request: Any, context: Any) -> Any:
        self.script.record("GetPayment", request, context)
        return payments_pb2.GetPaymentResponse(payment=payments_pb2.Payment(name=request.name))

    async def WatchPayment(self, request: Any, context: Any) -> AsyncIterator[Any]:
        self.script.record("WatchPayment", request, context)
        yield payments_pb2.WatchPaymentResponse()


class FakeNotifications(notifications_pb2_grpc.NotificationsServiceServicer):
    def __init__(self, script: Script) -> None:
        self.script = script

    async def GetNotification(self, request: Any, context: Any) -> Any:
        self.script.record("GetNotification", request, context)
        return notifications_pb2.GetNotificationResponse()


class AcceptingVerifier:
    """Accepts exactly the test token, as a service with the auth service's keys would."""

    async def verify(self, token: str) -> TokenClaims:
        if token != TOKEN:
            raise Unauthenticated("unknown test token", reason="TOKEN_INVALID")
        return TokenClaims(
            subject="users/u1",
            token_id="t1",
            expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5),
        )


FAKES: dict[ServiceName, tuple[Callable[[Script], Any], Callable[[Any, grpc.aio.Server], None]]] = {
    "auth": (FakeAuth, auth_pb2_grpc.add_AuthServiceServicer_to_server),
    "access": (FakeAccess, access_pb2_grpc.add_AccessServiceServicer_to_server),
    "monitoring": (FakeMonitoring, monitoring_pb2_grpc.add_MonitoringServiceServicer_to_server),
    "payments": (FakePayments, payments_pb2_grpc.add_PaymentsServiceServicer_to_server),
    "notifications": (
        FakeNotifications,
        notifications_pb2_grpc.add_NotificationsServiceServicer_to_server,
    ),
}


@pytest.fixture(scope="module")
async def mesh(certs_dir: Path) -> AsyncIterator[tuple[Script, Targets]]:
    """All five services as fakes on port 0, sharing one script."""
    script = Script()
    servers: list[ServiceServer] = []
    ports: dict[str, int] = {}
    try:
        for name, (fake, register) in FAKES.items():
            definition = ServiceDefinition(
                name=name,
                descriptor=SERVICE_DESCRIPTORS[name],
                register=partial(register, fake(script)),
            )
            # The clients are under test here, not the access rules (test_authorization.py).
            server = single_server(
                definition, certs_dir, verifier=AcceptingVerifier(), enforce_access_rules=False
            )
            servers.append(server)
            ports[name] = await server.start()
        yield script, Targets(**{name: f"127.0.0.1:{port}" for name, port in ports.items()})
    finally:
        for server in servers:
            await server.stop(grace=0)


@pytest.fixture
def script(mesh: tuple[Script, Targets]) -> Script:
    script, _ = mesh
    script.seen.clear()
    script.failures_left = 0
    return script


@pytest.fixture
def targets(mesh: tuple[Script, Targets]) -> Targets:
    return mesh[1]


@pytest.fixture
def credentials(certs_dir: Path) -> ClientCredentials:
    return ClientCredentials.from_directory(certs_dir, "client")


def new_payment() -> payments_pb2.CreatePaymentRequest:
    return payments_pb2.CreatePaymentRequest(payment=payments_pb2.Payment(description="coffee"))


async def test_a_mutating_call_without_request_id_arrives_with_a_uuid(
    script: Script, targets: Targets, credentials: ClientCredentials
) -> None:
    request = new_payment()
    async with GatehouseClients(credentials, targets=targets) as mesh:
        await mesh.payments.CreatePayment(request)
    (seen,) = script.of("CreatePayment")
    assert uuid.UUID(seen.request_id).version == 4
    assert request.request_id == seen.request_id  # the caller can log it, or resend it


async def test_unavailable_is_retried_transparently_with_the_same_request_id(
    script: Script, targets: Targets, credentials: ClientCredentials
) -> None:
    script.failures_left = 1
    async with GatehouseClients(credentials, targets=targets) as mesh:
        response = await mesh.payments.CreatePayment(new_payment())
    first, second = script.of("CreatePayment")
    assert first.request_id == second.request_id != ""
    assert response.payment.name == "payments/attempt-2"  # the answer to the retry


async def test_resending_the_same_message_after_retries_ran_out_reuses_its_id(
    script: Script, targets: Targets, credentials: ClientCredentials
) -> None:
    policy = RetryPolicy(max_attempts=2, initial_backoff_seconds=0.01)
    script.failures_left = 2
    request = new_payment()
    async with GatehouseClients(credentials, targets=targets, retry=policy) as mesh:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await mesh.payments.CreatePayment(request)
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        response = await mesh.payments.CreatePayment(request)  # the application's own retry
    assert response.payment.name == "payments/attempt-3"
    assert len({seen.request_id for seen in script.of("CreatePayment")}) == 1


async def test_login_is_retried_by_default_because_its_contract_has_request_id(
    script: Script, targets: Targets, credentials: ClientCredentials
) -> None:
    script.failures_left = 1
    async with GatehouseClients(credentials, targets=targets) as mesh:
        response = await mesh.auth.Login(auth_pb2.LoginRequest(email="a@example.com"))
    first, second = script.of("Login")
    assert first.request_id == second.request_id != ""
    assert response.user == "users/attempt-2"


async def test_a_method_left_out_of_retries_fails_after_one_attempt(
    script: Script, targets: Targets, credentials: ClientCredentials
) -> None:
    policy = RetryPolicy(never_retry=frozenset({"gatehouse.auth.v1.AuthService.Login"}))
    script.failures_left = 1
    async with GatehouseClients(credentials, targets=targets, retry=policy) as mesh:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await mesh.auth.Login(auth_pb2.LoginRequest(email="a@example.com"))
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert len(script.of("Login")) == 1


async def test_a_server_stream_is_never_retried(
    script: Script, targets: Targets, credentials: ClientCredentials
) -> None:
    script.failures_left = 1
    async with GatehouseClients(credentials, targets=targets) as mesh:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            async for _ in mesh.payments.WatchPayment(
                payments_pb2.WatchPaymentRequest(name="payments/p1")
            ):
                pass
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert len(script.of("WatchPayment")) == 1


async def test_the_providers_token_arrives_on_unary_calls_and_streams(
    script: Script, targets: Targets, credentials: ClientCredentials
) -> None:
    async with GatehouseClients(
        credentials, targets=targets, token_provider=bearer_token(TOKEN)
    ) as mesh:
        await mesh.payments.GetPayment(payments_pb2.GetPaymentRequest(name="payments/p1"))
        async for _ in mesh.payments.WatchPayment(
            payments_pb2.WatchPaymentRequest(name="payments/p1")
        ):
            pass
    assert [seen.authorization for seen in script.seen] == [f"Bearer {TOKEN}"] * 2


async def test_unary_calls_get_a_default_deadline_and_streamed_responses_none(
    script: Script, targets: Targets, credentials: ClientCredentials
) -> None:
    async def readings() -> AsyncIterator[monitoring_pb2.ReportReadingsRequest]:
        yield monitoring_pb2.ReportReadingsRequest(name="buildings/b1/devices/d1")

    async def device() -> AsyncIterator[monitoring_pb2.ConnectDeviceRequest]:
        yield monitoring_pb2.ConnectDeviceRequest(message_id="m1")

    async with GatehouseClients(credentials, targets=targets) as mesh:
        await mesh.payments.GetPayment(payments_pb2.GetPaymentRequest(name="payments/p1"))
        await mesh.payments.GetPayment(
            payments_pb2.GetPaymentRequest(name="payments/p1"), timeout=600
        )
        async for _ in mesh.payments.WatchPayment(
            payments_pb2.WatchPaymentRequest(name="payments/p1")
        ):
            pass
        await mesh.monitoring.ReportReadings(readings())
        async for _ in mesh.monitoring.ConnectDevice(device()):
            pass

    defaulted, explicit = (seen.time_remaining for seen in script.of("GetPayment"))
    assert isinstance(defaulted, float)
    assert 0 < defaulted <= DEFAULT_UNARY_TIMEOUT
    assert isinstance(explicit, float)
    assert explicit > DEFAULT_UNARY_TIMEOUT  # the caller's timeout wins
    (reported,) = script.of("ReportReadings")
    assert isinstance(reported.time_remaining, float)  # client streams end: a deadline fits
    assert [s.time_remaining for s in script.of("WatchPayment")] == [NO_DEADLINE]
    assert [s.time_remaining for s in script.of("ConnectDevice")] == [NO_DEADLINE]


async def test_every_stub_and_channel_is_usable(
    script: Script, targets: Targets, credentials: ClientCredentials
) -> None:
    async with GatehouseClients(credentials, targets=targets) as mesh:
        user = await mesh.auth.GetUser(auth_pb2.GetUserRequest(name="users/u1"))
        await mesh.access.GetDoorSchedule(
            access_pb2.GetDoorScheduleRequest(name="buildings/b1/doors/main/schedule")
        )
        await mesh.monitoring.GetBuilding(monitoring_pb2.GetBuildingRequest(name="buildings/b1"))
        await mesh.payments.GetPayment(payments_pb2.GetPaymentRequest(name="payments/p1"))
        await mesh.notifications.GetNotification(
            notifications_pb2.GetNotificationRequest(name="notifications/n1")
        )
        for name in SERVICE_DESCRIPTORS:
            health = health_pb2_grpc.HealthStub(mesh.channel(name))
            status = await health.Check(health_pb2.HealthCheckRequest())
            assert status.status == health_pb2.HealthCheckResponse.SERVING
    assert user.user.name == "users/u1"
    assert [seen.method for seen in script.seen] == [
        "GetUser",
        "GetDoorSchedule",
        "GetBuilding",
        "GetPayment",
        "GetNotification",
    ]
    with pytest.raises(RuntimeError, match="closed"):
        _ = mesh.payments


async def test_connect_gives_one_typed_service(
    script: Script, targets: Targets, credentials: ClientCredentials
) -> None:
    script.failures_left = 1
    async with connect(
        "payments", credentials, target=targets.payments, token_provider=bearer_token(TOKEN)
    ) as payments:
        response = await payments.CreatePayment(new_payment())
    first, second = script.of("CreatePayment")
    assert first.request_id == second.request_id
    assert second.authorization == f"Bearer {TOKEN}"
    assert isinstance(second.time_remaining, float)
    assert response.payment.name == "payments/attempt-2"
