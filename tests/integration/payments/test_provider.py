"""The provider adapter's hard cases: declines, timeouts, an unreachable provider, and the
reconciler settling what was left open without ever charging twice."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2

from gatehouse.payments.handlers.ports import (
    ChargeRequest,
    ProviderDecision,
    ProviderTimeoutError,
    ProviderUnavailableError,
    RefundRequest,
)
from gatehouse.payments.v1 import payments_pb2
from gatehouse.runtime.config import Settings
from tests.integration.payments.harness import (
    TIMEOUT,
    PaymentsHarness,
    card_payment,
    event_types,
    fast_settings,
    ledger_ok,
    money,
    refused,
    request_id,
    running_payments,
)
from tests.support.grpc_calls import detail

P = payments_pb2


@dataclass
class RecordingProvider:
    """A provider with memory, like a real one: it keeps what it charged per idempotency key.

    `mode` says what the next calls do: "approve", "decline", "lose_reply" (charges, then
    the answer never arrives), "unreachable" (nothing reaches it; raises mid-call), "down"
    (known down before any call).
    """

    name: str = "recording"
    accepts_test_cards: bool = True
    mode: str = "approve"
    refund_mode: str = "approve"
    charges: dict[str, ProviderDecision] = field(default_factory=dict)
    refunds: dict[str, ProviderDecision] = field(default_factory=dict)
    charge_calls: int = 0

    def check_available(self) -> None:
        if self.mode == "down":
            raise ProviderUnavailableError("circuit open")

    async def charge(self, request: ChargeRequest, *, timeout: timedelta) -> ProviderDecision:
        self.charge_calls += 1
        if self.mode == "unreachable":
            raise ProviderUnavailableError("connection refused")
        key = request.idempotency_key
        if key not in self.charges:  # idempotent: a key is charged once
            self.charges[key] = (
                ProviderDecision(False, f"ch_{len(self.charges)}", "CARD_DECLINED", "no")
                if self.mode == "decline"
                else ProviderDecision(True, f"ch_{len(self.charges)}")
            )
        if self.mode == "lose_reply":
            raise ProviderTimeoutError(key)
        return self.charges[key]

    async def find_charge(
        self, request: ChargeRequest, *, timeout: timedelta
    ) -> ProviderDecision | None:
        return self.charges.get(request.idempotency_key)

    async def refund(self, request: RefundRequest, *, timeout: timedelta) -> ProviderDecision:
        key = request.idempotency_key
        if key not in self.refunds:
            self.refunds[key] = (
                ProviderDecision(False, "re_x", "PROVIDER_REJECTED", "not refundable")
                if self.refund_mode == "decline"
                else ProviderDecision(True, f"re_{len(self.refunds)}")
            )
        if self.refund_mode == "lose_reply":
            raise ProviderTimeoutError(key)
        return self.refunds[key]

    async def find_refund(
        self, request: RefundRequest, *, timeout: timedelta
    ) -> ProviderDecision | None:
        return self.refunds.get(request.idempotency_key)


@dataclass
class Recorded:
    harness: PaymentsHarness
    provider: RecordingProvider


@pytest.fixture
async def recorded(
    database_url: str, settings: Settings, certs_dir: Path
) -> AsyncIterator[Recorded]:
    provider = RecordingProvider()
    async with running_payments(database_url, settings, certs_dir, provider=provider) as harness:
        yield Recorded(harness, provider)


async def overdue(harness: PaymentsHarness) -> None:
    """Let the reconciler's waiting period pass."""
    harness.let_overdue()


async def test_a_sandbox_timeout_stays_processing_until_reconciled(
    payments: PaymentsHarness,
) -> None:
    created = await payments.create(card_payment(card=TIMEOUT))
    request = P.ProcessPaymentRequest(name=created.name, request_id=request_id())
    stub = payments.stub()
    first = await stub.ProcessPayment(request, metadata=payments.staff())
    assert first.payment.status == P.PAYMENT_STATUS_PROCESSING
    assert first.payment.failure_code == ""
    # Not overdue yet: the reconciler leaves calls that may still be in flight alone.
    await payments.app.reconcile()
    assert (await payments.get(created.name)).status == P.PAYMENT_STATUS_PROCESSING
    await overdue(payments)
    await payments.app.reconcile()
    settled = await payments.get(created.name)
    assert settled.status == P.PAYMENT_STATUS_COMPLETED
    assert settled.provider_reference.startswith("sbx_ch_")
    # A retry of the original call still gets what that call answered.
    again = await stub.ProcessPayment(request, metadata=payments.staff())
    assert again.payment == first.payment
    assert getattr(payments.app.provider, "calls", {})[created.name] == 1
    assert await event_types(payments, created.name, wait_for=3) == [
        "payment.created",
        "payment.processing",
        "payment.processed",
    ]
    await payments.app.reconcile()  # nothing left to do; nothing done twice
    assert await payments.count("payments_ledger_transactions") == 1
    await ledger_ok(payments)


async def test_the_background_reconciler_settles_on_its_own(
    database_url: str, settings: Settings, certs_dir: Path
) -> None:
    quick = fast_settings(reconcile_interval=timedelta(milliseconds=100))
    async with running_payments(
        database_url, settings, certs_dir, payments_settings=quick, reconciler=True
    ) as payments:
        created = await payments.create(card_payment(card=TIMEOUT))
        assert (await payments.process(created.name)).status == P.PAYMENT_STATUS_PROCESSING
        payments.let_overdue()
        for _ in range(100):
            if (await payments.get(created.name)).status == P.PAYMENT_STATUS_COMPLETED:
                break
            await asyncio.sleep(0.05)
        assert (await payments.get(created.name)).status == P.PAYMENT_STATUS_COMPLETED
        await ledger_ok(payments)


async def test_a_lost_reply_is_found_by_the_reconciler_not_charged_again(
    recorded: Recorded,
) -> None:
    payments, provider = recorded.harness, recorded.provider
    created = await payments.create()
    provider.mode = "lose_reply"
    assert (await payments.process(created.name)).status == P.PAYMENT_STATUS_PROCESSING
    provider.mode = "approve"
    await overdue(payments)
    await payments.app.reconcile()
    assert (await payments.get(created.name)).status == P.PAYMENT_STATUS_COMPLETED
    assert provider.charge_calls == 1
    assert list(provider.charges) == [created.name]
    await ledger_ok(payments)


async def test_a_charge_that_never_arrived_is_sent_again_with_the_same_key(
    recorded: Recorded,
) -> None:
    payments, provider = recorded.harness, recorded.provider
    created = await payments.create()
    provider.mode = "unreachable"
    assert (await payments.process(created.name)).status == P.PAYMENT_STATUS_PROCESSING
    assert provider.charges == {}
    provider.mode = "decline"
    await overdue(payments)
    await payments.app.reconcile()
    failed = await payments.get(created.name)
    assert (failed.status, failed.failure_code) == (P.PAYMENT_STATUS_FAILED, "CARD_DECLINED")
    assert list(provider.charges) == [created.name]
    assert await event_types(payments, created.name, wait_for=3) == [
        "payment.created",
        "payment.processing",
        "payment.failed",
    ]


async def test_an_unreachable_provider_is_unavailable_and_writes_nothing(
    recorded: Recorded,
) -> None:
    payments, provider = recorded.harness, recorded.provider
    created = await payments.create()
    provider.mode = "down"
    request = P.ProcessPaymentRequest(name=created.name, request_id=request_id())
    status = await refused(
        payments.stub().ProcessPayment(request, metadata=payments.staff()),
        grpc.StatusCode.UNAVAILABLE,
        "PROVIDER_UNAVAILABLE",
    )
    assert detail(status, error_details_pb2.RetryInfo).retry_delay.seconds > 0
    assert await payments.get(created.name) == created
    assert await payments.count("idempotency_records") == 1  # CreatePayment's only
    assert provider.charge_calls == 0
    provider.mode = "approve"
    retried = await payments.stub().ProcessPayment(request, metadata=payments.staff())
    assert retried.payment.status == P.PAYMENT_STATUS_COMPLETED


async def test_a_declined_refund_leaves_the_payment_as_it_was(recorded: Recorded) -> None:
    payments, provider = recorded.harness, recorded.provider
    done = await payments.completed("10.00")
    provider.refund_mode = "decline"
    response = await payments.refund(done.name, money("4.00"))
    assert response.refund.status == P.REFUND_STATUS_FAILED
    assert response.refund.failure_code == "PROVIDER_REJECTED"
    assert response.payment.status == P.PAYMENT_STATUS_COMPLETED
    assert response.payment.refunded_amount == money("0", "USD")
    provider.refund_mode = "approve"
    full = await payments.refund(done.name)
    assert full.refund.amount == money("10.00")
    await ledger_ok(payments)


async def test_a_refund_timeout_reserves_its_amount_until_reconciled(recorded: Recorded) -> None:
    payments, provider = recorded.harness, recorded.provider
    done = await payments.completed("10.00")
    provider.refund_mode = "lose_reply"
    pending = await payments.refund(done.name, money("6.00"))
    assert pending.refund.status == P.REFUND_STATUS_PENDING
    assert pending.payment.status == P.PAYMENT_STATUS_COMPLETED
    # The pending 6.00 is reserved: only 4.00 may still be refunded.
    await refused(
        payments.stub().RefundPayment(
            P.RefundPaymentRequest(
                name=done.name, amount=money("5.00"), reason="x", request_id=request_id()
            ),
            metadata=payments.staff(),
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "REFUND_EXCEEDS_BALANCE",
    )
    provider.refund_mode = "approve"
    await overdue(payments)
    await payments.app.reconcile()
    settled = await payments.get(done.name)
    assert settled.status == P.PAYMENT_STATUS_PARTIALLY_REFUNDED
    assert settled.refunds[0].status == P.REFUND_STATUS_SUCCEEDED
    assert settled.refunded_amount == money("6.00")
    assert len(provider.refunds) == 1
    await ledger_ok(payments)
