"""Client certificates at the edge: optional by default, required by a setting, always verified."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import grpc
import pytest

from tests.e2e.edge.conftest import Edge, StartEdge
from tests.support.grpc_calls import SERVICE_DESCRIPTORS, call, valid_request

LOGIN = SERVICE_DESCRIPTORS["auth"].methods_by_name["Login"]
HANDSHAKE_REFUSED = (ssl.SSLError, ConnectionError)


async def test_required_client_certificate_refuses_clients_without_one(
    start_edge: StartEdge,
) -> None:
    edge = await start_edge(edge_require_client_certs=True)
    assert (await edge.rest("GET", "/v1/payments/p1")).answered_by("payments")
    with pytest.raises(HANDSHAKE_REFUSED):
        await edge.rest("GET", "/v1/payments/p1", identity=None)
    async with edge.channel(identity=None) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await asyncio.wait_for(call(channel, LOGIN, valid_request(LOGIN)), 10)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_certificate_from_another_ca_is_refused_even_when_optional(
    edge: Edge, foreign_certs_dir: Path
) -> None:
    with pytest.raises(HANDSHAKE_REFUSED):
        await edge.rest("GET", "/healthz", certs=foreign_certs_dir)
