"""The ledger's own checks: unbalanced transactions are never built, and `verify` finds
every kind of disagreement between the ledger and the payments."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gatehouse.payments.domain.ledger import (
    AccountBalance,
    LedgerEntry,
    LedgerTransaction,
    PaymentBalance,
    ProblemKind,
    TransactionKind,
    TransactionSum,
    UnbalancedTransactionError,
    verify,
)
from gatehouse.payments.domain.money import Money
from gatehouse.payments.domain.payments import PaymentStatus

NOW = datetime(2025, 1, 1, tzinfo=UTC)


def test_a_transaction_must_balance() -> None:
    with pytest.raises(UnbalancedTransactionError):
        LedgerTransaction(
            "t", TransactionKind.CHARGE, "p", "USD", NOW,
            (LedgerEntry("provider/sandbox", 100), LedgerEntry("payments/p", -99)),
        )  # fmt: skip
    with pytest.raises(UnbalancedTransactionError):
        LedgerTransaction("t", TransactionKind.CHARGE, "p", "USD", NOW, (LedgerEntry("a", 0),))


def balance(status: PaymentStatus, amount: int, refunded: int, account: int) -> PaymentBalance:
    return PaymentBalance(
        "p1", status, "sandbox", Money(amount, "USD"), Money(refunded, "USD"), account, refunded
    )


def test_a_sound_ledger_passes() -> None:
    report = verify(
        [TransactionSum("t1", "USD", 2, 0), TransactionSum("t2", "USD", 2, 0)],
        [balance(PaymentStatus.PARTIALLY_REFUNDED, 1000, 300, -700)],
        [AccountBalance("provider/sandbox", "USD", 700)],
    )
    assert report.ok
    assert (report.transactions, report.payments) == (2, 1)


def test_every_disagreement_is_reported() -> None:
    report = verify(
        [TransactionSum("t1", "USD", 2, 5), TransactionSum("t2", "USD", 1, 0),
         TransactionSum("t3", "USD", 2, 0, foreign_entries=1)],
        [balance(PaymentStatus.COMPLETED, 1000, 0, -900),
         PaymentBalance("p2", PaymentStatus.REFUNDED, "sandbox", Money(10, "USD"),
                        Money(20, "USD"), 10, 5)],
        [AccountBalance("provider/sandbox", "USD", 1)],
    )  # fmt: skip
    kinds = [problem.kind for problem in report.problems]
    assert kinds.count(ProblemKind.UNBALANCED_TRANSACTION) == 3
    assert ProblemKind.PAYMENT_BALANCE_MISMATCH in kinds
    assert ProblemKind.REFUNDS_MISMATCH in kinds
    assert ProblemKind.OVER_REFUNDED in kinds
    assert ProblemKind.PROVIDER_BALANCE_MISMATCH in kinds


def test_money_the_provider_should_hold_but_has_no_entries_for_is_reported() -> None:
    report = verify([], [balance(PaymentStatus.COMPLETED, 1000, 0, -1000)], [])
    assert [p.kind for p in report.problems] == [ProblemKind.PROVIDER_BALANCE_MISMATCH]


def test_uncaptured_payments_hold_nothing() -> None:
    for status in (PaymentStatus.PENDING, PaymentStatus.PROCESSING, PaymentStatus.FAILED):
        assert verify([], [balance(status, 1000, 0, 0)], []).ok
        assert not verify([], [balance(status, 1000, 0, -1000)], []).ok
