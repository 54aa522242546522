"""The payment state machine: every transition, allowed and refused, and refund balances."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest

from gatehouse.payments.domain.money import Money
from gatehouse.payments.domain.payments import (
    ALLOWED_TRANSITIONS,
    INVALID_TRANSITION,
    REFUND_EXCEEDS_BALANCE,
    Actor,
    CardInfo,
    Payment,
    PaymentMethod,
    PaymentStatus,
    RefundStatus,
    check_transition,
)
from gatehouse.runtime.errors import FailedPrecondition

NOW = datetime(2025, 1, 1, tzinfo=UTC)
S = PaymentStatus
EXPECTED = {
    (S.PENDING, S.PROCESSING),
    (S.PENDING, S.CANCELED),
    (S.PROCESSING, S.COMPLETED),
    (S.PROCESSING, S.FAILED),
    (S.COMPLETED, S.PARTIALLY_REFUNDED),
    (S.COMPLETED, S.REFUNDED),
    (S.PARTIALLY_REFUNDED, S.PARTIALLY_REFUNDED),
    (S.PARTIALLY_REFUNDED, S.REFUNDED),
}


def payment(amount: int = 1000, currency: str = "USD") -> Payment:
    return Payment(
        id="01J0000000000000000000000A",
        payer="users/alice",
        creator=Actor(user="users/alice"),
        amount=Money(amount, currency),
        method=PaymentMethod.CARD,
        method_info=CardInfo(brand="visa", last4="4242"),
        description="",
        metadata={},
        create_time=NOW,
        update_time=NOW,
    )


def completed(amount: int = 1000, currency: str = "USD") -> Payment:
    p = payment(amount, currency)
    p.start_processing("sandbox", NOW)
    p.complete("ref", NOW)
    return p


@pytest.mark.parametrize(
    ("source", "target"), list(itertools.product(PaymentStatus, PaymentStatus))
)
def test_transition_table(source: PaymentStatus, target: PaymentStatus) -> None:
    allowed = (source, target) in EXPECTED
    assert (target in ALLOWED_TRANSITIONS[source]) is allowed
    if allowed:
        check_transition(source, target)
    else:
        with pytest.raises(FailedPrecondition) as raised:
            check_transition(source, target)
        assert raised.value.reason == INVALID_TRANSITION
        assert raised.value.metadata == {"from": source.value, "to": target.value}


def test_each_change_bumps_the_version_and_a_refusal_changes_nothing() -> None:
    p = payment()
    assert p.etag == "1"
    p.start_processing("sandbox", NOW)
    assert (p.status, p.version, p.provider) == (S.PROCESSING, 2, "sandbox")
    before = p.snapshot()
    with pytest.raises(FailedPrecondition):
        p.cancel("too late", NOW)
    assert p == before
    p.fail("CARD_DECLINED", "declined", NOW)
    assert (p.status, p.version, p.failure_code) == (S.FAILED, 3, "CARD_DECLINED")


def test_partial_refunds_to_the_cent_then_full() -> None:
    p = completed(1000)
    first = p.request_refund("r1", Money(333, "USD"), "one", Actor(), NOW)
    assert p.refundable() == Money(667, "USD")  # the pending one is reserved
    p.settle_refund(first.id, "re1", NOW)
    assert (p.status, p.refunded_amount) == (S.PARTIALLY_REFUNDED, Money(333, "USD"))
    second = p.request_refund("r2", Money(666, "USD"), "two", Actor(), NOW)
    p.settle_refund(second.id, "re2", NOW)
    assert p.status is S.PARTIALLY_REFUNDED
    last = p.request_refund("r3", None, "rest", Actor(), NOW)
    assert last.amount == Money(1, "USD")
    p.settle_refund(last.id, "re3", NOW)
    assert (p.status, p.refunded_amount, p.refundable()) == (
        S.REFUNDED,
        Money(1000, "USD"),
        Money(0, "USD"),
    )


def test_refund_above_the_balance_is_refused_with_the_balance() -> None:
    p = completed(1234, "KWD")
    p.request_refund("r1", Money(1000, "KWD"), "one", Actor(), NOW)
    before = p.snapshot()
    with pytest.raises(FailedPrecondition) as raised:
        p.request_refund("r2", Money(235, "KWD"), "two", Actor(), NOW)
    assert raised.value.reason == REFUND_EXCEEDS_BALANCE
    assert raised.value.metadata == {"refundable": "0.234", "currency_code": "KWD"}
    assert p == before


@pytest.mark.parametrize("status", [S.PENDING, S.PROCESSING, S.FAILED, S.CANCELED])
def test_refunds_need_a_captured_payment(status: PaymentStatus) -> None:
    p = payment()
    if status is not S.PENDING:
        if status is S.CANCELED:
            p.cancel("no", NOW)
        else:
            p.start_processing("sandbox", NOW)
            if status is S.FAILED:
                p.fail("CARD_DECLINED", "no", NOW)
    with pytest.raises(FailedPrecondition) as raised:
        p.request_refund("r", None, "why", Actor(), NOW)
    assert raised.value.reason == INVALID_TRANSITION
    assert raised.value.metadata == {"from": status.value, "to": S.REFUNDED.value}


def test_a_refunded_payment_takes_no_more_refunds() -> None:
    p = completed(100)
    refund = p.request_refund("r", None, "all", Actor(), NOW)
    p.settle_refund(refund.id, "x", NOW)
    with pytest.raises(FailedPrecondition) as raised:
        p.request_refund("r2", Money(1, "USD"), "more", Actor(), NOW)
    assert raised.value.reason == INVALID_TRANSITION


def test_a_failed_refund_releases_its_reservation() -> None:
    p = completed(100)
    refund = p.request_refund("r", Money(60, "USD"), "x", Actor(), NOW)
    p.fail_refund(refund.id, "PROVIDER_REJECTED", "no", NOW)
    assert refund.status is RefundStatus.FAILED
    assert p.status is S.COMPLETED
    assert p.refundable() == Money(100, "USD")
    with pytest.raises(FailedPrecondition):
        p.settle_refund(refund.id, "late", NOW)
