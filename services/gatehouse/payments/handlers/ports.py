"""The interfaces the use cases depend on; adapters implement them (SQLAlchemy, the sandbox
provider) and tests may substitute their own."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from gatehouse.payments.domain.ledger import (
    AccountBalance,
    LedgerTransaction,
    PaymentBalance,
    TransactionSum,
)
from gatehouse.payments.domain.money import Money
from gatehouse.payments.domain.payments import (
    CardInfo,
    Payment,
    PaymentChange,
    PaymentMethod,
    PaymentSource,
    PaymentStatus,
)
from gatehouse.runtime.db import UnitOfWork
from gatehouse.runtime.outbox import Outbox

Clock = Callable[[], datetime]
IdFactory = Callable[[], str]


# --- storage ---------------------------------------------------------------------------------


class StaleVersionError(Exception):
    """The payment changed since it was loaded (another transaction saved it first)."""


@dataclass(frozen=True, slots=True)
class PaymentFilter:
    """Which payments a listing covers. Empty collections and None mean "any"."""

    visible_to: str | None = None  # None: every payment (payments.read_all); else payer or creator
    payer: str | None = None
    statuses: frozenset[PaymentStatus] = frozenset()
    methods: frozenset[PaymentMethod] = frozenset()
    created_from: datetime | None = None  # inclusive
    created_before: datetime | None = None  # exclusive
    currency: str | None = None
    min_minor: int | None = None
    max_minor: int | None = None


@dataclass(frozen=True, slots=True)
class PageCursor:
    """Keyset position: the last row of the previous page."""

    create_time: datetime
    payment_id: str


class PaymentRepository(Protocol):
    async def add(self, payment: Payment, source: PaymentSource) -> None:
        """Insert a new payment (with its refunds, normally none) and its secret source."""
        ...

    async def get(self, payment_id: str) -> Payment | None:
        """The payment with its refunds, oldest first."""
        ...

    async def source(self, payment_id: str) -> PaymentSource:
        """The secret the provider needs to charge this payment."""
        ...

    async def update(self, payment: Payment, *, expected_version: int) -> None:
        """Save the payment and its refunds if it is still at `expected_version`; raises
        `StaleVersionError` otherwise (nothing is written then)."""
        ...

    async def page(
        self,
        where: PaymentFilter,
        *,
        newest_first: bool,
        after: PageCursor | None,
        limit: int,
    ) -> list[Payment]:
        """One page in (create_time, id) order, strictly after `after`."""
        ...

    async def processing_since_before(self, cutoff: datetime, limit: int) -> list[str]:
        """Ids of payments PROCESSING since before `cutoff` (the reconciler's work)."""
        ...

    async def pending_refunds_before(self, cutoff: datetime, limit: int) -> list[tuple[str, str]]:
        """(payment id, refund id) of refunds PENDING since before `cutoff`."""
        ...


class ChangeRepository(Protocol):
    async def add(self, change: PaymentChange) -> None: ...

    async def get(self, change_id: str) -> PaymentChange | None: ...

    async def latest(self, payment_id: str) -> PaymentChange | None: ...

    async def after(self, payment_id: str, sequence: int, limit: int) -> list[PaymentChange]:
        """Changes of the payment with a higher sequence, in order."""
        ...


class LedgerRepository(Protocol):
    async def post(self, transaction: LedgerTransaction) -> None: ...

    async def transaction_sums(self) -> list[TransactionSum]: ...

    async def payment_balances(self) -> list[PaymentBalance]: ...

    async def provider_balances(self) -> list[AccountBalance]: ...


@dataclass(frozen=True, slots=True)
class PaymentResult:
    """What a mutating RPC answered: the payment as it was then (and the refund it made)."""

    payment: Payment
    refund_id: str | None = None


@dataclass(frozen=True, slots=True)
class StoredReply:
    fingerprint: bytes
    expires_at: datetime
    result: PaymentResult | None  # None: the first call is still running (or died mid-way)


class ReplyStore(Protocol):
    """Idempotency records of mutating RPCs (the runtime's `idempotency_records`)."""

    async def get(self, scope: str, request_id: str) -> StoredReply | None: ...

    async def add(
        self,
        scope: str,
        request_id: str,
        fingerprint: bytes,
        result: PaymentResult | None,
        *,
        now: datetime,
        ttl: timedelta,
    ) -> None:
        """Store the reply (or, with `result=None`, claim the id while the call runs); raises
        `DuplicateKeyError` when the id is taken. The transaction must then be rolled back
        (PostgreSQL aborts it); a concurrent twin's insert waits for this transaction."""
        ...

    async def complete(self, scope: str, request_id: str, result: PaymentResult) -> None:
        """Fill in a claimed reply; a reply already filled in is left as it is."""
        ...

    async def delete(self, scope: str, request_id: str) -> None: ...


class PaymentsUnitOfWork(UnitOfWork, Protocol):
    payments: PaymentRepository
    changes: ChangeRepository
    ledger: LedgerRepository
    replies: ReplyStore
    outbox: Outbox


# --- the payment provider --------------------------------------------------------------------


class ProviderTimeoutError(Exception):
    """The provider did not answer in time: the outcome is unknown (it may have charged)."""


class ProviderUnavailableError(Exception):
    """The provider cannot be reached and nothing was sent to it."""


@dataclass(frozen=True, slots=True)
class ChargeRequest:
    idempotency_key: str  # the payment's name: one charge per payment, however often asked
    amount: Money
    method: PaymentMethod
    source: PaymentSource
    description: str


@dataclass(frozen=True, slots=True)
class RefundRequest:
    idempotency_key: str  # the refund's name
    charge_reference: str
    amount: Money
    charge: ChargeRequest


@dataclass(frozen=True, slots=True)
class ProviderDecision:
    approved: bool
    reference: str = ""
    failure_code: str = ""
    failure_reason: str = ""
    card: CardInfo | None = None


class PaymentProvider(Protocol):
    """A payment provider adapter. Every call carries an idempotency key, so asking twice
    never moves money twice, and a timeout the adapter must honour."""

    @property
    def name(self) -> str: ...

    @property
    def accepts_test_cards(self) -> bool: ...

    def check_available(self) -> None:
        """Raise `ProviderUnavailableError` when the provider is known to be unreachable
        (circuit open, not configured). Must not do I/O: it runs inside a transaction."""
        ...

    async def charge(self, request: ChargeRequest, *, timeout: timedelta) -> ProviderDecision:
        """Charge once per idempotency key; `ProviderTimeoutError` when no answer in time."""
        ...

    async def find_charge(
        self, request: ChargeRequest, *, timeout: timedelta
    ) -> ProviderDecision | None:
        """The outcome of an earlier charge with this key; None if the provider never got it."""
        ...

    async def refund(self, request: RefundRequest, *, timeout: timedelta) -> ProviderDecision: ...

    async def find_refund(
        self, request: RefundRequest, *, timeout: timedelta
    ) -> ProviderDecision | None: ...


# --- other services ---------------------------------------------------------------------------


class PayerState(enum.StrEnum):
    ACTIVE = "ACTIVE"
    INACTIVE = "INACTIVE"  # the account was deleted or disabled
    UNKNOWN = "UNKNOWN"  # no such user


class PayerDirectory(Protocol):
    async def state(self, payer: str) -> PayerState: ...


class AnyPayer:
    """Takes every well-formed `users/{id}` as an active payer: for tools and tests that run
    payments without auth. The service asks auth (`adapters.payers.GrpcPayerDirectory`)."""

    async def state(self, payer: str) -> PayerState:
        return PayerState.ACTIVE
