"""jwt_authn at the edge against a local JWKS file signed by a key this test makes (the JWKS
auth serves is exercised in test_auth_flow.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from tests.e2e.edge.conftest import Edge, StartEdge
from tests.support.grpc_calls import SERVICE_DESCRIPTORS, call, valid_request
from tests.support.tokens import TestIssuer

GET_PAYMENT = SERVICE_DESCRIPTORS["payments"].methods_by_name["GetPayment"]


@pytest.fixture
async def jwt_edge(start_edge: StartEdge, issuer: TestIssuer, tmp_path: Path) -> Edge:
    jwks = tmp_path / "jwks.json"
    jwks.write_bytes(issuer.jwks_json())
    return await start_edge(edge_jwt_enabled=True, edge_jwks_file=jwks)


async def test_protected_route_without_token_is_401_at_the_edge(jwt_edge: Edge) -> None:
    response = await jwt_edge.rest("GET", "/v1/payments/p1")
    assert response.status == 401
    assert response.json()["code"] == 16
    assert "www-authenticate" in response.headers


async def test_forged_and_foreign_tokens_are_refused(jwt_edge: Edge, issuer: TestIssuer) -> None:
    garbage = await jwt_edge.rest("GET", "/v1/payments/p1", token="not.a.jwt")
    assert garbage.status == 401
    stranger = TestIssuer(kid=issuer.kid)  # same kid, another key: a forged signature
    forged = await jwt_edge.rest("GET", "/v1/payments/p1", token=stranger.token())
    assert forged.status == 401
    expired = await jwt_edge.rest("GET", "/v1/payments/p1", token=issuer.token(expires_in=-120))
    assert expired.status == 401
    other_audience = await jwt_edge.rest(
        "GET", "/v1/payments/p1", token=issuer.token(audience="someone-else")
    )
    assert other_audience.status == 403


async def test_valid_token_reaches_the_service(jwt_edge: Edge, issuer: TestIssuer) -> None:
    response = await jwt_edge.rest("GET", "/v1/payments/p1", token=issuer.token(permissions=["*"]))
    assert response.answered_by("payments")  # the service verified it again and answered


async def test_public_routes_need_no_token(jwt_edge: Edge) -> None:
    assert (await jwt_edge.rest("POST", "/v1/sessions:login", body="{}")).answered_by("auth")
    assert (await jwt_edge.rest("GET", "/.well-known/jwks.json")).answered_by("auth")
    assert (await jwt_edge.rest("GET", "/openapi.json")).status == 200


async def test_native_grpc_is_checked_by_the_same_rules(jwt_edge: Edge) -> None:
    async with jwt_edge.channel() as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await asyncio.wait_for(call(channel, GET_PAYMENT, valid_request(GET_PAYMENT)), 10)
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "Jwt is missing" in (raised.value.details() or "")
