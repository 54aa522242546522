"""The real sign-in flow through the real edge: Register and Login with the real auth service,
then calls that Envoy's jwt_authn verifies against the JWKS auth serves (fetched through Envoy
itself, internal listener), over REST and over native gRPC on the same port."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import grpc
import pytest

from gatehouse.auth.v1 import auth_pb2, auth_pb2_grpc
from gatehouse.mesh.runner import Mesh
from gatehouse.runtime.config import SERVICE_NAMES, Settings
from gatehouse.runtime.telemetry import create_tracer_provider
from tests.e2e.edge.conftest import Edge, Response, RunningMesh, StartEdge
from tests.support.auth import PASSWORD, bearer, unique_email
from tests.support.tokens import TestIssuer

# Argon2 at its minimum cost: the machine is small and the flow is not about hashing.
FAST_ARGON2 = {"GATEHOUSE_AUTH_ARGON2_TIME_COST": "1", "GATEHOUSE_AUTH_ARGON2_MEMORY_KIB": "64"}
JWKS_WAIT_SECONDS = 20.0
CALL_TIMEOUT = 10.0


@pytest.fixture(scope="module")
async def mesh(settings: Settings) -> AsyncIterator[RunningMesh]:
    """Overrides the shared mesh: the auth service's own keys stay published (the shared one
    replaces them with a test issuer's)."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in FAST_ARGON2.items():
            patch.setenv(name, value)
        mesh = Mesh(settings, SERVICE_NAMES, tracer_provider=create_tracer_provider("edge-auth"))
    ports = await mesh.start()
    try:
        yield RunningMesh(mesh, ports)
    finally:
        await mesh.stop(grace=0)


@pytest.fixture
async def auth_edge(start_edge: StartEdge) -> Edge:
    # The default setting (remote JWKS); the shared fixture turns it off for other tests.
    return await start_edge(edge_jwt_enabled=True, edge_jwks_file=None)


async def sign_in(edge: Edge) -> tuple[str, str]:
    """Register and log in over REST; the email and the access token."""
    email = unique_email("edge")
    registered = await edge.rest(
        "POST",
        "/v1/users",
        json.dumps({"email": email, "password": PASSWORD, "displayName": "Edge"}),
    )
    assert registered.status == 200, registered.body
    login = await edge.rest(
        "POST", "/v1/sessions:login", json.dumps({"email": email, "password": PASSWORD})
    )
    assert login.status == 200, login.body
    token: str = login.json()["tokens"]["accessToken"]
    assert token.count(".") == 2
    return email, token


async def until_edge_has_keys(edge: Edge, token: str) -> Response:
    """GET /v1/users/me until the edge's first JWKS fetch has landed (it is asynchronous: until
    then a token is refused with 401), bounded."""
    deadline = time.monotonic() + JWKS_WAIT_SECONDS
    while True:
        response = await edge.rest("GET", "/v1/users/me", token=token)
        if response.status != 401 or time.monotonic() > deadline:
            return response
        await asyncio.sleep(0.2)


async def test_register_login_and_call_over_rest(auth_edge: Edge) -> None:
    email, token = await sign_in(auth_edge)
    me = await until_edge_has_keys(auth_edge, token)
    assert me.status == 200, me.body
    assert me.json()["user"]["email"] == email
    # Another service behind the same edge accepts the same token.
    listed = await auth_edge.rest("GET", "/v1/notifications", token=token)
    assert listed.answered_by("notifications"), (listed.status, listed.body)
    # The JWKS the edge verifies with is the one auth serves, through the edge, public.
    jwks = await auth_edge.rest("GET", "/.well-known/jwks.json")
    assert jwks.status == 200
    assert {key["kty"] for key in jwks.json()["keys"]} <= {"OKP", "EC"}


async def test_same_flow_over_native_grpc_through_the_edge(auth_edge: Edge) -> None:
    email = unique_email("edge-grpc")
    async with auth_edge.channel() as channel:
        stub = auth_pb2_grpc.AuthServiceStub(channel)
        await asyncio.wait_for(
            stub.Register(
                auth_pb2.RegisterRequest(email=email, password=PASSWORD, display_name="Edge")
            ),
            CALL_TIMEOUT,
        )
        login = await asyncio.wait_for(
            stub.Login(auth_pb2.LoginRequest(email=email, password=PASSWORD)), CALL_TIMEOUT
        )
        token = login.tokens.access_token
        assert (await until_edge_has_keys(auth_edge, token)).status == 200
        me = await asyncio.wait_for(
            stub.GetCurrentUser(auth_pb2.GetCurrentUserRequest(), metadata=bearer(token)),
            CALL_TIMEOUT,
        )
        assert me.user.email == email
        for metadata in (bearer("not.a.jwt"), bearer(TestIssuer().token()), ()):
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await asyncio.wait_for(
                    stub.GetCurrentUser(auth_pb2.GetCurrentUserRequest(), metadata=metadata),
                    CALL_TIMEOUT,
                )
            assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED, metadata


async def test_bad_or_missing_jwt_is_401_at_the_edge(auth_edge: Edge) -> None:
    _, token = await sign_in(auth_edge)
    assert (await until_edge_has_keys(auth_edge, token)).status == 200
    header, payload, signature = token.split(".")
    tampered = f"{header}.{payload}.{signature[:-4]}AAAA"
    for bad in ("not.a.jwt", tampered, TestIssuer().token(permissions=["*"])):
        response = await auth_edge.rest("GET", "/v1/users/me", token=bad)
        assert response.status == 401, (bad, response.body)
        assert response.json()["code"] == 16
    missing = await auth_edge.rest("GET", "/v1/users/me")
    assert missing.status == 401
    assert missing.json()["code"] == 16
    assert "www-authenticate" in missing.headers
