"""The shared server bootstrap with real gRPC on port 0: errors, identity, tracing, draining."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.rpc import error_details_pb2
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gatehouse.auth.v1 import auth_pb2, auth_pb2_grpc
from gatehouse.common.v1 import common_pb2
from gatehouse.monitoring.v1 import monitoring_pb2, monitoring_pb2_grpc
from gatehouse.runtime.errors import FieldViolation, NotFound, ResourceExhausted
from gatehouse.runtime.identity import Caller, JwksTokenVerifier, StaticKeySource, current_caller
from gatehouse.runtime.server import Lifecycle, ServiceDefinition, ServiceServer
from gatehouse.runtime.telemetry import create_tracer_provider
from gatehouse.runtime.tls import CertificatePaths, server_credentials
from tests.support.grpc_calls import detail, error_info, rich_status
from tests.support.mesh import channel_to, single_server

SECRET_IN_BUG = "password=hunter2"


class ScriptedAuth(auth_pb2_grpc.AuthServiceServicer):
    """Each RPC exercises one path of the runtime."""

    def __init__(self) -> None:
        self.callers: list[Caller] = []

    async def GetUser(self, request: Any, context: Any) -> Any:
        raise NotFound(request.name, reason="USER_NOT_FOUND")

    async def Login(self, request: Any, context: Any) -> Any:
        raise ResourceExhausted(
            "too many attempts", retry_after=dt.timedelta(seconds=30), reason="ACCOUNT_LOCKED"
        )

    async def ListUsers(self, request: Any, context: Any) -> Any:
        raise RuntimeError(f"connection failed: {SECRET_IN_BUG}")

    async def GetCurrentUser(self, request: Any, context: Any) -> Any:
        self.callers.append(current_caller())
        return auth_pb2.GetCurrentUserResponse()


def auth_definition(servicer: ScriptedAuth, **extra: Any) -> ServiceDefinition:
    return ServiceDefinition(
        name="auth",
        descriptor=auth_pb2.DESCRIPTOR.services_by_name["AuthService"],
        register=partial(auth_pb2_grpc.add_AuthServiceServicer_to_server, servicer),
        **extra,
    )


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def verifier(signing_key: Ed25519PrivateKey) -> JwksTokenVerifier:
    public_jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(signing_key.public_key()))
    public_jwk.update(kid="k1", use="sig", alg="EdDSA")
    return JwksTokenVerifier(
        StaticKeySource({"keys": [public_jwk]}), issuer="gatehouse", audience="gatehouse"
    )


def make_token(key: Ed25519PrivateKey, *, expires_in: float = 300, kid: str = "k1") -> str:
    now = dt.datetime.now(dt.UTC)
    claims = {
        "sub": "users/u1",
        "jti": str(uuid.uuid4()),
        "iss": "gatehouse",
        "aud": "gatehouse",
        "iat": now,
        "exp": now + dt.timedelta(seconds=expires_in),
        "roles": ["roles/resident"],
    }
    return jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": kid})


@pytest.fixture
async def auth_server(
    certs_dir: Path, spans: InMemorySpanExporter, verifier: JwksTokenVerifier
) -> AsyncIterator[tuple[ScriptedAuth, auth_pb2_grpc.AuthServiceStub]]:
    servicer = ScriptedAuth()
    # Access rules have their own tests (test_authorization.py); these are about the rest.
    server = single_server(
        auth_definition(servicer),
        certs_dir,
        verifier=verifier,
        spans=spans,
        enforce_access_rules=False,
    )
    port = await server.start()
    async with channel_to(certs_dir)(port) as channel:
        yield servicer, auth_pb2_grpc.AuthServiceStub(channel)
    await server.stop(grace=0)


async def test_domain_error_becomes_status_with_error_info_and_resource_info(
    auth_server: tuple[ScriptedAuth, Any],
) -> None:
    _, stub = auth_server
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.GetUser(auth_pb2.GetUserRequest(name="users/nobody"))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    status = rich_status(raised.value)
    assert (error_info(status).reason, error_info(status).domain) == (
        "USER_NOT_FOUND",
        "auth.gatehouse",
    )
    assert detail(status, error_details_pb2.ResourceInfo).resource_name == "users/nobody"


async def test_resource_exhausted_carries_retry_info(auth_server: tuple[ScriptedAuth, Any]) -> None:
    _, stub = auth_server
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.Login(auth_pb2.LoginRequest())
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    retry = detail(rich_status(raised.value), error_details_pb2.RetryInfo)
    assert retry.retry_delay.seconds == 30


async def test_a_bug_is_internal_without_its_text_and_with_a_trace_id(
    auth_server: tuple[ScriptedAuth, Any], spans: InMemorySpanExporter
) -> None:
    _, stub = auth_server
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ListUsers(auth_pb2.ListUsersRequest())
    assert raised.value.code() == grpc.StatusCode.INTERNAL
    assert SECRET_IN_BUG not in (raised.value.details() or "")
    assert "Traceback" not in (raised.value.details() or "")
    trace_id = error_info(rich_status(raised.value)).metadata["trace_id"]
    (span,) = [s for s in spans.get_finished_spans() if s.name.endswith("/ListUsers")]
    assert f"{span.context.trace_id:032x}" == trace_id


async def test_valid_token_and_peer_certificate_reach_the_handler(
    auth_server: tuple[ScriptedAuth, Any], signing_key: Ed25519PrivateKey
) -> None:
    servicer, stub = auth_server
    token = make_token(signing_key)
    await stub.GetCurrentUser(
        auth_pb2.GetCurrentUserRequest(), metadata=(("authorization", f"Bearer {token}"),)
    )
    (caller,) = servicer.callers
    assert caller.user == "users/u1"
    assert caller.claims is not None
    assert caller.claims.roles == ("roles/resident",)
    assert caller.peer_spiffe_id == "spiffe://gatehouse/client"


async def test_call_without_token_is_anonymous_but_identified_by_its_certificate(
    auth_server: tuple[ScriptedAuth, Any],
) -> None:
    servicer, stub = auth_server
    await stub.GetCurrentUser(auth_pb2.GetCurrentUserRequest())
    (caller,) = servicer.callers
    assert caller.user is None
    assert caller.peer_spiffe_id == "spiffe://gatehouse/client"


@pytest.mark.parametrize(
    ("make_header", "reason"),
    [
        (lambda key: f"Bearer {make_token(key, expires_in=-60)}", "TOKEN_EXPIRED"),
        (lambda key: f"Bearer {make_token(key, kid='other')}", "TOKEN_KEY_UNKNOWN"),
        (lambda key: f"Bearer {make_token(Ed25519PrivateKey.generate())}", "TOKEN_INVALID"),
        (lambda key: "Bearer not.a.jwt", "TOKEN_MALFORMED"),
        (lambda key: f"Basic {make_token(key)}", "TOKEN_MALFORMED"),
    ],
    ids=["expired", "unknown-kid", "forged-signature", "garbage", "wrong-scheme"],
)
async def test_bad_tokens_are_unauthenticated(
    auth_server: tuple[ScriptedAuth, Any],
    signing_key: Ed25519PrivateKey,
    make_header: Any,
    reason: str,
) -> None:
    servicer, stub = auth_server
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.GetCurrentUser(
            auth_pb2.GetCurrentUserRequest(),
            metadata=(("authorization", make_header(signing_key)),),
        )
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_info(rich_status(raised.value)).reason == reason
    assert servicer.callers == []


async def test_server_span_continues_the_callers_trace(
    auth_server: tuple[ScriptedAuth, Any], spans: InMemorySpanExporter
) -> None:
    _, stub = auth_server
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    traceparent = f"00-{trace_id}-00f067aa0ba902b7-01"
    await stub.GetCurrentUser(
        auth_pb2.GetCurrentUserRequest(), metadata=(("traceparent", traceparent),)
    )
    (span,) = [s for s in spans.get_finished_spans() if s.name.endswith("/GetCurrentUser")]
    assert f"{span.context.trace_id:032x}" == trace_id
    assert span.parent is not None
    assert span.parent.span_id == 0x00F067AA0BA902B7
    assert span.attributes is not None
    assert span.attributes["rpc.grpc.status_code"] == 0


async def test_service_validators_reject_before_the_handler_runs(certs_dir: Path) -> None:
    servicer = ScriptedAuth()

    def no_blank_names(request: Any) -> list[FieldViolation]:
        return [] if request.display_name.strip() else [FieldViolation("display_name", "is blank")]

    validators = {"/gatehouse.auth.v1.AuthService/GetCurrentUser": ()}
    definition = auth_definition(
        servicer,
        validators={**validators, "/gatehouse.auth.v1.AuthService/Register": (no_blank_names,)},
    )
    server = single_server(definition, certs_dir)  # Register is public
    port = await server.start()
    try:
        async with channel_to(certs_dir)(port) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await auth_pb2_grpc.AuthServiceStub(channel).Register(
                    auth_pb2.RegisterRequest(email="a@b.c", request_id="not-a-uuid")
                )
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        violations = detail(
            rich_status(raised.value), error_details_pb2.BadRequest
        ).field_violations
        assert sorted(v.field for v in violations) == ["display_name", "request_id"]
    finally:
        await server.stop(grace=0)


class DrainingFeed(monitoring_pb2_grpc.MonitoringServiceServicer):
    """A live stream that ends itself cleanly when the server drains (the runtime's contract)."""

    def __init__(self, lifecycle: Lifecycle) -> None:
        self.lifecycle = lifecycle
        self.streaming = asyncio.Event()

    async def StreamEvents(self, request: Any, context: Any) -> AsyncIterator[Any]:
        sent = 0
        while not self.lifecycle.stopping.is_set():
            sent += 1
            yield monitoring_pb2.StreamEventsResponse(
                heartbeat=common_pb2.Heartbeat(last_event_id=str(sent))
            )
            self.streaming.set()
            stopping = asyncio.ensure_future(self.lifecycle.stopping.wait())
            await asyncio.wait({stopping}, timeout=0.05)
            stopping.cancel()
        yield monitoring_pb2.StreamEventsResponse(
            heartbeat=common_pb2.Heartbeat(last_event_id=f"final-{sent}")
        )


async def test_graceful_stop_lets_an_in_flight_stream_finish(certs_dir: Path) -> None:
    lifecycle = Lifecycle()
    servicer = DrainingFeed(lifecycle)
    definition = ServiceDefinition(
        name="monitoring",
        descriptor=monitoring_pb2.DESCRIPTOR.services_by_name["MonitoringService"],
        register=partial(monitoring_pb2_grpc.add_MonitoringServiceServicer_to_server, servicer),
    )
    server = single_server(definition, certs_dir, lifecycle=lifecycle, enforce_access_rules=False)
    port = await server.start()
    async with channel_to(certs_dir)(port) as channel:
        stream = monitoring_pb2_grpc.MonitoringServiceStub(channel).StreamEvents(
            monitoring_pb2.StreamEventsRequest(building="buildings/b1")
        )
        received: list[str] = []

        async def read_all() -> None:
            async for message in stream:
                received.append(message.heartbeat.last_event_id)

        reader = asyncio.create_task(read_all())
        await asyncio.wait_for(servicer.streaming.wait(), timeout=10)
        await server.stop(grace=10)
        await asyncio.wait_for(reader, timeout=10)
        assert await stream.code() == grpc.StatusCode.OK
    assert received[-1].startswith("final-")
    assert received[:-1] == [str(i) for i in range(1, len(received))]


async def test_a_port_that_cannot_be_bound_runs_the_stop_hooks(certs_dir: Path) -> None:
    events: list[str] = []

    async def opened() -> None:
        events.append("start")

    async def closed() -> None:
        events.append("stop")

    first = single_server(auth_definition(ScriptedAuth()), certs_dir)
    port = await first.start()
    try:
        taken = ServiceServer(
            auth_definition(ScriptedAuth(), on_start=(opened,), on_stop=(closed,)),
            credentials=server_credentials(CertificatePaths.for_name(certs_dir, "auth")),
            token_verifier=JwksTokenVerifier(
                StaticKeySource({"keys": []}), issuer="gatehouse", audience="gatehouse"
            ),
            tracer_provider=create_tracer_provider("test"),
            port=port,
        )
        with pytest.raises(OSError, match="could not bind"):
            await taken.start()
    finally:
        await first.stop(grace=0)
    assert events == ["start", "stop"]
