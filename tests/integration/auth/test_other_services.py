"""Auth's tokens in another service: the payments service, built by its own composition root
and sharing auth's key-value store, authorises with them (RBAC from the contract) and
refuses revoked ones. Also the whole mesh as `gatehouse up` runs it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.protobuf.descriptor import MethodDescriptor

from gatehouse.auth.v1 import auth_pb2, auth_pb2_grpc
from gatehouse.mesh.runner import Mesh
from gatehouse.payments import app as payments_app
from gatehouse.runtime.bus import InProcessEventBus
from gatehouse.runtime.config import Settings
from gatehouse.runtime.db import sqlite_url
from gatehouse.runtime.identity import (
    JWKS_KEY,
    JwksTokenVerifier,
    KeyValueKeySource,
    KeyValueRevocationList,
)
from gatehouse.runtime.live import LiveHub
from gatehouse.runtime.server import Lifecycle
from gatehouse.runtime.service_context import ServiceContext
from gatehouse.runtime.telemetry import create_tracer_provider
from tests.support.auth import PASSWORD, AuthHarness, bearer, refused, unique_email
from tests.support.grpc_calls import (
    SERVICE_DESCRIPTORS,
    call,
    error_info,
    rich_status,
    valid_request,
)
from tests.support.mesh import channel_to, single_server

PAYMENTS = SERVICE_DESCRIPTORS["payments"]
REFUND = PAYMENTS.methods_by_name["RefundPayment"]  # needs payments.refund
# Needs any valid token, and answers OK for the caller's own (maybe empty) list.
LIST_PAYMENTS = PAYMENTS.methods_by_name["ListPayments"]


@pytest.fixture
async def payments_port(
    auth: AuthHarness, settings: Settings, certs_dir: Path, tmp_path: Path
) -> AsyncIterator[int]:
    bus = InProcessEventBus()
    context = ServiceContext(
        name="payments",
        settings=settings.model_copy(update={"database_url": sqlite_url(tmp_path / "payments.db")}),
        lifecycle=Lifecycle(),
        kv=auth.kv,
        bus=bus,
        live=LiveHub(bus),
    )
    verifier = JwksTokenVerifier(
        KeyValueKeySource(auth.kv),
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        revocations=KeyValueRevocationList(auth.kv),
    )
    server = single_server(payments_app.create_service(context), certs_dir, verifier=verifier)
    port = await server.start()
    yield port
    await server.stop(grace=0)


# Refusals the runtime's interceptors make before any payments code runs.
REFUSED_BY_INTERCEPTORS = {
    grpc.StatusCode.PERMISSION_DENIED: "PERMISSION_MISSING",
    grpc.StatusCode.UNAUTHENTICATED: "TOKEN_REVOKED",
}


async def _call_payments(
    certs_dir: Path, port: int, method: MethodDescriptor, token: str
) -> grpc.StatusCode:
    """The status payments answered. PERMISSION_DENIED / UNAUTHENTICATED must come with the
    interceptors' reasons; anything else means the call got past authorization."""
    refusal = None
    async with channel_to(certs_dir)(port) as channel:
        try:
            await call(channel, method, valid_request(method), bearer(token))
        except grpc.aio.AioRpcError as error:
            refusal = error
    if refusal is None:
        return grpc.StatusCode.OK
    code = refusal.code()
    if code in REFUSED_BY_INTERCEPTORS:
        info = error_info(rich_status(refusal))
        assert (info.domain, info.reason) == ("payments.gatehouse", REFUSED_BY_INTERCEPTORS[code])
    return code


def passed_authorization(code: grpc.StatusCode) -> bool:
    return code not in REFUSED_BY_INTERCEPTORS


async def test_a_token_without_the_permission_is_denied_in_another_service(
    auth: AuthHarness, payments_port: int, certs_dir: Path
) -> None:
    _, visitor = await auth.signed_in()
    _, admin = await auth.admin()

    denied = await _call_payments(certs_dir, payments_port, REFUND, visitor.access_token)
    assert denied == grpc.StatusCode.PERMISSION_DENIED
    assert passed_authorization(
        await _call_payments(certs_dir, payments_port, REFUND, admin.access_token)
    )
    assert passed_authorization(
        await _call_payments(certs_dir, payments_port, LIST_PAYMENTS, visitor.access_token)
    )


async def test_a_granted_role_reaches_another_service_with_the_next_token(
    auth: AuthHarness, payments_port: int, certs_dir: Path
) -> None:
    user, visitor = await auth.signed_in()
    _, admin = await auth.admin()
    await auth.stub().AssignRole(
        auth_pb2.AssignRoleRequest(name=user.name, role="roles/operator"),
        metadata=bearer(admin.access_token),
    )
    refreshed = (
        await auth.stub().RefreshToken(
            auth_pb2.RefreshTokenRequest(refresh_token=visitor.refresh_token)
        )
    ).tokens
    assert passed_authorization(
        await _call_payments(certs_dir, payments_port, REFUND, refreshed.access_token)
    )


async def test_a_logged_out_token_is_refused_by_another_service(
    auth: AuthHarness, payments_port: int, certs_dir: Path
) -> None:
    _, tokens = await auth.signed_in()
    assert passed_authorization(
        await _call_payments(certs_dir, payments_port, LIST_PAYMENTS, tokens.access_token)
    )
    await auth.stub().Logout(auth_pb2.LogoutRequest(), metadata=bearer(tokens.access_token))
    async with channel_to(certs_dir)(payments_port) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call(
                channel, LIST_PAYMENTS, valid_request(LIST_PAYMENTS), bearer(tokens.access_token)
            )
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_info(rich_status(raised.value)).reason == "TOKEN_REVOKED"


async def test_the_mesh_runs_auth_and_other_services_verify_its_real_tokens(
    settings: Settings, certs_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin_email = unique_email("root")
    # As an operator would configure it: fast argon2 here, and a first administrator.
    for name, value in {
        "ARGON2_TIME_COST": "1",
        "ARGON2_MEMORY_KIB": "64",
        "BOOTSTRAP_ADMIN_EMAIL": admin_email,
        "BOOTSTRAP_ADMIN_PASSWORD": PASSWORD,
    }.items():
        monkeypatch.setenv(f"GATEHOUSE_AUTH_{name}", value)
    mesh = Mesh(
        settings.model_copy(update={"home": tmp_path}),
        ["auth", "payments"],
        tracer_provider=create_tracer_provider("auth-e2e"),
    )
    ports = await mesh.start()
    try:
        published = await mesh.infrastructure.kv.get(JWKS_KEY)
        assert published is not None
        async with channel_to(certs_dir)(ports["auth"]) as channel:
            auth = auth_pb2_grpc.AuthServiceStub(channel)
            jwks = await auth.GetJwks(auth_pb2.GetJwksRequest())
            assert jwks.keys[0].kid in published.decode()
            email = unique_email()
            await auth.Register(
                auth_pb2.RegisterRequest(email=email, password=PASSWORD, display_name="Vi")
            )
            visitor = await auth.Login(auth_pb2.LoginRequest(email=email, password=PASSWORD))
            admin = await auth.Login(auth_pb2.LoginRequest(email=admin_email, password=PASSWORD))
            refund, token = REFUND, visitor.tokens.access_token
            assert (
                await _call_payments(certs_dir, ports["payments"], refund, token)
                == grpc.StatusCode.PERMISSION_DENIED
            )
            assert passed_authorization(
                await _call_payments(
                    certs_dir, ports["payments"], refund, admin.tokens.access_token
                )
            )
            # Payments published its denial on the bus; auth keeps it in the audit trail.
            denial = await _audited_denial(auth, admin.tokens.access_token, "RefundPayment")
            assert denial.reason == "PERMISSION_MISSING"
            assert denial.details["permission"] == "payments.refund"
            assert denial.actor.user.startswith("users/")
            await auth.Logout(auth_pb2.LogoutRequest(), metadata=bearer(token))
            assert (
                await _call_payments(certs_dir, ports["payments"], LIST_PAYMENTS, token)
                == grpc.StatusCode.UNAUTHENTICATED
            )
            await refused(
                auth.GetCurrentUser(auth_pb2.GetCurrentUserRequest(), metadata=bearer(token)),
                grpc.StatusCode.UNAUTHENTICATED,
                "TOKEN_REVOKED",
            )
    finally:
        await mesh.stop(grace=0)
    assert (tmp_path / "keys" / "auth.kek").stat().st_mode & 0o777 == 0o600


async def _audited_denial(
    auth: auth_pb2_grpc.AuthServiceAsyncStub, admin_token: str, method: str
) -> auth_pb2.SecurityEvent:
    """Wait (generously) until the denial made by another service reaches auth's trail."""
    request = auth_pb2.ListSecurityEventsRequest(
        types=[auth_pb2.SECURITY_EVENT_TYPE_PERMISSION_DENIED]
    )
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        page = await auth.ListSecurityEvents(request, metadata=bearer(admin_token))
        for event in page.security_events:
            if event.details.get("method", "").endswith(f"/{method}"):
                return event
        assert asyncio.get_running_loop().time() < deadline, "the denial was never audited"
        await asyncio.sleep(0.1)
