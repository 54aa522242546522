"""Native gRPC through the edge's port 8443: same statuses and details; grpcurl with -protoset."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gatehouse.edge.descriptors import descriptor_set_path
from tests.e2e.edge.conftest import Edge
from tests.support.grpc_calls import (
    SERVICE_DESCRIPTORS,
    call,
    detail,
    error_info,
    rich_status,
    valid_request,
)
from tests.support.tokens import TestIssuer

BIN = Path(sys.executable).parent
GET_PAYMENT = SERVICE_DESCRIPTORS["payments"].methods_by_name["GetPayment"]
UNKNOWN_PAYMENT = "payments/01J0000000000000000000000A"


async def test_a_service_error_keeps_its_status_and_details(edge: Edge, issuer: TestIssuer) -> None:
    request = valid_request(GET_PAYMENT)
    request.name = UNKNOWN_PAYMENT  # type: ignore[attr-defined]
    async with edge.channel() as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call(channel, GET_PAYMENT, request, issuer.bearer(permissions=["*"]))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    info = error_info(rich_status(raised.value))
    assert (info.reason, info.domain) == ("PAYMENT_NOT_FOUND", "payments.gatehouse")


async def test_malformed_name_is_invalid_argument_with_field_violation(
    edge: Edge, issuer: TestIssuer
) -> None:
    request = valid_request(GET_PAYMENT)
    request.name = "users/not-a-payment"  # type: ignore[attr-defined]
    async with edge.channel() as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call(channel, GET_PAYMENT, request, issuer.bearer(permissions=["*"]))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    bad_request = detail(rich_status(raised.value), error_details_pb2.BadRequest)
    assert [v.field for v in bad_request.field_violations] == ["name"]


async def test_client_certificate_is_optional_by_default(edge: Edge) -> None:
    async with edge.channel(identity=None) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call(channel, GET_PAYMENT, valid_request(GET_PAYMENT))
    # The call reached the service, which wants a token.
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_health_and_reflection_are_not_exposed(edge: Edge) -> None:
    async with edge.channel() as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def _grpcurl(edge: Edge, *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        str(BIN / "grpcurl"),
        "-connect-timeout",
        "5",
        "-cacert",
        str(edge.certs / "ca.pem"),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, output.decode()


async def test_grpcurl_with_the_descriptor_set(edge: Edge, issuer: TestIssuer) -> None:
    protoset = ("-protoset", str(descriptor_set_path()))
    code, listed = await _grpcurl(edge, *protoset, "list")
    assert code == 0, listed
    assert {d.full_name for d in SERVICE_DESCRIPTORS.values()} <= set(listed.split())

    code, output = await _grpcurl(
        edge,
        *protoset,
        "-H",
        f"authorization: Bearer {issuer.token(permissions=['*'])}",
        "-d",
        json.dumps({"name": UNKNOWN_PAYMENT}),
        f"localhost:{edge.port}",
        "gatehouse.payments.v1.PaymentsService/GetPayment",
    )
    assert code != 0
    assert "Code: NotFound" in output
    assert "PAYMENT_NOT_FOUND" in output


async def test_grpcurl_reflection_is_refused_at_the_edge(edge: Edge) -> None:
    code, output = await _grpcurl(edge, f"localhost:{edge.port}", "list")
    assert code != 0
    assert "does not support the reflection API" in output
