"""One trace through the edge, the services and the event bus (issue #10). A client that
traces its own work (one `traceparent` for a sign-in and a payment) sees it continued by
Envoy -> auth (Login), and by Envoy -> payments (ProcessPayment, over REST) ->
`payment.processed` -> notifications (the receipt) -> auth (who the payer is). Envoy exports
its spans over OTLP to a real receiver; the services' spans come from an in-memory exporter."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import uuid
from pathlib import Path

import grpc
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gatehouse.auth.v1 import auth_pb2, auth_pb2_grpc
from gatehouse.edge.process import EdgeProcess
from gatehouse.mesh.runner import Mesh
from gatehouse.payments.v1 import payments_pb2, payments_pb2_grpc
from gatehouse.runtime.config import ServiceName, Settings
from gatehouse.runtime.telemetry import create_tracer_provider
from tests.e2e.production.cluster import free_port
from tests.integration.payments.harness import card_payment
from tests.support.otlp import plaintext_collector

SERVICES: tuple[ServiceName, ...] = ("auth", "payments", "notifications")
ADMIN_EMAIL = "tracer@gatehouse.test"
ADMIN_PASSWORD = "a passphrase for tracing"
_BASE_IDS = itertools.count(os.getpid() % 100_000 * 100 + 80)


def trace_of(spans: list[ReadableSpan], name: str) -> set[int]:
    return {span.context.trace_id for span in spans if span.name == name and span.context}


async def test_one_trace_from_the_edge_across_the_bus(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GATEHOUSE_AUTH_BOOTSTRAP_ADMIN_EMAIL", ADMIN_EMAIL)
    monkeypatch.setenv("GATEHOUSE_AUTH_BOOTSTRAP_ADMIN_PASSWORD", ADMIN_PASSWORD)
    # Notifications reaches auth at its configured port: fixed ports for this mesh.
    ports = {name: free_port() for name in SERVICES}
    exported = InMemorySpanExporter()
    async with plaintext_collector() as (collector_port, collector):
        configured = settings.model_copy(
            update={
                "home": tmp_path,
                **{f"{name}_port": port for name, port in ports.items()},
                "otlp_endpoint": f"http://127.0.0.1:{collector_port}",
                "edge_port": 0,
                "edge_admin_port": 0,
                "edge_base_id": next(_BASE_IDS),
                "edge_global_rate_per_second": 0,
                "edge_sensitive_rate_per_minute": 0,
            }
        )
        provider = create_tracer_provider("gatehouse", (SimpleSpanProcessor(exported),))
        mesh = Mesh(configured, SERVICES, tracer_provider=provider)
        await mesh.start()
        edge = EdgeProcess(configured, directory=tmp_path / "edge")
        try:
            await edge.start(ports)
            certs = configured.certificates
            credentials = grpc.ssl_channel_credentials(
                root_certificates=(certs / "ca.pem").read_bytes(),
                private_key=(certs / "client-key.pem").read_bytes(),
                certificate_chain=(certs / "client.pem").read_bytes(),
            )
            # The client's own trace, as an instrumented app would send it.
            trace = int(uuid.uuid4().hex, 16)
            traceparent = f"00-{trace:032x}-{uuid.uuid4().hex[:16]}-01"
            async with grpc.aio.secure_channel(f"localhost:{edge.port}", credentials) as channel:
                login = await auth_pb2_grpc.AuthServiceStub(channel).Login(
                    auth_pb2.LoginRequest(email=ADMIN_EMAIL, password=ADMIN_PASSWORD),
                    metadata=(("traceparent", traceparent),),
                    timeout=30,
                )
                token = login.tokens.access_token
                created = await payments_pb2_grpc.PaymentsServiceStub(channel).CreatePayment(
                    payments_pb2.CreatePaymentRequest(
                        payment=card_payment(), request_id=str(uuid.uuid4())
                    ),
                    metadata=(("authorization", f"Bearer {token}"),),
                    timeout=10,
                )
            # The traced call: REST, as a browser or a script would make it.
            response = await asyncio.to_thread(
                _post, edge, f"/v1/{created.payment.name}:process", token, traceparent
            )
            assert json.loads(response)["payment"]["status"] == "PAYMENT_STATUS_COMPLETED"

            steps = (
                "gatehouse.auth.v1.AuthService/Login",
                "gatehouse.payments.v1.PaymentsService/ProcessPayment",
                "process payment.processed",  # the receipt, in notifications' consumer
                "gatehouse.auth.v1.AuthService/GetUser",  # notifications asking who paid
            )
            async with asyncio.timeout(30):
                while True:
                    spans = list(exported.get_finished_spans())
                    if all(trace in trace_of(spans, step) for step in steps):
                        break
                    await asyncio.sleep(0.1)
            # Envoy exports its spans in batches, every few seconds.
            async with asyncio.timeout(30):
                while True:
                    collector.arrived.clear()
                    if f"{trace:032x}" in collector.trace_ids("gatehouse-edge"):
                        break
                    await collector.arrived.wait()
        finally:
            await edge.stop()
            await mesh.stop(grace=0)
    # The receipt's consumer continued the request's trace, not a trace of its own.
    (consumer,) = [s for s in spans if s.name == steps[2] and s.context.trace_id == trace]
    assert consumer.parent is not None


def _post(edge: EdgeProcess, path: str, token: str, traceparent: str) -> bytes:
    import http.client  # noqa: PLC0415
    import ssl  # noqa: PLC0415

    context = ssl.create_default_context(cafile=str(edge.settings.certificates / "ca.pem"))
    connection = http.client.HTTPSConnection("localhost", edge.port, context=context, timeout=15)
    try:
        connection.request(
            "POST",
            path,
            body=json.dumps({"requestId": str(uuid.uuid4())}),
            headers={
                "authorization": f"Bearer {token}",
                "content-type": "application/json",
                "traceparent": traceparent,
            },
        )
        response = connection.getresponse()
        body = response.read()
        assert response.status == 200, body
        return body
    finally:
        connection.close()
