"""WatchPayment: status changes as they commit until a final state, resume without gap or
duplicate, heartbeats, access, and a clean end when the server drains."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path

import grpc
import pytest

from gatehouse.payments.v1 import payments_pb2
from gatehouse.runtime.config import Settings
from tests.integration.payments.harness import (
    BOB,
    TIMEOUT,
    Metadata,
    PaymentsHarness,
    card_payment,
    events_about,
    money,
    refused,
    running_payments,
)
from tests.support.grpc_calls import error_info, rich_status

P = payments_pb2
S = {v: P.PaymentStatus.Name(v).removeprefix("PAYMENT_STATUS_") for v in P.PaymentStatus.values()}


def watch(
    payments: PaymentsHarness,
    name: str,
    *,
    resume_after: str = "",
    follow_refunds: bool = False,
    metadata: Metadata | None = None,
) -> grpc.aio.UnaryStreamCall[P.WatchPaymentRequest, P.WatchPaymentResponse]:
    return payments.stub().WatchPayment(
        P.WatchPaymentRequest(name=name, resume_after=resume_after, follow_refunds=follow_refunds),
        metadata=metadata or payments.user(),
    )


async def changes(stream: AsyncIterable[P.WatchPaymentResponse]) -> list[P.PaymentStatusChange]:
    """Every status change until the stream ends (heartbeats skipped)."""
    return [m.status_change async for m in stream if m.HasField("status_change")]


def transitions(items: list[P.PaymentStatusChange]) -> list[tuple[str, str]]:
    return [(S[c.previous_status], S[c.status]) for c in items]


async def next_change(stream: AsyncIterator[P.WatchPaymentResponse]) -> P.PaymentStatusChange:
    async for message in stream:
        if message.HasField("status_change"):
            return message.status_change
    raise AssertionError("the stream ended")


async def test_changes_are_delivered_until_the_final_state(payments: PaymentsHarness) -> None:
    created = await payments.create()
    stream = watch(payments, created.name).__aiter__()
    opening = await asyncio.wait_for(next_change(stream), 5)
    assert (S[opening.previous_status], S[opening.status]) == ("UNSPECIFIED", "PENDING")
    assert opening.payment == created
    processing = asyncio.create_task(payments.process(created.name))
    rest = await asyncio.wait_for(changes(stream), 10)
    done = await processing
    assert transitions(rest) == [("PENDING", "PROCESSING"), ("PROCESSING", "COMPLETED")]
    assert rest[-1].payment == done
    assert rest[0].payment.status == P.PAYMENT_STATUS_PROCESSING  # as of that change
    # The change ids are the ids of the events each change published.
    events = await events_about(payments, created.name, wait_for=3)
    assert [opening.event_id, *(c.event_id for c in rest)] == [e.id for e in events]


async def test_follow_refunds_delivers_every_settled_refund(payments: PaymentsHarness) -> None:
    done = await payments.completed("10.00")
    stream = watch(payments, done.name, follow_refunds=True).__aiter__()
    opening = await asyncio.wait_for(next_change(stream), 5)
    assert S[opening.status] == "COMPLETED"
    first = await payments.refund(done.name, money("2.00"))
    second = await payments.refund(done.name, money("3.00"))
    await payments.refund(done.name)
    rest = await asyncio.wait_for(changes(stream), 10)
    assert transitions(rest) == [
        ("COMPLETED", "PARTIALLY_REFUNDED"),
        ("PARTIALLY_REFUNDED", "PARTIALLY_REFUNDED"),
        ("PARTIALLY_REFUNDED", "REFUNDED"),
    ]
    assert [c.refund.name for c in rest[:2]] == [first.refund.name, second.refund.name]
    assert rest[1].payment.refunded_amount == money("5.00")
    assert rest[2].refund.amount == money("5.00")


async def test_a_payment_in_a_final_state_yields_one_message(payments: PaymentsHarness) -> None:
    done = await payments.completed()
    only = await asyncio.wait_for(changes(watch(payments, done.name)), 5)
    assert transitions(only) == [("UNSPECIFIED", "COMPLETED")]
    assert only[0].payment == done


async def test_resume_continues_after_the_last_change_seen(payments: PaymentsHarness) -> None:
    created = await payments.create()
    await payments.process(created.name)
    await payments.refund(created.name, money("1.00"))
    await payments.refund(created.name)
    events = await events_about(payments, created.name, wait_for=5)
    ids = [e.id for e in events]
    resumed = await asyncio.wait_for(
        changes(watch(payments, created.name, resume_after=ids[0], follow_refunds=True)), 5
    )
    assert [c.event_id for c in resumed] == ids[1:]
    assert transitions(resumed) == [
        ("PENDING", "PROCESSING"),
        ("PROCESSING", "COMPLETED"),
        ("COMPLETED", "PARTIALLY_REFUNDED"),
        ("PARTIALLY_REFUNDED", "REFUNDED"),
    ]
    tail = await asyncio.wait_for(changes(watch(payments, created.name, resume_after=ids[3])), 5)
    assert [c.event_id for c in tail] == ids[4:]
    nothing_after_the_end = await asyncio.wait_for(
        changes(watch(payments, created.name, resume_after=ids[-1])), 5
    )
    assert nothing_after_the_end == []


async def test_resume_of_a_live_stream_has_no_gap_and_no_duplicate(
    payments: PaymentsHarness,
) -> None:
    created = await payments.create()
    call = watch(payments, created.name)
    opening = await asyncio.wait_for(next_change(call.__aiter__()), 5)
    call.cancel()
    # Changes happen while the client is away.
    await payments.process(created.name)
    resumed = await asyncio.wait_for(
        changes(watch(payments, created.name, resume_after=opening.event_id)), 5
    )
    assert transitions(resumed) == [("PENDING", "PROCESSING"), ("PROCESSING", "COMPLETED")]


async def test_an_unknown_resume_point_is_refused(payments: PaymentsHarness) -> None:
    mine = await payments.create()
    other = await payments.create()
    (other_created,) = await events_about(payments, other.name, wait_for=1)
    for resume_after in ("01J00000000000000000000000", other_created.id, "not-an-id"):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await changes(watch(payments, mine.name, resume_after=resume_after))
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_info(rich_status(raised.value)).reason == "UNKNOWN_RESUME_POINT"


async def test_idle_streams_get_heartbeats(payments: PaymentsHarness) -> None:
    created = await payments.create()
    call = watch(payments, created.name)
    stream = call.__aiter__()
    opening = await asyncio.wait_for(next_change(stream), 5)
    message = await asyncio.wait_for(anext(stream), 5)
    assert message.HasField("heartbeat")
    assert message.heartbeat.last_event_id == opening.event_id
    call.cancel()


async def test_a_provider_timeout_is_followed_until_reconciled(payments: PaymentsHarness) -> None:
    created = await payments.create(card_payment(card=TIMEOUT))
    processing = await payments.process(created.name)
    assert processing.status == P.PAYMENT_STATUS_PROCESSING
    stream = watch(payments, created.name).__aiter__()
    opening = await asyncio.wait_for(next_change(stream), 5)
    assert S[opening.status] == "PROCESSING"
    payments.let_overdue()
    await payments.app.reconcile()
    rest = await asyncio.wait_for(changes(stream), 10)
    assert transitions(rest) == [("PROCESSING", "COMPLETED")]


async def test_only_the_owner_or_staff_may_watch(payments: PaymentsHarness) -> None:
    created = await payments.create()
    await refused(
        changes(watch(payments, created.name, metadata=payments.user(BOB))),
        grpc.StatusCode.PERMISSION_DENIED,
        "PERMISSION_MISSING",
    )
    await refused(
        changes(
            watch(
                payments,
                "payments/01J00000000000000000000000",
                metadata=payments.staff("payments.read_all"),
            )
        ),
        grpc.StatusCode.NOT_FOUND,
        "PAYMENT_NOT_FOUND",
    )
    await payments.stub().CancelPayment(
        P.CancelPaymentRequest(
            name=created.name, request_id="6d3e5f3c-8a07-4c1e-9b7a-3f1e1d2c4b5a"
        ),
        metadata=payments.user(),
    )
    staff = await changes(
        watch(payments, created.name, metadata=payments.staff("payments.read_all"))
    )
    assert transitions(staff) == [("UNSPECIFIED", "CANCELED")]


@pytest.fixture
async def drained(
    database_url: str, settings: Settings, certs_dir: Path
) -> AsyncIterator[PaymentsHarness]:
    async with running_payments(database_url, settings, certs_dir) as harness:
        yield harness


async def test_a_draining_server_ends_streams_with_unavailable(drained: PaymentsHarness) -> None:
    created = await drained.create()
    stream = watch(drained, created.name).__aiter__()
    opening = await asyncio.wait_for(next_change(stream), 5)
    stopping = asyncio.create_task(drained.server.stop(2))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await asyncio.wait_for(changes(stream), 5)
    await stopping
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    info = error_info(rich_status(raised.value))
    assert info.reason == "SHUTTING_DOWN"
    assert info.metadata["last_event_id"] == opening.event_id
