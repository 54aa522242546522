"""Spans leave the process over OTLP/gRPC to a real (in-test) collector, plaintext or TLS,
and sampling keeps traces whole."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from gatehouse.runtime.config import ConfigurationError, Settings
from gatehouse.runtime.telemetry import create_tracer_provider, tracer_provider_from_settings
from gatehouse.runtime.tls import CA_FILE, CertificatePaths
from tests.support.otlp import Collector


async def _collector(certs_dir: Path | None) -> tuple[grpc.aio.Server, int, Collector]:
    collector = Collector()
    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)  # type: ignore[no-untyped-call]
    if certs_dir is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        _, chain, key = CertificatePaths.for_name(certs_dir, "monitoring").read()
        port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([(key, chain)]))
    await server.start()
    return server, port, collector


@pytest.fixture
async def plain_collector() -> AsyncIterator[tuple[int, Collector]]:
    server, port, collector = await _collector(None)
    yield port, collector
    await server.stop(0)


@pytest.fixture
async def tls_collector(certs_dir: Path) -> AsyncIterator[tuple[int, Collector]]:
    server, port, collector = await _collector(certs_dir)
    yield port, collector
    await server.stop(0)


async def _export_one(settings: Settings, collector: Collector) -> None:
    provider = tracer_provider_from_settings(settings, "payments")
    with provider.get_tracer("test").start_as_current_span("ProcessPayment"):
        pass
    # The batch processor exports from its own thread; shutdown flushes it.
    await asyncio.to_thread(provider.shutdown)
    await asyncio.wait_for(collector.arrived.wait(), 10)
    assert collector.spans() == [("payments", "ProcessPayment")]


async def test_spans_reach_a_plaintext_collector(
    settings: Settings, plain_collector: tuple[int, Collector]
) -> None:
    port, collector = plain_collector
    configured = settings.model_copy(update={"otlp_endpoint": f"http://127.0.0.1:{port}"})
    await _export_one(configured, collector)


async def test_spans_reach_a_tls_collector_verified_against_the_configured_ca(
    settings: Settings, certs_dir: Path, tls_collector: tuple[int, Collector]
) -> None:
    port, collector = tls_collector
    configured = settings.model_copy(
        update={"otlp_endpoint": f"https://localhost:{port}", "otlp_ca_file": certs_dir / CA_FILE}
    )
    await _export_one(configured, collector)


def test_an_endpoint_without_a_scheme_is_a_configuration_error(settings: Settings) -> None:
    configured = settings.model_copy(update={"otlp_endpoint": "collector:4317"})
    with pytest.raises(ConfigurationError, match="http://host:port"):
        tracer_provider_from_settings(configured, "auth")


def test_sampling_decides_for_new_traces_and_follows_a_traced_caller() -> None:
    spans = InMemorySpanExporter()
    provider = create_tracer_provider("auth", (SimpleSpanProcessor(spans),), sample_ratio=0.0)
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("unsampled root"):
        pass
    # A caller (Envoy, another service) that sampled its trace: the ratio does not cut it.
    parent = SpanContext(trace_id=0x1234, span_id=0x5678, is_remote=True, trace_flags=TraceFlags(1))
    with tracer.start_as_current_span(
        "child of a sampled caller", context=trace.set_span_in_context(NonRecordingSpan(parent))
    ):
        pass
    assert [span.name for span in spans.get_finished_spans()] == ["child of a sampled caller"]
    (child,) = spans.get_finished_spans()
    assert child.context is not None
    assert child.context.trace_id == 0x1234
