"""Health-checked upstreams: a stopped service fails fast, a wrong upstream identity is refused."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import pytest

from gatehouse.runtime.config import Settings
from tests.e2e.edge.conftest import Edge, RunningMesh, StartEdge, start_mesh
from tests.support.grpc_calls import SERVICE_DESCRIPTORS, call, valid_request
from tests.support.tokens import TestIssuer

GET_PAYMENT = SERVICE_DESCRIPTORS["payments"].methods_by_name["GetPayment"]
DETECTION_SECONDS = 15.0


@pytest.fixture
async def mesh(settings: Settings, issuer: TestIssuer) -> AsyncIterator[RunningMesh]:
    """A mesh of this test's own: the test stops one of its services."""
    running = await start_mesh(settings, issuer)
    yield running
    await running.mesh.stop(grace=0)


async def _healthy(edge: Edge, cluster: str) -> bool:
    clusters = await edge.admin("/clusters")
    flags = [
        line
        for line in clusters.splitlines()
        if line.startswith(f"{cluster}::") and "health_flags" in line
    ]
    return bool(flags) and flags[0].endswith("::healthy")


async def test_stopped_service_fails_fast_while_others_keep_working(
    start_edge: StartEdge, mesh: RunningMesh, issuer: TestIssuer
) -> None:
    edge = await start_edge()
    token = issuer.token(permissions=["*"])
    assert (await edge.rest("GET", "/v1/payments/p1", token=token)).answered_by("payments")

    await mesh.mesh.servers["payments"].stop(0)
    started = time.monotonic()
    while await _healthy(edge, "payments"):
        assert time.monotonic() - started < DETECTION_SECONDS, "health check never failed"
        await asyncio.sleep(0.2)

    began = time.monotonic()
    response = await edge.rest("GET", "/v1/payments/p1", token=token)
    assert response.status == 503
    assert response.json()["code"] == 14
    assert time.monotonic() - began < 1.0
    async with edge.channel() as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await asyncio.wait_for(call(channel, GET_PAYMENT, valid_request(GET_PAYMENT)), 10)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    # Other services are untouched.
    assert (await edge.rest("GET", "/v1/users/u1")).answered_by("auth")


async def test_upstream_with_the_wrong_identity_is_refused(
    start_edge: StartEdge, mesh: RunningMesh, issuer: TestIssuer
) -> None:
    # The payments cluster points at the auth server: a valid certificate from our CA, but
    # for spiffe://gatehouse/auth.
    edge = await start_edge(upstream_ports={"payments": mesh.ports["auth"]})
    response = await edge.rest("GET", "/v1/payments/p1", token=issuer.token(permissions=["*"]))
    assert response.status == 503
    assert not await _healthy(edge, "payments")
    assert await _healthy(edge, "auth")  # the same server, under its own name
    stats = await edge.admin("/stats?filter=^cluster.payments.ssl.fail_verify_san$")
    assert int(stats.split(":")[1]) >= 1, stats
