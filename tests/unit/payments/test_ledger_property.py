"""The ledger invariant under random operation sequences (domain level, hypothesis).

Whatever sequence of creates, charges, cancels, refunds and provider answers happens, and
whichever of them the rules refuse: every transaction balances, each payment's account holds
`-(captured - refunded)`, the provider holds the net of all payments per currency, a refund
never takes more than is left, and a refused operation changes nothing.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gatehouse.payments.domain.ledger import (
    Ledger,
    PaymentBalance,
    charge_transaction,
    payment_account,
    refund_transaction,
    verify,
)
from gatehouse.payments.domain.money import Money
from gatehouse.payments.domain.payments import (
    Actor,
    CardInfo,
    Payment,
    PaymentMethod,
    PaymentStatus,
    RefundStatus,
)
from gatehouse.runtime.errors import FailedPrecondition

NOW = datetime(2025, 1, 1, tzinfo=UTC)
CURRENCIES = ("USD", "JPY", "KWD")

index = st.integers(min_value=0, max_value=7)
operation = st.one_of(
    st.tuples(st.just("create"), st.integers(1, 100_000), st.sampled_from(CURRENCIES)),
    st.tuples(st.just("process"), index, st.sampled_from(["approve", "decline", "timeout"])),
    st.tuples(st.just("resolve"), index, st.booleans()),
    st.tuples(st.just("cancel"), index),
    st.tuples(st.just("refund"), index, st.one_of(st.none(), st.integers(-5, 60_000))),
    st.tuples(st.just("settle"), index, index, st.booleans()),
)


class Model:
    def __init__(self) -> None:
        self.payments: list[Payment] = []
        self.ledger = Ledger()
        self._ids = (f"{n:026d}" for n in itertools.count())

    def new_id(self) -> str:
        return next(self._ids)

    def pick(self, i: int) -> Payment | None:
        return self.payments[i % len(self.payments)] if self.payments else None

    def apply(self, op: tuple[object, ...]) -> None:
        kind = op[0]
        if kind == "create":
            amount, currency = op[1], op[2]
            assert isinstance(amount, int)
            assert isinstance(currency, str)
            self.payments.append(
                Payment(
                    id=self.new_id(),
                    payer="users/p",
                    creator=Actor(user="users/p"),
                    amount=Money(amount, currency),
                    method=PaymentMethod.CARD,
                    method_info=CardInfo(),
                    description="",
                    metadata={},
                    create_time=NOW,
                    update_time=NOW,
                )
            )
            return
        payment = self.pick(op[1])  # type: ignore[arg-type]
        if payment is None:
            return
        if kind == "process":
            payment.start_processing("sandbox", NOW)
            if op[2] == "approve":
                self.charge(payment)
            elif op[2] == "decline":
                payment.fail("CARD_DECLINED", "no", NOW)
        elif kind == "resolve":
            if op[2]:
                self.charge(payment)
            else:
                payment.fail("PROVIDER_ERROR", "no", NOW)
        elif kind == "cancel":
            payment.cancel("changed my mind", NOW)
        elif kind == "refund":
            raw = op[2]
            amount = None if raw is None else Money(raw, payment.amount.currency)  # type: ignore[arg-type]
            if amount is not None and amount.minor <= 0:
                return  # rejected as INVALID_ARGUMENT before the domain sees it
            payment.request_refund(self.new_id(), amount, "why", Actor(), NOW)
        elif kind == "settle":
            pending = [r for r in payment.refunds if r.status is RefundStatus.PENDING]
            if not pending:
                return
            refund = pending[op[2] % len(pending)]  # type: ignore[operator]
            if op[3]:
                payment.settle_refund(refund.id, "ref", NOW)
                self.ledger.post(refund_transaction(payment, refund, self.new_id(), NOW))
            else:
                payment.fail_refund(refund.id, "PROVIDER_REJECTED", "no", NOW)

    def charge(self, payment: Payment) -> None:
        payment.complete("ref", NOW)
        self.ledger.post(charge_transaction(payment, self.new_id(), NOW))

    def check(self) -> None:
        balances = [
            PaymentBalance(
                payment_id=p.id,
                status=p.status,
                provider=p.provider or "sandbox",
                amount=p.amount,
                refunded=p.refunded_amount,
                account_balance=self.ledger.balance(payment_account(p.id), p.amount.currency),
                succeeded_refunds=sum(
                    r.amount.minor for r in p.refunds if r.status is RefundStatus.SUCCEEDED
                ),
            )
            for p in self.payments
        ]
        report = verify(self.ledger.sums(), balances, self.ledger.provider_balances())
        assert report.ok, report.problems
        for p in self.payments:
            assert 0 <= p.refunded_amount.minor <= p.amount.minor
            assert p.refundable().minor >= 0 or p.status not in {
                PaymentStatus.COMPLETED,
                PaymentStatus.PARTIALLY_REFUNDED,
            }
            if p.status is PaymentStatus.REFUNDED:
                assert p.refunded_amount == p.amount


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
    database=None,  # no .hypothesis/ folder in the work tree: examples are derandomized
)
@given(st.lists(operation, max_size=60))
def test_the_ledger_balances_and_reconciles_whatever_happens(
    operations: list[tuple[object, ...]],
) -> None:
    model = Model()
    for op in operations:
        before = [p.snapshot() for p in model.payments]
        posted = len(model.ledger.transactions)
        try:
            model.apply(op)
        except FailedPrecondition:
            # Refused: nothing changed, nothing was posted.
            assert [p.snapshot() for p in model.payments] == before
            assert len(model.ledger.transactions) == posted
        model.check()
