"""An OTLP/gRPC trace receiver for tests: what an OpenTelemetry Collector's receiver does,
minus the pipeline, so tests can see the spans a process (or Envoy) exports."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """What an OpenTelemetry Collector's OTLP receiver does, minus the pipeline."""

    def __init__(self) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self.arrived = asyncio.Event()

    async def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self.requests.append(request)
        self.arrived.set()
        return trace_service_pb2.ExportTraceServiceResponse()

    def trace_ids(self, service: str) -> set[str]:
        """Hex trace ids of the spans `service` (its `service.name`) exported."""
        found = set()
        for request in self.requests:
            for resource_spans in request.resource_spans:
                attributes = {
                    a.key: a.value.string_value for a in resource_spans.resource.attributes
                }
                if attributes.get("service.name") != service:
                    continue
                for scope in resource_spans.scope_spans:
                    found |= {span.trace_id.hex() for span in scope.spans}
        return found

    def spans(self) -> list[tuple[str, str]]:
        """(service.name, span name) of everything received."""
        found = []
        for request in self.requests:
            for resource_spans in request.resource_spans:
                attributes = {
                    a.key: a.value.string_value for a in resource_spans.resource.attributes
                }
                for scope in resource_spans.scope_spans:
                    found += [(attributes["service.name"], span.name) for span in scope.spans]
        return found


@asynccontextmanager
async def plaintext_collector() -> AsyncIterator[tuple[int, Collector]]:
    """A receiver on 127.0.0.1 (port 0); yields its port and what it received."""
    collector = Collector()
    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield port, collector
    finally:
        await server.stop(0)
