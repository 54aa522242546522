"""Test cards, IBANs, page tokens, snapshots and the sandbox provider's decisions."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from gatehouse.payments.adapters import snapshots
from gatehouse.payments.adapters.sandbox import SandboxProvider
from gatehouse.payments.domain.instruments import (
    TEST_CARDS,
    TestCardOutcome,
    card_brand,
    iban_problem,
    normalize_iban,
)
from gatehouse.payments.domain.money import Money
from gatehouse.payments.domain.payments import (
    Actor,
    BankTransferInfo,
    Payment,
    PaymentMethod,
    PaymentSource,
    PaymentStatus,
    SourceKind,
    WalletInfo,
    WalletType,
)
from gatehouse.payments.handlers.ports import (
    ChargeRequest,
    PageCursor,
    PaymentFilter,
    ProviderTimeoutError,
)
from gatehouse.payments.handlers.queries import (
    INVALID_PAGE_TOKEN,
    decode_page_token,
    encode_page_token,
    query_fingerprint,
)
from gatehouse.runtime.errors import InvalidArgument

NOW = datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


def test_the_documented_test_cards() -> None:
    assert TEST_CARDS == {
        "4242424242424242": TestCardOutcome.APPROVE,
        "4000000000000002": TestCardOutcome.DECLINE,
        "4000000000009995": TestCardOutcome.INSUFFICIENT_FUNDS,
        "4000000000000069": TestCardOutcome.EXPIRED,
        "4000000000000119": TestCardOutcome.PROVIDER_ERROR,
        "4000000000000259": TestCardOutcome.TIMEOUT,
    }
    assert card_brand("4242424242424242") == "visa"
    assert card_brand("5555555555554444") == "mastercard"


@pytest.mark.parametrize(
    "iban", ["DE89 3704 0044 0532 0130 00", "GB82WEST12345698765432", "fr1420041010050500013m02606"]
)
def test_valid_ibans(iban: str) -> None:
    assert iban_problem(normalize_iban(iban)) is None


@pytest.mark.parametrize(
    ("iban", "problem"),
    [
        ("DE89370400440532013001", "check digits"),
        ("DE8937040044053201300", "has 22 characters"),
        ("12345", "country code"),
    ],
)
def test_invalid_ibans(iban: str, problem: str) -> None:
    found = iban_problem(normalize_iban(iban))
    assert found is not None
    assert problem in found


def test_page_tokens_are_bound_to_their_query() -> None:
    mine = query_fingerprint(PaymentFilter(visible_to="users/a"), newest_first=True)
    cursor = PageCursor(NOW, "01J00000000000000000000000")
    token = encode_page_token(mine, cursor)
    assert decode_page_token(token, mine) == cursor
    for other in (
        PaymentFilter(visible_to="users/b"),
        PaymentFilter(visible_to="users/a", currency="USD"),
    ):
        with pytest.raises(InvalidArgument) as raised:
            decode_page_token(token, query_fingerprint(other, newest_first=True))
        assert raised.value.reason == INVALID_PAGE_TOKEN
    with pytest.raises(InvalidArgument):
        decode_page_token(token, query_fingerprint(PaymentFilter("users/a"), newest_first=False))
    for garbage in ("x", "pt1.!!!", "pt1.e30", token[:-3]):
        with pytest.raises(InvalidArgument) as raised:
            decode_page_token(garbage, mine)
        assert raised.value.reason == INVALID_PAGE_TOKEN


def sample() -> Payment:
    payment = Payment(
        id="01J00000000000000000000000",
        payer="users/alice",
        creator=Actor("users/staff", "spiffe://gatehouse/envoy", "10.0.0.1"),
        amount=Money(1234, "KWD"),
        method=PaymentMethod.BANK_TRANSFER,
        method_info=BankTransferInfo("Alice", "3000", "DEUTDEFF", "GH-1"),
        description="rent",
        metadata={"invoice": "INV-1"},
        create_time=NOW,
        update_time=NOW,
    )
    payment.start_processing("sandbox", NOW)
    payment.complete("ch_1", NOW + timedelta(seconds=1))
    refund = payment.request_refund("01J00000000000000000000001", None, "r", Actor("u"), NOW)
    payment.settle_refund(refund.id, "re_1", NOW)
    return payment


def test_snapshots_round_trip_and_carry_no_bookkeeping() -> None:
    payment = sample()
    payment.pending_reply = "scope\nid"
    restored = snapshots.payment_from_json(snapshots.payment_to_json(payment))
    assert restored == replace(payment, pending_reply="")
    assert restored.status is PaymentStatus.REFUNDED
    wallet = replace(
        sample(), method=PaymentMethod.WALLET, method_info=WalletInfo(WalletType.PAYPAL)
    )
    assert snapshots.payment_from_json(snapshots.payment_to_json(wallet)) == wallet


def charge(card: str) -> ChargeRequest:
    return ChargeRequest(
        "payments/p1",
        Money(100, "USD"),
        PaymentMethod.CARD,
        PaymentSource(SourceKind.TEST_CARD, card),
        "",
    )


async def test_the_sandbox_decides_by_card_and_references_are_stable() -> None:
    sandbox = SandboxProvider()
    timeout = timedelta(milliseconds=50)
    approved = await sandbox.charge(charge("4242424242424242"), timeout=timeout)
    assert approved.approved
    assert approved.card is not None
    assert approved.card.last4 == "4242"
    assert approved == await sandbox.find_charge(charge("4242424242424242"), timeout=timeout)
    for card, code in (
        ("4000000000000002", "CARD_DECLINED"),
        ("4000000000009995", "INSUFFICIENT_FUNDS"),
        ("4000000000000069", "CARD_EXPIRED"),
        ("4000000000000119", "PROVIDER_ERROR"),
    ):
        decision = await sandbox.charge(charge(card), timeout=timeout)
        assert (decision.approved, decision.failure_code) == (False, code)
        assert decision.failure_reason
    with pytest.raises(ProviderTimeoutError):
        await sandbox.charge(charge("4000000000000259"), timeout=timeout)
    later = await sandbox.find_charge(charge("4000000000000259"), timeout=timeout)
    assert later is not None
    assert later.approved
    assert sandbox.calls["payments/p1"] == 6
