"""OpenTelemetry: a server span per RPC, W3C trace context from metadata, one log line per RPC."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind, Status, StatusCode

from gatehouse.runtime.config import ConfigurationError, Settings
from gatehouse.runtime.identity import Caller, observing_caller
from gatehouse.runtime.interception import ScopedInterceptor, split_method
from gatehouse.runtime.metrics import RpcMetrics

log = logging.getLogger("gatehouse.rpc")


def create_tracer_provider(
    service_name: str, processors: tuple[SpanProcessor, ...] = (), *, sample_ratio: float = 1.0
) -> TracerProvider:
    """One provider per process; exporters are processors the composition root passes in.

    Sampling is parent-based: a call that arrives with a sampled `traceparent` (from Envoy or
    another service) is recorded whatever the ratio, so a trace is whole or absent."""
    provider = TracerProvider(
        resource=Resource.create({"service.name": service_name}),
        sampler=ParentBased(TraceIdRatioBased(sample_ratio)),
    )
    for processor in processors:
        provider.add_span_processor(processor)
    return provider


def tracer_provider_from_settings(settings: Settings, service_name: str) -> TracerProvider:
    """The process's provider: exporting over OTLP/gRPC in batches when an endpoint is set."""
    processors: tuple[SpanProcessor, ...] = ()
    if settings.otlp_endpoint:
        processors = (BatchSpanProcessor(otlp_exporter(settings)),)
    return create_tracer_provider(
        service_name, processors, sample_ratio=settings.trace_sample_ratio
    )


def otlp_exporter(settings: Settings) -> SpanExporter:
    endpoint = settings.otlp_endpoint or ""
    scheme, _, address = endpoint.partition("://")
    if scheme not in ("http", "https") or not address:
        raise ConfigurationError(
            "GATEHOUSE_OTLP_ENDPOINT must be http://host:port or https://host:port, "
            f"got {endpoint!r}"
        )
    if scheme == "http":
        return OTLPSpanExporter(endpoint=address, insecure=True)
    roots = settings.otlp_ca_file.read_bytes() if settings.otlp_ca_file else None
    return OTLPSpanExporter(
        endpoint=address, credentials=grpc.ssl_channel_credentials(root_certificates=roots)
    )


class TracingInterceptor(ScopedInterceptor):
    """Span per RPC (parented on the caller's `traceparent`), RPC metrics and an access-log
    line."""

    def __init__(
        self,
        tracer_provider: trace.TracerProvider,
        metrics: RpcMetrics | None = None,
        services: Iterable[ServiceDescriptor] = (),
    ) -> None:
        self._tracer = tracer_provider.get_tracer("gatehouse.rpc")
        self._metrics = metrics
        self._streaming = frozenset(
            f"/{service.full_name}/{method.name}"
            for service in services
            for method in service.methods
            if method.client_streaming or method.server_streaming
        )

    @asynccontextmanager
    async def scope(
        self, method: str, request: Message | None, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[None]:
        carrier = {
            key: value
            for key, value in context.invocation_metadata() or ()
            if isinstance(value, str)
        }
        parent = propagate.extract(carrier)
        service, name = split_method(method)
        started = time.perf_counter()
        metrics = self._metrics
        streaming = method in self._streaming
        if metrics is not None and streaming:
            metrics.active_streams.add(1, {"rpc.service": service})
        attach_token = otel_context.attach(parent)
        try:
            with (
                observing_caller() as callers,
                self._tracer.start_as_current_span(
                    method.lstrip("/"),
                    kind=SpanKind.SERVER,
                    attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
                    record_exception=False,
                    set_status_on_exception=False,
                ) as span,
            ):
                try:
                    yield
                finally:
                    code = _status_code(context)
                    elapsed_ms = (time.perf_counter() - started) * 1000
                    span.set_attribute("rpc.grpc.status_code", code.value[0])
                    if code not in _CLIENT_SIDE_CODES:
                        span.set_status(Status(StatusCode.ERROR, code.name))
                    if metrics is not None:
                        attributes = {
                            "rpc.service": service,
                            "rpc.method": name,
                            "rpc.grpc.status_code": code.name,
                        }
                        metrics.requests.add(1, attributes)
                        metrics.duration.record(elapsed_ms, attributes)
                        if streaming:
                            metrics.active_streams.add(-1, {"rpc.service": service})
                    log.info(
                        "rpc %s %s",
                        method,
                        code.name,
                        extra={
                            "rpc_method": method,
                            "grpc_code": code.name,
                            "duration_ms": round(elapsed_ms, 3),
                            **_caller_fields(callers[-1] if callers else None),
                        },
                    )
        finally:
            otel_context.detach(attach_token)


def _caller_fields(caller: Caller | None) -> dict[str, str]:
    """Who called, for the RPC log line: names and addresses, never a credential."""
    if caller is None:
        return {}
    fields = {
        "caller_user": caller.user,
        "caller_peer": caller.peer_spiffe_id,
        "client_address": caller.client_address,
    }
    return {key: value for key, value in fields.items() if value}


# Outcomes that are the caller's business, not a server fault worth an error span.
_CLIENT_SIDE_CODES = frozenset(
    {
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)


def _status_code(context: grpc.aio.ServicerContext[Any, Any]) -> grpc.StatusCode:
    # Typed as StatusCode, but grpc.aio reports a raw integer (or None before any is set).
    code: object = context.code()
    if code is None:
        return grpc.StatusCode.OK
    if isinstance(code, grpc.StatusCode):
        return code
    for candidate in grpc.StatusCode:
        if candidate.value[0] == code:
            return candidate
    return grpc.StatusCode.UNKNOWN
