"""Server streams through the edge: NDJSON over REST (read line by line), plain gRPC natively.

Payments' WatchPayment has no behaviour yet (issue #8), so a stand-in servicer on the real
server runtime streams three heartbeats and then fails with RESOURCE_EXHAUSTED, as a slow
subscriber's stream would end (ARCHITECTURE §8).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from gatehouse.common.v1 import common_pb2
from gatehouse.payments.v1 import payments_pb2, payments_pb2_grpc
from gatehouse.runtime.errors import ResourceExhausted
from gatehouse.runtime.server import ServiceDefinition, ServiceServer
from tests.e2e.edge.conftest import Edge, StartEdge
from tests.support.grpc_calls import SERVICE_DESCRIPTORS
from tests.support.mesh import single_server

HEARTBEATS = 3


class StreamingPayments(payments_pb2_grpc.PaymentsServiceServicer):
    async def WatchPayment(
        self, request: payments_pb2.WatchPaymentRequest, context: Any
    ) -> AsyncIterator[payments_pb2.WatchPaymentResponse]:
        for index in range(HEARTBEATS):
            yield payments_pb2.WatchPaymentResponse(
                heartbeat=common_pb2.Heartbeat(last_event_id=f"{request.name}/{index}")
            )
            await asyncio.sleep(0.05)
        raise ResourceExhausted("the subscriber fell behind")


@pytest.fixture
async def payments_port(certs_dir: Path) -> AsyncIterator[int]:
    definition = ServiceDefinition(
        name="payments",
        descriptor=SERVICE_DESCRIPTORS["payments"],
        register=lambda server: payments_pb2_grpc.add_PaymentsServiceServicer_to_server(
            StreamingPayments(), server
        ),
    )
    server: ServiceServer = single_server(definition, certs_dir, enforce_access_rules=False)
    port = await server.start()
    yield port
    await server.stop(0)


@pytest.fixture
async def stream_edge(start_edge: StartEdge, payments_port: int) -> Edge:
    return await start_edge(upstream_ports={"payments": payments_port})


def read_ndjson(edge: Edge, path: str) -> tuple[int, list[dict[str, Any]]]:
    """What the docs show: read the body line by line as messages arrive."""
    context = ssl.create_default_context(cafile=str(edge.certs / "ca.pem"))
    connection = http.client.HTTPSConnection("localhost", edge.port, context=context, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        messages = [json.loads(line) for line in response if line.strip()]
        return response.status, messages
    finally:
        connection.close()


async def test_server_stream_over_rest_is_one_json_object_per_line(stream_edge: Edge) -> None:
    status, messages = await asyncio.to_thread(read_ndjson, stream_edge, "/v1/payments/p1:watch")
    assert status == 200
    assert messages == [
        {"heartbeat": {"lastEventId": f"payments/p1/{index}"}} for index in range(HEARTBEATS)
    ]


async def test_server_stream_over_grpc_through_the_edge(stream_edge: Edge) -> None:
    received: list[str] = []

    async def watch() -> None:
        async with stream_edge.channel() as channel:
            stub = payments_pb2_grpc.PaymentsServiceStub(channel)
            request = payments_pb2.WatchPaymentRequest(name="payments/p1")
            async for message in stub.WatchPayment(request):
                received.append(message.heartbeat.last_event_id)

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await watch()
    assert received == [f"payments/p1/{index}" for index in range(HEARTBEATS)]
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
