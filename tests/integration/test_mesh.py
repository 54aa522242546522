"""All five services in one process, as `gatehouse up` runs them: health, contracts, mTLS."""

from __future__ import annotations

import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gatehouse.mesh.runner import Mesh
from gatehouse.runtime.config import SERVICE_NAMES, ServiceName, Settings
from gatehouse.runtime.telemetry import create_tracer_provider
from tests.support.grpc_calls import (
    SERVICE_DESCRIPTORS,
    all_methods,
    call,
    detail,
    error_info,
    rich_status,
    valid_request,
)
from tests.support.mesh import channel_to

ISSUE_OF_SERVICE = {"auth": 4, "access": 6, "monitoring": 7, "payments": 8, "notifications": 9}


@pytest.fixture(scope="module")
async def ports(settings: Settings) -> AsyncIterator[dict[ServiceName, int]]:
    mesh = Mesh(settings, SERVICE_NAMES, tracer_provider=create_tracer_provider("t"))
    started = await mesh.start()
    yield started
    await mesh.stop(grace=0)


async def test_every_service_reports_serving(
    ports: dict[ServiceName, int], certs_dir: Path
) -> None:
    open_channel = channel_to(certs_dir)
    for name, port in ports.items():
        async with open_channel(port) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for service in ("", SERVICE_DESCRIPTORS[name].full_name):
                response = await health.Check(health_pb2.HealthCheckRequest(service=service))
                assert response.status == health_pb2.HealthCheckResponse.SERVING, (name, service)


@pytest.mark.parametrize(
    ("service", "method"),
    [pytest.param(s, m, id=f"{s}.{m.name}") for s, m in all_methods()],
)
async def test_rpc_without_behaviour_names_the_issue_that_brings_it(
    ports: dict[ServiceName, int], certs_dir: Path, service: ServiceName, method: object
) -> None:
    async with channel_to(certs_dir)(ports[service]) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call(channel, method, valid_request(method))  # type: ignore[arg-type]
    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert f"issue #{ISSUE_OF_SERVICE[service]}" in (raised.value.details() or "")
    info = error_info(rich_status(raised.value))
    assert (info.reason, info.domain) == ("NOT_IMPLEMENTED_YET", f"{service}.gatehouse")


async def test_malformed_resource_name_is_invalid_argument_with_field_violation(
    ports: dict[ServiceName, int], certs_dir: Path
) -> None:
    method = SERVICE_DESCRIPTORS["payments"].methods_by_name["GetPayment"]
    request = valid_request(method)
    request.name = "users/not-a-payment"  # type: ignore[attr-defined]
    async with channel_to(certs_dir)(ports["payments"]) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call(channel, method, request)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    bad_request = detail(rich_status(raised.value), error_details_pb2.BadRequest)
    assert [v.field for v in bad_request.field_violations] == ["name"]
    assert "payments/{id}" in bad_request.field_violations[0].description


async def _health_check(channel: grpc.aio.Channel) -> None:
    await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)


async def test_plaintext_client_is_refused(ports: dict[ServiceName, int]) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{ports['auth']}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await _health_check(channel)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_client_without_certificate_is_refused(
    ports: dict[ServiceName, int], certs_dir: Path
) -> None:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(certs_dir / "ca.pem").read_bytes()
    )
    async with grpc.aio.secure_channel(f"127.0.0.1:{ports['auth']}", credentials) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await _health_check(channel)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_client_certificate_from_unknown_ca_is_refused(
    ports: dict[ServiceName, int], certs_dir: Path, foreign_certs_dir: Path
) -> None:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(certs_dir / "ca.pem").read_bytes(),
        private_key=(foreign_certs_dir / "client-key.pem").read_bytes(),
        certificate_chain=(foreign_certs_dir / "client.pem").read_bytes(),
    )
    async with grpc.aio.secure_channel(f"127.0.0.1:{ports['auth']}", credentials) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await _health_check(channel)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE


def test_server_certificate_verifies_against_the_dev_ca(
    ports: dict[ServiceName, int], certs_dir: Path
) -> None:
    """Independent of grpc: a plain TLS client trusting only our CA accepts the server."""
    context = ssl.create_default_context(cafile=str(certs_dir / "ca.pem"))
    context.load_cert_chain(certs_dir / "client.pem", certs_dir / "client-key.pem")
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection(("127.0.0.1", ports["access"]), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        assert tls.selected_alpn_protocol() == "h2"
