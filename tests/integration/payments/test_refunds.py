"""Refunds: partial to the cent in 2-, 0- and 3-decimal currencies, never above what is left,
each its own request id, a balanced ledger throughout."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.rpc import error_details_pb2
from google.type import money_pb2

from gatehouse.payments.v1 import events_pb2, payments_pb2
from tests.integration.payments.harness import (
    DECLINE,
    PaymentsHarness,
    card_payment,
    event_types,
    events_about,
    ledger_ok,
    money,
    refused,
    request_id,
)
from tests.support.grpc_calls import detail, error_info

P = payments_pb2


def amount_of(value: payments_pb2.Payment) -> tuple[int, int]:
    return value.refunded_amount.units, value.refunded_amount.nanos


@pytest.mark.parametrize(
    ("total", "currency", "parts", "too_much", "left"),
    [
        ("10.00", "USD", ["3.33", "3.33", "3.33"], "0.02", "0.01"),
        ("1500", "JPY", ["1", "499", "999"], "2", "1"),
        ("1.234", "KWD", ["0.001", "0.333", "0.899"], "0.002", "0.001"),
        ("0.010", "BHD", ["0.003", "0.003", "0.003"], "0.002", "0.001"),
    ],
)
async def test_partial_refunds_to_the_smallest_unit(
    payments: PaymentsHarness,
    total: str,
    currency: str,
    parts: list[str],
    too_much: str,
    left: str,
) -> None:
    done = await payments.completed(total, currency)
    for part in parts:
        response = await payments.refund(done.name, money(part, currency))
        assert response.refund.status == P.REFUND_STATUS_SUCCEEDED
        assert response.payment.status == P.PAYMENT_STATUS_PARTIALLY_REFUNDED
        assert response.refund.name.startswith(f"{done.name}/refunds/")
        assert response.payment.refunds[-1] == response.refund
    status = await refused(
        payments.stub().RefundPayment(
            P.RefundPaymentRequest(
                name=done.name,
                amount=money(too_much, currency),
                reason="too much",
                request_id=request_id(),
            ),
            metadata=payments.staff(),
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "REFUND_EXCEEDS_BALANCE",
    )
    assert dict(error_info(status).metadata) == {"refundable": left, "currency_code": currency}
    rest = await payments.refund(done.name)  # no amount: whatever is left
    assert rest.refund.amount == money(left, currency)
    assert rest.payment.status == P.PAYMENT_STATUS_REFUNDED
    assert rest.payment.refunded_amount == money(total, currency)
    assert len(rest.payment.refunds) == len(parts) + 1
    assert await event_types(payments, done.name, wait_for=3 + len(parts) + 1) == [
        "payment.created",
        "payment.processing",
        "payment.processed",
        *["payment.refunded"] * (len(parts) + 1),
    ]
    await ledger_ok(payments)


async def test_the_refunded_event_carries_the_running_totals(payments: PaymentsHarness) -> None:
    done = await payments.completed("10.00")
    await payments.refund(done.name, money("2.50"), reason="broken gate")
    events = await events_about(payments, done.name, wait_for=4)
    (refunded,) = [e for e in events if e.type == "payment.refunded"]
    data = events_pb2.PaymentRefunded()
    assert refunded.data.Unpack(data)
    assert (data.refund_amount, data.refunded_amount, data.remaining_amount) == (
        money("2.50"),
        money("2.50"),
        money("7.50"),
    )
    assert data.status == P.PAYMENT_STATUS_PARTIALLY_REFUNDED
    assert data.reason == "broken gate"


@pytest.mark.parametrize(
    ("amount", "reason", "field"),
    [
        (money("1.00", "EUR"), "CURRENCY_MISMATCH", "amount.currency_code"),
        (money("0.001"), "AMOUNT_PRECISION_EXCEEDED", "amount"),
        (money("0"), "INVALID_AMOUNT", "amount"),
        (money("-1.00"), "INVALID_AMOUNT", "amount"),
    ],
)
async def test_bad_refund_amounts(
    payments: PaymentsHarness, amount: money_pb2.Money, reason: str, field: str
) -> None:
    done = await payments.completed("10.00")
    status = await refused(
        payments.stub().RefundPayment(
            P.RefundPaymentRequest(
                name=done.name, amount=amount, reason="x", request_id=request_id()
            ),
            metadata=payments.staff(),
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        reason,
    )
    assert [v.field for v in detail(status, error_details_pb2.BadRequest).field_violations] == [
        field
    ]
    assert await payments.count("payments_refunds") == 0


async def test_a_refund_needs_a_reason_of_reasonable_length(payments: PaymentsHarness) -> None:
    done = await payments.completed()
    for reason in ("", "   ", "r" * 501):
        await refused(
            payments.stub().RefundPayment(
                P.RefundPaymentRequest(name=done.name, reason=reason, request_id=request_id()),
                metadata=payments.staff(),
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_REASON",
        )


async def test_a_failed_payment_cannot_be_refunded_and_nothing_is_written(
    payments: PaymentsHarness,
) -> None:
    failed = await payments.process((await payments.create(card_payment(card=DECLINE))).name)
    before = (await payments.count("outbox_events"), await payments.count("idempotency_records"))
    await refused(
        payments.stub().RefundPayment(
            P.RefundPaymentRequest(
                name=failed.name, amount=money("1.00"), reason="x", request_id=request_id()
            ),
            metadata=payments.staff(),
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "INVALID_TRANSITION",
    )
    assert await payments.count("payments_refunds") == 0
    after = (await payments.count("outbox_events"), await payments.count("idempotency_records"))
    assert after == before
    assert (await payments.get(failed.name)) == failed


async def test_each_refund_has_its_own_request_id(payments: PaymentsHarness) -> None:
    done = await payments.completed("10.00")
    request = P.RefundPaymentRequest(
        name=done.name, amount=money("4.00"), reason="x", request_id=request_id()
    )
    stub = payments.stub()
    first = await stub.RefundPayment(request, metadata=payments.staff())
    again = await stub.RefundPayment(request, metadata=payments.staff())
    assert again == first
    assert await payments.count("payments_refunds") == 1
    await refused(
        stub.RefundPayment(
            P.RefundPaymentRequest(
                name=done.name,
                amount=money("5.00"),
                reason="x",
                request_id=request.request_id,
            ),
            metadata=payments.staff(),
        ),
        grpc.StatusCode.ALREADY_EXISTS,
        "REQUEST_ID_REUSED",
    )


async def test_concurrent_refunds_never_exceed_the_amount(payments: PaymentsHarness) -> None:
    done = await payments.completed("10.00")
    stub = payments.stub()
    results = await asyncio.gather(
        *(
            stub.RefundPayment(
                P.RefundPaymentRequest(
                    name=done.name, amount=money("3.00"), reason="x", request_id=request_id()
                ),
                metadata=payments.staff(),
            )
            for _ in range(6)
        ),
        return_exceptions=True,
    )
    ok = [r for r in results if isinstance(r, P.RefundPaymentResponse)]
    refused_ = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(ok) == 3
    assert len(refused_) == 3
    assert all(e.code() == grpc.StatusCode.FAILED_PRECONDITION for e in refused_)
    final = await payments.get(done.name)
    assert final.refunded_amount == money("9.00")
    await ledger_ok(payments)
