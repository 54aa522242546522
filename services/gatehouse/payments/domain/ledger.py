"""The double-entry ledger: every money movement is a transaction whose entries sum to zero.

Entries are signed minor units: debits positive, credits negative. Two kinds of account:

- `provider/{provider}`: what the payment provider holds for us (an asset; debit-normal);
- `payments/{payment}`: the payment's own account (credit-normal): a charge credits it with
  the amount, each refund debits it back.

So for every payment, the balance of its account is `-(captured - refunded)`, where captured
is the amount once the charge succeeded; and per currency the provider accounts hold exactly
the net of all payments. `verify` checks both, plus that each transaction balances.
"""

from __future__ import annotations

import enum
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from gatehouse.payments.domain.money import Money
from gatehouse.payments.domain.payments import (
    CAPTURED_STATUSES,
    Payment,
    PaymentStatus,
    Refund,
)


class UnbalancedTransactionError(ValueError):
    """A transaction whose entries do not sum to zero: a bug, never written."""


class TransactionKind(enum.StrEnum):
    CHARGE = "CHARGE"
    REFUND = "REFUND"


PROVIDER_ACCOUNT_PREFIX = "provider/"
PAYMENT_ACCOUNT_PREFIX = "payments/"


def provider_account(provider: str) -> str:
    return f"{PROVIDER_ACCOUNT_PREFIX}{provider}"


def payment_account(payment_id: str) -> str:
    return f"{PAYMENT_ACCOUNT_PREFIX}{payment_id}"


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    account: str
    amount: int  # minor units; debit > 0, credit < 0


@dataclass(frozen=True, slots=True)
class LedgerTransaction:
    id: str
    kind: TransactionKind
    payment_id: str
    currency: str
    time: datetime
    entries: tuple[LedgerEntry, ...]
    refund_id: str | None = None

    def __post_init__(self) -> None:
        if len(self.entries) < 2:
            raise UnbalancedTransactionError("a transaction needs at least two entries")
        if any(entry.amount == 0 for entry in self.entries):
            raise UnbalancedTransactionError("a zero entry moves nothing")
        if sum(entry.amount for entry in self.entries) != 0:
            raise UnbalancedTransactionError(f"transaction {self.id} does not balance")


def charge_transaction(payment: Payment, transaction_id: str, time: datetime) -> LedgerTransaction:
    """The provider took `amount` from the payer for us."""
    amount = payment.amount
    return LedgerTransaction(
        id=transaction_id,
        kind=TransactionKind.CHARGE,
        payment_id=payment.id,
        currency=amount.currency,
        time=time,
        entries=(
            LedgerEntry(provider_account(payment.provider), amount.minor),
            LedgerEntry(payment_account(payment.id), -amount.minor),
        ),
    )


def refund_transaction(
    payment: Payment, refund: Refund, transaction_id: str, time: datetime
) -> LedgerTransaction:
    """The provider gave `refund.amount` back to the payer from what it held for us."""
    amount = refund.amount
    return LedgerTransaction(
        id=transaction_id,
        kind=TransactionKind.REFUND,
        payment_id=payment.id,
        refund_id=refund.id,
        currency=amount.currency,
        time=time,
        entries=(
            LedgerEntry(payment_account(payment.id), amount.minor),
            LedgerEntry(provider_account(payment.provider), -amount.minor),
        ),
    )


def expected_payment_balance(status: PaymentStatus, amount: Money, refunded: Money) -> int:
    """What the payment's own account must hold (credit-normal, so <= 0)."""
    if status not in CAPTURED_STATUSES:
        return 0
    return -(amount.minor - refunded.minor)


# --- verification ----------------------------------------------------------------------------


class ProblemKind(enum.StrEnum):
    UNBALANCED_TRANSACTION = "UNBALANCED_TRANSACTION"
    PAYMENT_BALANCE_MISMATCH = "PAYMENT_BALANCE_MISMATCH"
    REFUNDS_MISMATCH = "REFUNDS_MISMATCH"
    OVER_REFUNDED = "OVER_REFUNDED"
    PROVIDER_BALANCE_MISMATCH = "PROVIDER_BALANCE_MISMATCH"


@dataclass(frozen=True, slots=True)
class LedgerProblem:
    kind: ProblemKind
    subject: str
    detail: str


@dataclass(frozen=True, slots=True)
class TransactionSum:
    """One transaction as the store sees it: how many entries and what they add up to."""

    transaction_id: str
    currency: str
    entries: int
    total: int
    foreign_entries: int = 0  # entries in another currency than the transaction's


@dataclass(frozen=True, slots=True)
class PaymentBalance:
    """One payment as stored, beside its ledger account and its settled refunds."""

    payment_id: str
    status: PaymentStatus
    provider: str
    amount: Money
    refunded: Money
    account_balance: int
    succeeded_refunds: int


@dataclass(frozen=True, slots=True)
class AccountBalance:
    account: str
    currency: str
    balance: int


@dataclass
class LedgerReport:
    payments: int = 0
    transactions: int = 0
    problems: list[LedgerProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(
    transactions: Iterable[TransactionSum],
    payments: Iterable[PaymentBalance],
    provider_accounts: Iterable[AccountBalance],
) -> LedgerReport:
    """Check that the ledger balances and reconciles with the payments."""
    report = LedgerReport()
    for txn in transactions:
        report.transactions += 1
        if txn.total != 0 or txn.entries < 2 or txn.foreign_entries:
            report.problems.append(
                LedgerProblem(
                    ProblemKind.UNBALANCED_TRANSACTION,
                    txn.transaction_id,
                    f"{txn.entries} entries ({txn.foreign_entries} in another currency) "
                    f"summing to {txn.total} {txn.currency} minor units",
                )
            )
    expected_provider: dict[tuple[str, str], int] = defaultdict(int)
    for payment in payments:
        report.payments += 1
        report.problems.extend(_check_payment(payment))
        if payment.status in CAPTURED_STATUSES:
            key = (provider_account(payment.provider), payment.amount.currency)
            expected_provider[key] += payment.amount.minor - payment.refunded.minor
    seen: set[tuple[str, str]] = set()
    for account in provider_accounts:
        key = (account.account, account.currency)
        seen.add(key)
        want = expected_provider.get(key, 0)
        if account.balance != want:
            report.problems.append(
                LedgerProblem(
                    ProblemKind.PROVIDER_BALANCE_MISMATCH,
                    f"{account.account} {account.currency}",
                    f"holds {account.balance}, payments say {want}",
                )
            )
    for (account_name, currency), want in sorted(expected_provider.items()):
        if (account_name, currency) not in seen and want != 0:
            report.problems.append(
                LedgerProblem(
                    ProblemKind.PROVIDER_BALANCE_MISMATCH,
                    f"{account_name} {currency}",
                    f"has no entries, payments say {want}",
                )
            )
    return report


def _check_payment(payment: PaymentBalance) -> Sequence[LedgerProblem]:
    problems = []
    subject = f"payments/{payment.payment_id}"
    want = expected_payment_balance(payment.status, payment.amount, payment.refunded)
    if payment.account_balance != want:
        problems.append(
            LedgerProblem(
                ProblemKind.PAYMENT_BALANCE_MISMATCH,
                subject,
                f"{payment.status.value}: account holds {payment.account_balance}, "
                f"expected {want} {payment.amount.currency} minor units",
            )
        )
    if payment.succeeded_refunds != payment.refunded.minor:
        problems.append(
            LedgerProblem(
                ProblemKind.REFUNDS_MISMATCH,
                subject,
                f"refunded_amount {payment.refunded.minor}, settled refunds add up to "
                f"{payment.succeeded_refunds}",
            )
        )
    if payment.refunded.minor > payment.amount.minor or payment.refunded.minor < 0:
        problems.append(
            LedgerProblem(
                ProblemKind.OVER_REFUNDED,
                subject,
                f"refunded {payment.refunded.minor} of {payment.amount.minor}",
            )
        )
    return problems


class Ledger:
    """An in-memory ledger: transactions posted in order, balances per account and currency.
    What the property tests and the store's verification reason about."""

    def __init__(self) -> None:
        self.transactions: list[LedgerTransaction] = []
        self._balances: dict[tuple[str, str], int] = defaultdict(int)

    def post(self, transaction: LedgerTransaction) -> None:
        self.transactions.append(transaction)
        for entry in transaction.entries:
            self._balances[(entry.account, transaction.currency)] += entry.amount

    def balance(self, account: str, currency: str) -> int:
        return self._balances.get((account, currency), 0)

    def sums(self) -> list[TransactionSum]:
        return [
            TransactionSum(t.id, t.currency, len(t.entries), sum(e.amount for e in t.entries))
            for t in self.transactions
        ]

    def provider_balances(self) -> list[AccountBalance]:
        return [
            AccountBalance(account, currency, balance)
            for (account, currency), balance in sorted(self._balances.items())
            if account.startswith(PROVIDER_ACCOUNT_PREFIX)
        ]
