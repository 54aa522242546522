"""The payment aggregate: its lifecycle, its refunds, and the checks that guard both.

A `Payment` changes only through its methods; each checks the transition first and changes
nothing when it refuses, and each bumps `version` (the optimistic-concurrency token the
repository compares on save, and the etag callers see).

    PENDING            -> PROCESSING, CANCELED
    PROCESSING         -> COMPLETED, FAILED
    COMPLETED          -> PARTIALLY_REFUNDED, REFUNDED
    PARTIALLY_REFUNDED -> PARTIALLY_REFUNDED, REFUNDED
Anything else is FAILED_PRECONDITION / INVALID_TRANSITION.
"""

from __future__ import annotations

import copy
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from gatehouse.payments.domain.money import Money
from gatehouse.runtime.errors import FailedPrecondition

INVALID_TRANSITION = "INVALID_TRANSITION"
REFUND_EXCEEDS_BALANCE = "REFUND_EXCEEDS_BALANCE"
PAYMENT_ID_PREFIX = "payments/"


class PaymentStatus(enum.StrEnum):
    PENDING = "PENDING"
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"
    PARTIALLY_REFUNDED = "PARTIALLY_REFUNDED"
    REFUNDED = "REFUNDED"


ALLOWED_TRANSITIONS: Mapping[PaymentStatus, frozenset[PaymentStatus]] = {
    PaymentStatus.PENDING: frozenset({PaymentStatus.PROCESSING, PaymentStatus.CANCELED}),
    PaymentStatus.PROCESSING: frozenset({PaymentStatus.COMPLETED, PaymentStatus.FAILED}),
    PaymentStatus.COMPLETED: frozenset({PaymentStatus.PARTIALLY_REFUNDED, PaymentStatus.REFUNDED}),
    PaymentStatus.PARTIALLY_REFUNDED: frozenset(
        {PaymentStatus.PARTIALLY_REFUNDED, PaymentStatus.REFUNDED}
    ),
    PaymentStatus.FAILED: frozenset(),
    PaymentStatus.CANCELED: frozenset(),
    PaymentStatus.REFUNDED: frozenset(),
}
FINAL_STATUSES = frozenset({PaymentStatus.FAILED, PaymentStatus.CANCELED, PaymentStatus.REFUNDED})
# Money has been taken in these states (and the ledger shows it).
CAPTURED_STATUSES = frozenset(
    {PaymentStatus.COMPLETED, PaymentStatus.PARTIALLY_REFUNDED, PaymentStatus.REFUNDED}
)


def check_transition(current: PaymentStatus, target: PaymentStatus) -> None:
    if target not in ALLOWED_TRANSITIONS[current]:
        raise FailedPrecondition(
            f"a {current.value} payment cannot become {target.value}",
            reason=INVALID_TRANSITION,
            metadata={"from": current.value, "to": target.value},
        )


class PaymentMethod(enum.StrEnum):
    CARD = "CARD"
    BANK_TRANSFER = "BANK_TRANSFER"
    WALLET = "WALLET"


class WalletType(enum.StrEnum):
    APPLE_PAY = "APPLE_PAY"
    GOOGLE_PAY = "GOOGLE_PAY"
    PAYPAL = "PAYPAL"


class RefundStatus(enum.StrEnum):
    PENDING = "PENDING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


@dataclass(frozen=True, slots=True)
class Actor:
    """Who did something: a user, and the service or address it came through."""

    user: str = ""
    service: str = ""
    client_address: str = ""


@dataclass(frozen=True, slots=True)
class CardInfo:
    """What may be shown of a card: never its number."""

    brand: str = ""
    last4: str = ""
    exp_month: int = 0
    exp_year: int = 0


@dataclass(frozen=True, slots=True)
class BankTransferInfo:
    account_holder_name: str = ""
    iban_last4: str = ""
    bic: str = ""
    transfer_reference: str = ""


@dataclass(frozen=True, slots=True)
class WalletInfo:
    type: WalletType


MethodInfo = CardInfo | BankTransferInfo | WalletInfo | None


class SourceKind(enum.StrEnum):
    """How the payer's funds are presented to the provider (input-only secrets)."""

    NONE = "NONE"
    CARD_TOKEN = "CARD_TOKEN"  # noqa: S105 - a kind of source, not a secret
    TEST_CARD = "TEST_CARD"
    IBAN = "IBAN"
    WALLET_TOKEN = "WALLET_TOKEN"  # noqa: S105 - a kind of source, not a secret


@dataclass(frozen=True, slots=True)
class PaymentSource:
    """The secret the provider needs to charge (card token, test card number, IBAN, wallet
    token). Kept with the payment for the provider call and the reconciler; never returned,
    never put in events or snapshots."""

    kind: SourceKind = SourceKind.NONE
    value: str = ""

    def __repr__(self) -> str:
        return f"PaymentSource(kind={self.kind.value}, value=<hidden>)"


@dataclass(slots=True)
class Refund:
    id: str
    payment_id: str
    amount: Money
    reason: str
    creator: Actor
    create_time: datetime
    status: RefundStatus = RefundStatus.PENDING
    provider_reference: str = ""
    failure_code: str = ""
    failure_reason: str = ""
    complete_time: datetime | None = None
    # Opaque to the domain: which caller's reply waits on this refund's provider outcome.
    pending_reply: str = ""

    @property
    def name(self) -> str:
        return f"{PAYMENT_ID_PREFIX}{self.payment_id}/refunds/{self.id}"


@dataclass(slots=True)
class Payment:
    id: str
    payer: str
    creator: Actor
    amount: Money
    method: PaymentMethod
    method_info: MethodInfo
    description: str
    metadata: dict[str, str]
    create_time: datetime
    update_time: datetime
    status: PaymentStatus = PaymentStatus.PENDING
    refunded: Money | None = None
    failure_code: str = ""
    failure_reason: str = ""
    provider: str = ""
    provider_reference: str = ""
    complete_time: datetime | None = None
    cancel_reason: str = ""
    processing_started_at: datetime | None = None
    version: int = 1
    refunds: list[Refund] = field(default_factory=list)
    # Opaque to the domain: which caller's reply waits on the charge's provider outcome.
    pending_reply: str = ""

    def __post_init__(self) -> None:
        if self.refunded is None:
            self.refunded = Money.zero(self.amount.currency)

    @property
    def name(self) -> str:
        return f"{PAYMENT_ID_PREFIX}{self.id}"

    @property
    def etag(self) -> str:
        return str(self.version)

    @property
    def refunded_amount(self) -> Money:
        assert self.refunded is not None  # set in __post_init__
        return self.refunded

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    def snapshot(self) -> Payment:
        """An independent copy: what the payment was at this moment."""
        return copy.deepcopy(self)

    def _move(self, target: PaymentStatus, now: datetime) -> None:
        check_transition(self.status, target)
        self.status = target
        self._touch(now)

    def _touch(self, now: datetime) -> None:
        self.version += 1
        self.update_time = now

    # -- charge --

    def start_processing(self, provider: str, now: datetime) -> None:
        self._move(PaymentStatus.PROCESSING, now)
        self.provider = provider
        self.processing_started_at = now

    def complete(
        self, provider_reference: str, now: datetime, card: CardInfo | None = None
    ) -> None:
        self._move(PaymentStatus.COMPLETED, now)
        self.provider_reference = provider_reference
        self.complete_time = now
        if card is not None and isinstance(self.method_info, CardInfo):
            self.method_info = _merge_card(self.method_info, card)

    def fail(self, code: str, reason: str, now: datetime, provider_reference: str = "") -> None:
        self._move(PaymentStatus.FAILED, now)
        self.failure_code = code
        self.failure_reason = reason
        self.provider_reference = provider_reference

    def cancel(self, reason: str, now: datetime) -> None:
        self._move(PaymentStatus.CANCELED, now)
        self.cancel_reason = reason

    # -- refunds --

    def pending_refunds(self) -> Money:
        total = Money.zero(self.amount.currency)
        for refund in self.refunds:
            if refund.status is RefundStatus.PENDING:
                total = total + refund.amount
        return total

    def refundable(self) -> Money:
        """What a new refund may take: amount - refunded - refunds still PENDING."""
        return self.amount - self.refunded_amount - self.pending_refunds()

    def request_refund(
        self,
        refund_id: str,
        amount: Money | None,
        reason: str,
        creator: Actor,
        now: datetime,
    ) -> Refund:
        """Reserve a refund (PENDING) of `amount`, or of the whole refundable balance.

        INVALID_TRANSITION unless COMPLETED or PARTIALLY_REFUNDED; REFUND_EXCEEDS_BALANCE
        when `amount` (or, for a full refund, anything) is more than is left.
        """
        if amount is not None and amount.currency != self.amount.currency:
            raise ValueError("the refund's currency must be the payment's (checked by callers)")
        if self.status not in (PaymentStatus.COMPLETED, PaymentStatus.PARTIALLY_REFUNDED):
            whole = amount is None or amount >= self.amount - self.refunded_amount
            check_transition(
                self.status,
                PaymentStatus.REFUNDED if whole else PaymentStatus.PARTIALLY_REFUNDED,
            )
        refundable = self.refundable()
        wanted = refundable if amount is None else amount
        if not wanted.is_positive or wanted > refundable:
            raise FailedPrecondition(
                f"the refund exceeds the refundable balance of {refundable}",
                reason=REFUND_EXCEEDS_BALANCE,
                metadata={"refundable": refundable.decimal(), "currency_code": refundable.currency},
            )
        refund = Refund(
            id=refund_id,
            payment_id=self.id,
            amount=wanted,
            reason=reason,
            creator=creator,
            create_time=now,
        )
        self.refunds.append(refund)
        self._touch(now)
        return refund

    def refund(self, refund_id: str) -> Refund:
        for refund in self.refunds:
            if refund.id == refund_id:
                return refund
        raise KeyError(refund_id)

    def settle_refund(self, refund_id: str, provider_reference: str, now: datetime) -> Refund:
        """The provider confirmed a PENDING refund: the money went back."""
        refund = self.refund(refund_id)
        if refund.status is not RefundStatus.PENDING:
            raise FailedPrecondition(
                f"refund {refund.name} is already {refund.status.value}",
                reason=INVALID_TRANSITION,
                metadata={"from": refund.status.value, "to": RefundStatus.SUCCEEDED.value},
            )
        refunded = self.refunded_amount + refund.amount
        target = (
            PaymentStatus.REFUNDED if refunded == self.amount else PaymentStatus.PARTIALLY_REFUNDED
        )
        self._move(target, now)
        self.refunded = refunded
        refund.status = RefundStatus.SUCCEEDED
        refund.provider_reference = provider_reference
        refund.complete_time = now
        return refund

    def fail_refund(
        self, refund_id: str, code: str, reason: str, now: datetime, provider_reference: str = ""
    ) -> Refund:
        """The provider refused a PENDING refund: its reservation is released."""
        refund = self.refund(refund_id)
        if refund.status is not RefundStatus.PENDING:
            raise FailedPrecondition(
                f"refund {refund.name} is already {refund.status.value}",
                reason=INVALID_TRANSITION,
                metadata={"from": refund.status.value, "to": RefundStatus.FAILED.value},
            )
        refund.status = RefundStatus.FAILED
        refund.failure_code = code
        refund.failure_reason = reason
        refund.provider_reference = provider_reference
        refund.complete_time = now
        self._touch(now)
        return refund


def _merge_card(known: CardInfo, reported: CardInfo) -> CardInfo:
    return CardInfo(
        brand=reported.brand or known.brand,
        last4=reported.last4 or known.last4,
        exp_month=reported.exp_month or known.exp_month,
        exp_year=reported.exp_year or known.exp_year,
    )


@dataclass(frozen=True, slots=True)
class PaymentChange:
    """One change of a payment as WatchPayment delivers it: a status transition or a settled
    refund. `id` is the id of the event published with it; `sequence` is the payment's
    version after the change, so changes of one payment are totally ordered."""

    id: str
    payment_id: str
    sequence: int
    previous_status: PaymentStatus | None
    status: PaymentStatus
    time: datetime
    payment: Payment
    refund_id: str | None = None

    @property
    def refund(self) -> Refund | None:
        return None if self.refund_id is None else self.payment.refund(self.refund_id)
