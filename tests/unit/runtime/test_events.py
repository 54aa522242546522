"""Event envelopes: validation, payload packing, streams, and trace context both ways."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.trace import format_span_id, format_trace_id

from gatehouse.events.v1.envelope_pb2 import Event
from gatehouse.payments.v1.events_pb2 import PaymentProcessed
from gatehouse.runtime.events import (
    InvalidEventError,
    extract_trace_context,
    new_event,
    producer_link,
    stream_for,
)
from gatehouse.runtime.ids import is_ulid

SUBJECT = "payments/01JD7Z3V5Q0M8X4T6N2C9B1A0F"


def processed(payment: str = SUBJECT) -> PaymentProcessed:
    return PaymentProcessed(payment=payment, payer="users/ada", card_last4="4242")


def make(**overrides: object) -> Event:
    arguments: dict[str, object] = {
        "source": "payments",
        "subject": SUBJECT,
        "data": processed(),
    }
    arguments.update(overrides)
    return new_event("payment.processed", **arguments)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def tracer() -> trace.Tracer:
    # A provider of our own: the test must not depend on (or change) the global one.
    return TracerProvider().get_tracer("tests")


# --- building ------------------------------------------------------------------------------


def test_a_new_event_fills_every_envelope_field() -> None:
    before = datetime.now(UTC)
    event = make(correlation_id="req-7", schema_version=2)
    after = datetime.now(UTC)

    assert is_ulid(event.id)
    assert event.type == "payment.processed"
    assert event.source == "payments"
    assert event.subject == SUBJECT
    assert event.correlation_id == "req-7"
    assert event.schema_version == 2
    assert before - timedelta(milliseconds=1) <= event.time.ToDatetime(tzinfo=UTC) <= after


def test_the_payload_is_packed_as_any_with_its_type_url() -> None:
    event = make()

    assert event.data.type_url == "type.googleapis.com/gatehouse.payments.v1.PaymentProcessed"
    unpacked = PaymentProcessed()
    assert event.data.Unpack(unpacked)
    assert unpacked == processed()


def test_an_explicit_time_is_kept_in_utc() -> None:
    when = datetime(2030, 1, 2, 3, 4, 5, 678_000, tzinfo=timezone(timedelta(hours=2)))

    event = make(time=when)

    assert event.time.ToDatetime(tzinfo=UTC) == when
    assert event.time.ToDatetime(tzinfo=UTC).hour == 1


def test_a_naive_time_is_refused() -> None:
    with pytest.raises(InvalidEventError, match="naive"):
        make(time=datetime(2030, 1, 1))


def test_without_a_correlation_id_the_event_correlates_with_itself() -> None:
    event = make()

    assert event.correlation_id == event.id


def test_every_event_gets_a_new_increasing_id() -> None:
    ids = [make().id for _ in range(100)]

    assert ids == sorted(ids)
    assert len(set(ids)) == 100


@pytest.mark.parametrize(
    "event_type",
    [
        "payment",
        "Payment.processed",
        "payment.",
        ".processed",
        "payment..processed",
        "payment.processed.",
        "payment-x.processed",
        "1payment.processed",
        "payment.Processed",
        "payment processed",
        "",
    ],
)
def test_malformed_event_types_are_refused(event_type: str) -> None:
    with pytest.raises(InvalidEventError, match="event type"):
        new_event(event_type, source="payments", subject=SUBJECT, data=processed())
    with pytest.raises(InvalidEventError):
        stream_for(event_type)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"source": ""}, "source"),
        ({"subject": ""}, "subject"),
        ({"schema_version": 0}, "schema_version"),
    ],
)
def test_missing_envelope_fields_are_refused(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidEventError, match=message):
        make(**overrides)


@pytest.mark.parametrize(
    ("event_type", "stream"),
    [
        ("payment.processed", "events.payment"),
        ("door.opened", "events.door"),
        ("visitor.checked_in", "events.visitor"),
        ("access_log.entry.appended", "events.access_log"),
    ],
)
def test_the_stream_is_named_after_the_family(event_type: str, stream: str) -> None:
    assert stream_for(event_type) == stream


# --- trace context -------------------------------------------------------------------------


def test_the_current_span_travels_as_w3c_traceparent(tracer: trace.Tracer) -> None:
    with tracer.start_as_current_span("CreatePayment") as span:
        event = make()
    context = span.get_span_context()

    version, trace_id, span_id, flags = event.traceparent.split("-")
    assert version == "00"
    assert trace_id == format_trace_id(context.trace_id)
    assert span_id == format_span_id(context.span_id)
    # Sampled (bit 0); newer SDKs also set the level-2 "random trace id" bit.
    assert int(flags, 16) & 0x01


def test_trace_state_travels_too(tracer: trace.Tracer) -> None:
    parent = trace.SpanContext(
        trace_id=0x4BF92F3577B34DA6A3CE929D0E0E4736,
        span_id=0x00F067AA0BA902B7,
        is_remote=True,
        trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
        trace_state=trace.TraceState([("vendor", "opaque")]),
    )
    with tracer.start_as_current_span(
        "work", context=trace.set_span_in_context(trace.NonRecordingSpan(parent))
    ):
        event = make()

    assert event.tracestate == "vendor=opaque"


def test_without_a_current_span_the_trace_fields_are_empty() -> None:
    event = make()

    assert event.traceparent == ""
    assert event.tracestate == ""
    assert producer_link(event) is None


def test_a_consumer_span_can_be_a_child_of_the_producing_span(tracer: trace.Tracer) -> None:
    with tracer.start_as_current_span("CreatePayment") as producer:
        event = make()

    with tracer.start_as_current_span(
        "handle payment.processed", context=extract_trace_context(event)
    ) as consumer:
        pass

    produced = producer.get_span_context()
    assert isinstance(consumer, ReadableSpan)
    assert consumer.get_span_context().trace_id == produced.trace_id
    assert consumer.parent is not None
    assert consumer.parent.span_id == produced.span_id
    assert consumer.parent.is_remote


def test_a_consumer_span_can_link_to_the_producing_span(tracer: trace.Tracer) -> None:
    with tracer.start_as_current_span("CreatePayment") as producer:
        event = make()

    link = producer_link(event)

    assert link is not None
    assert link.context.trace_id == producer.get_span_context().trace_id
    assert link.context.span_id == producer.get_span_context().span_id


def test_extracting_ignores_the_consumers_own_current_span(tracer: trace.Tracer) -> None:
    # An envelope without trace context must not pick up whatever span the consumer is in.
    event = make()

    with tracer.start_as_current_span("consumer loop"):
        context = extract_trace_context(event)

    assert not trace.get_current_span(context).get_span_context().is_valid


def test_a_malformed_traceparent_reads_as_no_trace() -> None:
    event = make()
    event.traceparent = "00-not-a-trace-01"

    assert producer_link(event) is None
    assert not trace.get_current_span(extract_trace_context(event)).get_span_context().is_valid
