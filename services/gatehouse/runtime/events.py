"""Building event envelopes (`gatehouse.events.v1.Event`) and reading their trace context.

A producer calls `new_event(...)` inside the span of the work that caused it, then adds the
event to its unit of work's outbox (`gatehouse.runtime.outbox`); the relay publishes it to
`stream_for(event.type)`. A consumer parents or links its span with
`extract_trace_context(event)` / `producer_link(event)`, so the trace crosses the bus
(ARCHITECTURE §7, §9).

Event types are `<family>.<what happened>` in lower snake case (`payment.processed`,
`door.opened`); the family picks the stream, so every event of one resource goes through one
stream, in order.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from google.protobuf import any_pb2, timestamp_pb2
from google.protobuf.message import Message
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from gatehouse.events.v1.envelope_pb2 import Event
from gatehouse.runtime.ids import new_ulid

STREAM_PREFIX = "events."

# Dot-separated lower snake-case words, at least two. Stricter than "any dots after the
# first word": empty words (`a..b`, `a.b.`) would make stream and filter names ambiguous.
EVENT_TYPE_PATTERN = re.compile(r"[a-z][a-z_]*(?:\.[a-z][a-z_]*)+")

_TRACEPARENT = "traceparent"
_TRACESTATE = "tracestate"


class InvalidEventError(ValueError):
    """An envelope field is missing or malformed (a bug in the producer, not bad user input)."""


def check_event_type(event_type: str) -> str:
    """Return `event_type` if it is well formed, else raise `InvalidEventError`."""
    if EVENT_TYPE_PATTERN.fullmatch(event_type) is None:
        raise InvalidEventError(
            f"event type {event_type!r} is not `<family>.<event>` in lower snake case"
            " (e.g. `payment.processed`)"
        )
    return event_type


def stream_for(event_type: str) -> str:
    """The bus stream an event type is published to: `events.<family>`.

    >>> stream_for("payment.processed")
    'events.payment'
    """
    family, _, _ = check_event_type(event_type).partition(".")
    return f"{STREAM_PREFIX}{family}"


def new_event(
    # Named like the envelope field (and the CloudEvents attribute) it fills.
    type: str,
    *,
    source: str,
    subject: str,
    data: Message,
    correlation_id: str | None = None,
    schema_version: int = 1,
    time: datetime | None = None,
) -> Event:
    """A new envelope around `data`, carrying the current trace context.

    - `id` is a new ULID, so ids sort by creation within a process;
    - `time` defaults to now; pass an aware datetime to set it (naive ones are refused);
    - `correlation_id` defaults to the new event's own id: an event that starts a chain
      correlates with itself, and a consumer that reacts passes the incoming event's
      `correlation_id` on;
    - `traceparent`/`tracestate` are the W3C form of the span current at the call (empty
      when there is none). Call this inside the span of the work that caused the event.
    """
    check_event_type(type)
    if not source:
        raise InvalidEventError("source must name the producing service")
    if not subject:
        raise InvalidEventError("subject must name the resource the event is about")
    if schema_version < 1:
        raise InvalidEventError(f"schema_version starts at 1, got {schema_version}")
    when = datetime.now(UTC) if time is None else time
    if when.utcoffset() is None:
        raise InvalidEventError(f"naive time {when!r}: pass an aware datetime (UTC)")

    event_id = new_ulid()
    payload = any_pb2.Any()
    payload.Pack(data)
    timestamp = timestamp_pb2.Timestamp()
    timestamp.FromDatetime(when.astimezone(UTC))
    carrier: dict[str, str] = {}
    # Always W3C, whatever propagator the process installed globally (B3, Jaeger...): the
    # envelope fields are W3C by definition and every consumer parses them as such.
    TraceContextTextMapPropagator().inject(carrier)
    return Event(
        id=event_id,
        type=type,
        source=source,
        time=timestamp,
        subject=subject,
        correlation_id=correlation_id if correlation_id is not None else event_id,
        traceparent=carrier.get(_TRACEPARENT, ""),
        tracestate=carrier.get(_TRACESTATE, ""),
        data=payload,
        schema_version=schema_version,
    )


def extract_trace_context(event: Event) -> Context:
    """The producer's trace context as an OpenTelemetry `Context`.

    Pass it as `context=` to start a consumer span as a child of the producing span; an
    envelope without (or with a malformed) `traceparent` gives an empty context, i.e. a new
    trace.
    """
    carrier = {_TRACEPARENT: event.traceparent}
    if event.tracestate:
        carrier[_TRACESTATE] = event.tracestate
    return TraceContextTextMapPropagator().extract(carrier, context=Context())


def producer_link(event: Event) -> trace.Link | None:
    """A span link to the producing span, or `None` when the envelope carries no trace.

    Consumers that handle events in batches, or long after they were produced, link rather
    than parent: their span starts a trace of its own that points at the producer's.
    """
    span_context = trace.get_current_span(extract_trace_context(event)).get_span_context()
    return trace.Link(span_context) if span_context.is_valid else None
