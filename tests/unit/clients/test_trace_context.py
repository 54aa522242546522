"""The trace context a client passes on: the current span's, or none outside a span."""

from __future__ import annotations

import grpc
from opentelemetry.sdk.trace import TracerProvider

from gatehouse.clients.interceptors import TraceContext


def details(*metadata: tuple[str, str]) -> grpc.aio.ClientCallDetails:
    return grpc.aio.ClientCallDetails("/svc/Method", None, grpc.aio.Metadata(*metadata), None, None)


async def test_the_current_span_travels_as_traceparent() -> None:
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("serving a request") as span:
        prepared = await TraceContext().prepare(details(("x-other", "kept")), None)
    context = span.get_span_context()
    metadata = prepared.metadata
    assert metadata is not None
    traceparent = metadata.get("traceparent")
    assert isinstance(traceparent, str)
    version, trace_id, span_id, flags = traceparent.split("-")
    assert (version, trace_id, span_id) == (
        "00",
        f"{context.trace_id:032x}",
        f"{context.span_id:016x}",
    )
    assert int(flags, 16) & 1  # sampled
    assert metadata.get("x-other") == "kept"


async def test_no_span_no_header_and_an_explicit_one_is_kept() -> None:
    untouched = details()
    assert await TraceContext().prepare(untouched, None) is untouched
    tracer = TracerProvider().get_tracer("test")
    explicit = details(("traceparent", "00-" + "1" * 32 + "-" + "2" * 16 + "-01"))
    with tracer.start_as_current_span("another"):
        assert await TraceContext().prepare(explicit, None) is explicit
