"""All five services in one process, as `gatehouse up` runs them: health, contracts, mTLS."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.protobuf.descriptor import MethodDescriptor
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gatehouse.mesh.runner import Mesh
from gatehouse.runtime.authorization import AccessRule
from gatehouse.runtime.config import SERVICE_NAMES, ServiceName, Settings
from gatehouse.runtime.identity import DEVICE_TOKEN_HEADER, JWKS_KEY
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
from tests.support.tokens import TestIssuer

# What no RPC may answer to a well-formed request: a stub's or a fault's status.
FAULTS = frozenset(
    {grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
)
# How long a server stream with nothing to send yet is given before it counts as accepted,
# and how long any other call may take on a loaded machine (argon2 for passwords included).
STREAM_PATIENCE = 2.0
CALL_PATIENCE = 30.0


@pytest.fixture(scope="module")
def issuer() -> TestIssuer:
    return TestIssuer()


@pytest.fixture(scope="module")
async def ports(settings: Settings, issuer: TestIssuer) -> AsyncIterator[dict[ServiceName, int]]:
    mesh = Mesh(settings, SERVICE_NAMES, tracer_provider=create_tracer_provider("t"))
    started = await mesh.start()
    # As the auth service does: publish the signing keys where every service looks for them.
    await mesh.infrastructure.kv.set(JWKS_KEY, issuer.jwks_json())
    yield started
    await mesh.stop(grace=0)


def credentials_for(
    method: MethodDescriptor, issuer: TestIssuer
) -> tuple[str, tuple[tuple[str, str], ...]]:
    """The certificate identity and metadata that satisfy the method's access rule."""
    rule = AccessRule.of(method)
    if rule.kind == "public":
        return "client", ()
    if rule.kind == "internal":
        return "access", ()
    if rule.kind == "device":
        return "client", ((DEVICE_TOKEN_HEADER, "device-token-checked-by-the-handler"),)
    return "client", issuer.bearer(permissions=["*"])


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
    ("service", "method"), [pytest.param(s, m, id=f"{s}.{m.name}") for s, m in all_methods()]
)
async def test_every_rpc_answers_with_behaviour_never_a_fault(
    ports: dict[ServiceName, int],
    certs_dir: Path,
    issuer: TestIssuer,
    service: ServiceName,
    method: MethodDescriptor,
) -> None:
    # A request that passes the contract's own rules but names nothing that exists: each
    # RPC must answer for itself (a result, NOT_FOUND, a precondition...), never as a stub
    # (UNIMPLEMENTED) and never as a fault (INTERNAL, UNKNOWN).
    identity, metadata = credentials_for(method, issuer)
    error = await _answer(ports[service], certs_dir, identity, method, metadata)
    if error is not None:
        assert error.code() not in FAULTS, (error.code(), error.details())
        info = error_info(rich_status(error))
        assert info.domain in (f"{service}.gatehouse", "gatehouse"), info


async def _answer(
    port: int,
    certs_dir: Path,
    identity: str,
    method: MethodDescriptor,
    metadata: tuple[tuple[str, str], ...],
) -> grpc.aio.AioRpcError | None:
    """The error a call of `method` ends with, if any."""
    async with channel_to(certs_dir, identity)(port) as channel:
        try:
            patience = STREAM_PATIENCE if method.server_streaming else CALL_PATIENCE
            async with asyncio.timeout(patience):
                await call(channel, method, valid_request(method), metadata)
        except TimeoutError:
            # Only a stream may still be open, waiting for what it watches: it was accepted.
            assert method.server_streaming, f"{method.full_name} did not answer"
        except grpc.aio.AioRpcError as error:
            return error
    return None


async def test_malformed_resource_name_is_invalid_argument_with_field_violation(
    ports: dict[ServiceName, int], certs_dir: Path, issuer: TestIssuer
) -> None:
    method = SERVICE_DESCRIPTORS["payments"].methods_by_name["GetPayment"]
    request = valid_request(method)
    request.name = "users/not-a-payment"  # type: ignore[attr-defined]
    async with channel_to(certs_dir)(ports["payments"]) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call(channel, method, request, issuer.bearer())
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


async def test_a_plaintext_health_port_answers_probes_and_nothing_else(
    settings: Settings, tmp_path: Path
) -> None:
    # What a Kubernetes `grpc:` probe sees: no client certificate, health only.
    configured = settings.model_copy(update={"health_port": 0, "home": tmp_path})
    mesh = Mesh(configured, ["payments"], tracer_provider=create_tracer_provider("t"))
    assert mesh.health is not None
    await mesh.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{mesh.health.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for service in ("", SERVICE_DESCRIPTORS["payments"].full_name):
                response = await health.Check(health_pb2.HealthCheckRequest(service=service))
                assert response.status == health_pb2.HealthCheckResponse.SERVING, service
            with pytest.raises(grpc.aio.AioRpcError) as unknown:
                await health.Check(health_pb2.HealthCheckRequest(service="other.Service"))
            assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
            # The services themselves are not on it.
            method = SERVICE_DESCRIPTORS["payments"].methods_by_name["GetPayment"]
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call(channel, method, valid_request(method))
            assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
            await mesh.health.draining()
            response = await health.Check(health_pb2.HealthCheckRequest(service=""))
            assert response.status == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        await mesh.stop(grace=0)
