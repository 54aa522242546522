"""Access rules declared in the contracts, enforced by the runtime on real gRPC servers."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest

from gatehouse.auth.v1 import auth_pb2, auth_pb2_grpc
from gatehouse.monitoring.v1 import monitoring_pb2, monitoring_pb2_grpc
from gatehouse.runtime.authorization import AccessRule, grants
from gatehouse.runtime.errors import DomainError, PermissionDenied, permission_missing
from gatehouse.runtime.identity import (
    DEVICE_TOKEN_HEADER,
    Caller,
    JwksTokenVerifier,
    KeyValueRevocationList,
    StaticKeySource,
)
from gatehouse.runtime.kv import InMemoryKeyValueStore
from gatehouse.runtime.server import ServiceDefinition
from tests.support.grpc_calls import SERVICE_DESCRIPTORS, error_info, rich_status
from tests.support.mesh import channel_to, single_server
from tests.support.tokens import TestIssuer


class RecordingAudit:
    def __init__(self) -> None:
        self.denials: list[tuple[str, str | None, str]] = []

    async def record(self, method: str, caller: Caller, error: DomainError) -> None:
        self.denials.append((method, caller.user, error.reason))


class OpenAuth(auth_pb2_grpc.AuthServiceServicer):
    async def Register(self, request: Any, context: Any) -> Any:
        return auth_pb2.RegisterResponse()

    async def GetCurrentUser(self, request: Any, context: Any) -> Any:
        return auth_pb2.GetCurrentUserResponse()

    async def GetUser(self, request: Any, context: Any) -> Any:
        # A handler's own refusals: one about access (audited), one about the request (not).
        if request.name == "users/someone-elses":
            raise permission_missing("auth.users.read_all")
        if request.name == "users/locked":
            raise PermissionDenied("locked", reason="ACCOUNT_LOCKED")
        return auth_pb2.GetUserResponse()

    async def IntrospectToken(self, request: Any, context: Any) -> Any:
        return auth_pb2.IntrospectTokenResponse()


class OpenMonitoring(monitoring_pb2_grpc.MonitoringServiceServicer):
    async def SendDeviceCommand(self, request: Any, context: Any) -> Any:
        return monitoring_pb2.SendDeviceCommandResponse()

    async def ReportReadings(self, requests: Any, context: Any) -> Any:
        async for _ in requests:
            pass
        return monitoring_pb2.ReportReadingsResponse()


@pytest.fixture(scope="module")
def issuer() -> TestIssuer:
    return TestIssuer()


@pytest.fixture(scope="module")
def revocations() -> KeyValueRevocationList:
    return KeyValueRevocationList(InMemoryKeyValueStore())


@pytest.fixture
def audit() -> RecordingAudit:
    return RecordingAudit()


@pytest.fixture
async def ports(
    certs_dir: Path,
    issuer: TestIssuer,
    revocations: KeyValueRevocationList,
    audit: RecordingAudit,
) -> AsyncIterator[dict[str, int]]:
    verifier = JwksTokenVerifier(
        StaticKeySource(issuer.jwks()),
        issuer="gatehouse",
        audience="gatehouse",
        revocations=revocations,
    )
    definitions = {
        "auth": ServiceDefinition(
            name="auth",
            descriptor=SERVICE_DESCRIPTORS["auth"],
            register=partial(auth_pb2_grpc.add_AuthServiceServicer_to_server, OpenAuth()),
        ),
        "monitoring": ServiceDefinition(
            name="monitoring",
            descriptor=SERVICE_DESCRIPTORS["monitoring"],
            register=partial(
                monitoring_pb2_grpc.add_MonitoringServiceServicer_to_server, OpenMonitoring()
            ),
        ),
    }
    servers = {
        name: single_server(definition, certs_dir, verifier=verifier, denial_audit=audit)
        for name, definition in definitions.items()
    }
    ports = {name: await server.start() for name, server in servers.items()}
    yield ports
    for server in servers.values():
        await server.stop(grace=0)


async def _get_user(port: int, certs: Path, identity: str = "client", **call: Any) -> Any:
    async with channel_to(certs, identity)(port) as channel:
        return await auth_pb2_grpc.AuthServiceStub(channel).GetUser(
            auth_pb2.GetUserRequest(name="users/u2"), **call
        )


def test_every_rpc_of_every_service_declares_an_access_rule() -> None:
    for service in SERVICE_DESCRIPTORS.values():
        for method in service.methods:
            AccessRule.of(method)  # raises for an undeclared RPC


@pytest.mark.parametrize(
    ("held", "needed", "granted"),
    [
        (["payments.refund"], "payments.refund", True),
        (["payments.*"], "payments.refund", True),
        (["*"], "access.emergency", True),
        (["payments.read"], "payments.refund", False),
        (["pay*"], "payments.refund", False),
        (["payments.*"], "paymentsx.refund", False),
    ],
)
def test_permission_wildcards(held: list[str], needed: str, granted: bool) -> None:
    assert grants(held, needed) is granted


async def test_public_rpc_needs_no_token(ports: dict[str, int], certs_dir: Path) -> None:
    async with channel_to(certs_dir)(ports["auth"]) as channel:
        await auth_pb2_grpc.AuthServiceStub(channel).Register(auth_pb2.RegisterRequest())


async def test_missing_token_is_unauthenticated_and_audited(
    ports: dict[str, int], certs_dir: Path, audit: RecordingAudit
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await _get_user(ports["auth"], certs_dir)
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_info(rich_status(raised.value)).reason == "TOKEN_MISSING"
    assert audit.denials == [("/gatehouse.auth.v1.AuthService/GetUser", None, "TOKEN_MISSING")]


async def test_token_without_the_permission_is_denied_and_audited(
    ports: dict[str, int], certs_dir: Path, issuer: TestIssuer, audit: RecordingAudit
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await _get_user(
            ports["auth"], certs_dir, metadata=issuer.bearer(permissions=["auth.roles.read"])
        )
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    info = error_info(rich_status(raised.value))
    assert (info.reason, info.metadata["permission"]) == ("PERMISSION_MISSING", "auth.users.read")
    assert audit.denials == [
        ("/gatehouse.auth.v1.AuthService/GetUser", "users/u1", "PERMISSION_MISSING")
    ]


async def test_a_handlers_access_refusal_is_audited_like_the_rules(
    ports: dict[str, int], certs_dir: Path, issuer: TestIssuer, audit: RecordingAudit
) -> None:
    token = issuer.bearer(subject="users/u1", permissions=["auth.users.read"])
    for name, reason in (
        ("users/someone-elses", "PERMISSION_MISSING"),
        ("users/locked", "ACCOUNT_LOCKED"),
    ):
        async with channel_to(certs_dir)(ports["auth"]) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await auth_pb2_grpc.AuthServiceStub(channel).GetUser(
                    auth_pb2.GetUserRequest(name=name), metadata=token
                )
        assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert error_info(rich_status(raised.value)).reason == reason
    # Only the refusal about access joins the audit trail.
    assert audit.denials == [
        ("/gatehouse.auth.v1.AuthService/GetUser", "users/u1", "PERMISSION_MISSING")
    ]


async def test_token_with_the_permission_or_a_wildcard_is_let_through(
    ports: dict[str, int], certs_dir: Path, issuer: TestIssuer, audit: RecordingAudit
) -> None:
    for held in (["auth.users.read"], ["auth.*"], ["*"]):
        await _get_user(ports["auth"], certs_dir, metadata=issuer.bearer(permissions=held))
    assert audit.denials == []


async def test_revoked_token_is_refused(
    ports: dict[str, int],
    certs_dir: Path,
    issuer: TestIssuer,
    revocations: KeyValueRevocationList,
) -> None:
    token = issuer.token(permissions=["*"], token_id="revoked-1")
    await revocations.revoke("revoked-1", until=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await _get_user(ports["auth"], certs_dir, metadata=(("authorization", f"Bearer {token}"),))
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_info(rich_status(raised.value)).reason == "TOKEN_REVOKED"


async def test_alg_none_and_wrong_audience_are_refused(
    ports: dict[str, int], certs_dir: Path, issuer: TestIssuer
) -> None:
    unsigned = jwt.encode({"sub": "users/u1"}, key="", algorithm="none")
    for token in (unsigned, issuer.token(audience="someone-else")):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await _get_user(
                ports["auth"], certs_dir, metadata=(("authorization", f"Bearer {token}"),)
            )
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert error_info(rich_status(raised.value)).reason == "TOKEN_INVALID"


async def test_internal_rpc_accepts_services_and_refuses_users_and_the_edge(
    ports: dict[str, int], certs_dir: Path, issuer: TestIssuer
) -> None:
    request = auth_pb2.IntrospectTokenRequest()
    async with channel_to(certs_dir, "payments")(ports["auth"]) as channel:
        await auth_pb2_grpc.AuthServiceStub(channel).IntrospectToken(request)
    for identity in ("client", "envoy"):
        async with channel_to(certs_dir, identity)(ports["auth"]) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await auth_pb2_grpc.AuthServiceStub(channel).IntrospectToken(
                    request, metadata=issuer.bearer(permissions=["*"])
                )
        assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED, identity
        assert error_info(rich_status(raised.value)).reason == "INTERNAL_ONLY"


async def test_service_grant_lets_access_command_devices_but_not_payments(
    ports: dict[str, int], certs_dir: Path
) -> None:
    request = monitoring_pb2.SendDeviceCommandRequest(name="buildings/b1/devices/d1")
    async with channel_to(certs_dir, "access")(ports["monitoring"]) as channel:
        await monitoring_pb2_grpc.MonitoringServiceStub(channel).SendDeviceCommand(request)
    async with channel_to(certs_dir, "payments")(ports["monitoring"]) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await monitoring_pb2_grpc.MonitoringServiceStub(channel).SendDeviceCommand(request)
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_info(rich_status(raised.value)).reason == "PERMISSION_MISSING"


async def test_device_rpc_needs_a_device_identity(ports: dict[str, int], certs_dir: Path) -> None:
    async def readings() -> AsyncIterator[monitoring_pb2.ReportReadingsRequest]:
        yield monitoring_pb2.ReportReadingsRequest()

    async with channel_to(certs_dir)(ports["monitoring"]) as channel:
        stub = monitoring_pb2_grpc.MonitoringServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.ReportReadings(readings())
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert error_info(rich_status(raised.value)).reason == "DEVICE_IDENTITY_MISSING"
        await stub.ReportReadings(readings(), metadata=((DEVICE_TOKEN_HEADER, "t"),))
