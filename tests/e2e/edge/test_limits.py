"""Rate limits and request size at the edge."""

from __future__ import annotations

import asyncio
import contextlib

import grpc
import pytest

from tests.e2e.edge.conftest import StartEdge
from tests.support.grpc_calls import SERVICE_DESCRIPTORS, call, valid_request

LOGIN = SERVICE_DESCRIPTORS["auth"].methods_by_name["Login"]


async def test_login_is_limited_per_client_over_rest_and_grpc(start_edge: StartEdge) -> None:
    edge = await start_edge(edge_sensitive_rate_per_minute=3)
    for _ in range(2):
        assert (await edge.rest("POST", "/v1/sessions:login", body="{}")).answered_by("auth")
    # Native gRPC draws from the same bucket: the limit is on the RPC, not the protocol.
    async with edge.channel() as channel:
        with contextlib.suppress(grpc.aio.AioRpcError):
            # Whatever auth answers to an empty login, it is the third attempt of the bucket.
            await asyncio.wait_for(call(channel, LOGIN, valid_request(LOGIN)), 10)
        limited = await edge.rest("POST", "/v1/sessions:login", body="{}")
        assert limited.status == 429
        assert limited.headers["retry-after"] == "20"
        assert limited.json()["code"] == 8
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await asyncio.wait_for(call(channel, LOGIN, valid_request(LOGIN)), 10)
        assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # Other RPCs are not limited by Login's bucket.
    assert (await edge.rest("POST", "/v1/users", body="{}")).answered_by("auth")


async def test_global_limit_applies_to_everything(start_edge: StartEdge) -> None:
    # One token a second: the second of two back-to-back requests is over, however slow the
    # machine (unless one request takes a whole second).
    edge = await start_edge(edge_global_rate_per_second=1)
    statuses = [(await edge.rest("GET", "/v1/users/u1")).status for _ in range(4)]
    assert 429 in statuses, statuses
    assert statuses[0] == 401  # the first ones reach the service (no token)


async def test_oversized_rest_body_is_413(start_edge: StartEdge) -> None:
    edge = await start_edge(edge_max_request_bytes=1000)
    response = await edge.rest("POST", "/v1/users", body='{"email": "' + "a" * 2000 + '"}')
    assert response.status == 413
    assert response.json()["code"] == 3
