"""The lifecycle through the RPCs: every allowed transition and every refused one, etags,
idempotent ProcessPayment/CancelPayment, and who may act."""

from __future__ import annotations

from collections.abc import Awaitable

import grpc
import pytest

from gatehouse.payments.v1 import payments_pb2
from tests.integration.payments.harness import (
    ALICE,
    BOB,
    DECLINE,
    ERROR,
    EXPIRED,
    INSUFFICIENT,
    TIMEOUT,
    PaymentsHarness,
    card_payment,
    event_types,
    ledger_ok,
    money,
    refused,
    request_id,
)
from tests.support.grpc_calls import error_info

P = payments_pb2
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION


async def in_state(payments: PaymentsHarness, status: int) -> payments_pb2.Payment:
    """A payment brought to `status` through the RPCs."""
    if status == P.PAYMENT_STATUS_PENDING:
        return await payments.create()
    if status == P.PAYMENT_STATUS_PROCESSING:
        return await payments.process((await payments.create(card_payment(card=TIMEOUT))).name)
    if status == P.PAYMENT_STATUS_FAILED:
        return await payments.process((await payments.create(card_payment(card=DECLINE))).name)
    if status == P.PAYMENT_STATUS_CANCELED:
        return await cancel(payments, (await payments.create()).name)
    done = await payments.completed("10.00")
    if status == P.PAYMENT_STATUS_COMPLETED:
        return done
    if status == P.PAYMENT_STATUS_PARTIALLY_REFUNDED:
        return (await payments.refund(done.name, money("1.00"))).payment
    return (await payments.refund(done.name)).payment


async def cancel(
    payments: PaymentsHarness, name: str, *, user: str = ALICE, reason: str = "not needed"
) -> payments_pb2.Payment:
    response = await payments.stub().CancelPayment(
        P.CancelPaymentRequest(name=name, reason=reason, request_id=request_id()),
        metadata=payments.user(user),
    )
    return response.payment


STATUSES = [
    P.PAYMENT_STATUS_PENDING,
    P.PAYMENT_STATUS_PROCESSING,
    P.PAYMENT_STATUS_COMPLETED,
    P.PAYMENT_STATUS_FAILED,
    P.PAYMENT_STATUS_CANCELED,
    P.PAYMENT_STATUS_PARTIALLY_REFUNDED,
    P.PAYMENT_STATUS_REFUNDED,
]
NAMES: dict[int, str] = {
    value: P.PaymentStatus.Name(value).removeprefix("PAYMENT_STATUS_") for value in STATUSES
}


async def test_processing_an_approved_card_completes_it(payments: PaymentsHarness) -> None:
    created = await payments.create(card_payment("42.00"))
    done = await payments.process(created.name)
    assert done.status == P.PAYMENT_STATUS_COMPLETED
    assert done.provider == "sandbox"
    assert done.provider_reference.startswith("sbx_ch_")
    assert done.HasField("complete_time")
    assert done.etag != created.etag
    assert done.failure_code == ""
    assert await event_types(payments, created.name, wait_for=3) == [
        "payment.created",
        "payment.processing",
        "payment.processed",
    ]
    assert await payments.count("payments_ledger_transactions") == 1
    await ledger_ok(payments)


@pytest.mark.parametrize(
    ("card", "code"),
    [
        (DECLINE, "CARD_DECLINED"),
        (INSUFFICIENT, "INSUFFICIENT_FUNDS"),
        (EXPIRED, "CARD_EXPIRED"),
        (ERROR, "PROVIDER_ERROR"),
    ],
)
async def test_provider_declines_fail_the_payment_with_a_reason(
    payments: PaymentsHarness, card: str, code: str
) -> None:
    created = await payments.create(card_payment(card=card))
    failed = await payments.process(created.name)
    assert failed.status == P.PAYMENT_STATUS_FAILED
    assert failed.failure_code == code
    assert failed.failure_reason
    assert await event_types(payments, created.name, wait_for=3) == [
        "payment.created",
        "payment.processing",
        "payment.failed",
    ]
    assert await payments.count("payments_ledger_transactions") == 0
    await ledger_ok(payments)


async def test_canceling_a_pending_payment(payments: PaymentsHarness) -> None:
    created = await payments.create()
    canceled = await cancel(payments, created.name, reason="changed my mind")
    assert canceled.status == P.PAYMENT_STATUS_CANCELED
    assert canceled.cancel_reason == "changed my mind"
    assert await event_types(payments, created.name, wait_for=2) == [
        "payment.created",
        "payment.canceled",
    ]


ALLOWED_PROCESS = {P.PAYMENT_STATUS_PENDING}
ALLOWED_CANCEL = {P.PAYMENT_STATUS_PENDING}
ALLOWED_REFUND = {P.PAYMENT_STATUS_COMPLETED, P.PAYMENT_STATUS_PARTIALLY_REFUNDED}


@pytest.mark.parametrize("status", STATUSES, ids=lambda s: NAMES[s])
async def test_every_refused_transition_is_invalid_transition(
    payments: PaymentsHarness, status: int
) -> None:
    payment = await in_state(payments, status)
    assert payment.status == status
    stub = payments.stub()
    before = await payments.get(payment.name)
    attempts: list[tuple[str, Awaitable[object]]] = []
    if status not in ALLOWED_PROCESS:
        attempts.append(
            ("PROCESSING", stub.ProcessPayment(
                P.ProcessPaymentRequest(name=payment.name, request_id=request_id()),
                metadata=payments.staff(),
            ))
        )  # fmt: skip
    if status not in ALLOWED_CANCEL:
        attempts.append(
            ("CANCELED", stub.CancelPayment(
                P.CancelPaymentRequest(name=payment.name, request_id=request_id()),
                metadata=payments.staff(),
            ))
        )  # fmt: skip
    if status not in ALLOWED_REFUND:
        attempts.append(
            ("REFUNDED", stub.RefundPayment(
                P.RefundPaymentRequest(name=payment.name, reason="x", request_id=request_id()),
                metadata=payments.staff(),
            ))
        )  # fmt: skip
    for target, attempt in attempts:
        status_details = await refused(attempt, PRECONDITION, "INVALID_TRANSITION")
        assert error_info(status_details).metadata["from"] == NAMES[status]
        assert error_info(status_details).metadata["to"] == target
    # Refused means untouched.
    assert await payments.get(payment.name) == before


async def test_a_stale_etag_is_aborted(payments: PaymentsHarness) -> None:
    created = await payments.create()
    await refused(
        payments.stub().ProcessPayment(
            P.ProcessPaymentRequest(name=created.name, etag="999", request_id=request_id()),
            metadata=payments.staff(),
        ),
        grpc.StatusCode.ABORTED,
        "ETAG_MISMATCH",
    )
    await refused(
        payments.stub().CancelPayment(
            P.CancelPaymentRequest(name=created.name, etag="0", request_id=request_id()),
            metadata=payments.user(),
        ),
        grpc.StatusCode.ABORTED,
        "ETAG_MISMATCH",
    )
    done = await payments.process(created.name, etag=created.etag)
    assert done.status == P.PAYMENT_STATUS_COMPLETED
    await refused(
        payments.stub().RefundPayment(
            P.RefundPaymentRequest(
                name=done.name, reason="x", etag=created.etag, request_id=request_id()
            ),
            metadata=payments.staff(),
        ),
        grpc.StatusCode.ABORTED,
        "ETAG_MISMATCH",
    )


async def test_retrying_process_replays_the_first_result(payments: PaymentsHarness) -> None:
    created = await payments.create(card_payment(card=DECLINE))
    request = P.ProcessPaymentRequest(name=created.name, request_id=request_id())
    stub = payments.stub()
    first = await stub.ProcessPayment(request, metadata=payments.staff())
    again = await stub.ProcessPayment(request, metadata=payments.staff())
    assert again.payment == first.payment
    assert first.payment.status == P.PAYMENT_STATUS_FAILED
    provider = payments.app.provider
    assert getattr(provider, "calls", {})[created.name] == 1
    await refused(
        stub.ProcessPayment(
            P.ProcessPaymentRequest(name=created.name, etag="1", request_id=request.request_id),
            metadata=payments.staff(),
        ),
        grpc.StatusCode.ALREADY_EXISTS,
        "REQUEST_ID_REUSED",
    )


async def test_retrying_cancel_replays_and_a_refused_call_can_be_retried(
    payments: PaymentsHarness,
) -> None:
    created = await payments.create()
    request = P.CancelPaymentRequest(name=created.name, request_id=request_id())
    stub = payments.stub()
    too_long = P.CancelPaymentRequest(
        name=created.name, reason="r" * 501, request_id=request.request_id
    )
    await refused(
        stub.CancelPayment(too_long, metadata=payments.user()),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_REASON",
    )
    # The refused call stored nothing under its request id.
    first = await stub.CancelPayment(request, metadata=payments.user())
    again = await stub.CancelPayment(request, metadata=payments.user())
    assert first.payment == again.payment
    assert first.payment.status == P.PAYMENT_STATUS_CANCELED


async def test_who_may_act(payments: PaymentsHarness) -> None:
    mine = await payments.create()
    stub = payments.stub()
    # Strangers may not cancel; neither missing nor existing payments can be probed.
    for name in (mine.name, "payments/01J00000000000000000000000"):
        await refused(
            stub.CancelPayment(
                P.CancelPaymentRequest(name=name, request_id=request_id()),
                metadata=payments.user(BOB),
            ),
            grpc.StatusCode.PERMISSION_DENIED,
            "PERMISSION_MISSING",
        )
    # Staff with payments.manage cancel anyone's, and get NOT_FOUND for missing ones.
    await refused(
        stub.CancelPayment(
            P.CancelPaymentRequest(
                name="payments/01J00000000000000000000000", request_id=request_id()
            ),
            metadata=payments.staff("payments.manage"),
        ),
        grpc.StatusCode.NOT_FOUND,
        "PAYMENT_NOT_FOUND",
    )
    # The contract's access rule on ProcessPayment is payments.process; payments.refund
    # likewise for RefundPayment.
    await refused(
        stub.ProcessPayment(
            P.ProcessPaymentRequest(name=mine.name, request_id=request_id()),
            metadata=payments.user(ALICE, ("payments.create",)),
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        "PERMISSION_MISSING",
    )
    done = await payments.process(mine.name, metadata=payments.user(ALICE))
    await refused(
        stub.RefundPayment(
            P.RefundPaymentRequest(name=done.name, reason="x", request_id=request_id()),
            metadata=payments.user(ALICE),
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        "PERMISSION_MISSING",
    )
    canceled = await cancel(payments, (await payments.create()).name, user=ALICE)
    assert canceled.status == P.PAYMENT_STATUS_CANCELED
