"""What the payments use cases share: the caller, the dependencies, access rules, idempotent
replies, optimistic-concurrency retries, provider calls and the change log."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from gatehouse.events.v1.envelope_pb2 import Event
from gatehouse.payments.domain.payments import (
    Actor,
    Payment,
    PaymentChange,
    PaymentStatus,
)
from gatehouse.payments.handlers.ports import (
    Clock,
    IdFactory,
    PayerDirectory,
    PaymentProvider,
    PaymentResult,
    PaymentsUnitOfWork,
    ProviderDecision,
    ProviderTimeoutError,
    ProviderUnavailableError,
)
from gatehouse.runtime.db import DuplicateKeyError
from gatehouse.runtime.errors import (
    Aborted,
    AlreadyExists,
    FieldViolation,
    InvalidArgument,
    NotFound,
    RequestInProgress,
    Unavailable,
    permission_missing,
)
from gatehouse.runtime.ids import new_ulid
from gatehouse.runtime.principal import Principal as RuntimePrincipal

log = logging.getLogger("gatehouse.payments")

SERVICE_PATH = "gatehouse.payments.v1.PaymentsService"

READ_ALL = "payments.read_all"
CREATE = "payments.create"
MANAGE = "payments.manage"
PROCESS = "payments.process"
REFUND = "payments.refund"

PAYMENT_NOT_FOUND = "PAYMENT_NOT_FOUND"
PERMISSION_MISSING = "PERMISSION_MISSING"
REQUEST_ID_REUSED = "REQUEST_ID_REUSED"
INVALID_REQUEST_ID = "INVALID_REQUEST_ID"
INVALID_RESOURCE_NAME = "INVALID_RESOURCE_NAME"
ETAG_MISMATCH = "ETAG_MISMATCH"
CONCURRENT_UPDATE = "CONCURRENT_UPDATE"
PROVIDER_UNAVAILABLE = "PROVIDER_UNAVAILABLE"
INVALID_REASON = "INVALID_REASON"

MAX_REASON_CHARS = 500
USER_NAME = re.compile(r"users/[A-Za-z0-9._~-]{1,128}")


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Principal(RuntimePrincipal):
    """Who is asking (`gatehouse.runtime.principal`), and how this service records them."""

    def actor(self) -> Actor:
        return Actor(user=self.user, service=self.service, client_address=self.client_address)


@dataclass(frozen=True)
class PaymentsDeps:
    """Everything a use case needs besides its unit of work; built by the composition root."""

    provider: PaymentProvider
    payers: PayerDirectory
    clock: Clock = field(default=utc_now)
    new_id: IdFactory = field(default=new_ulid)
    provider_timeout: timedelta = timedelta(seconds=5)
    idempotency_ttl: timedelta = timedelta(hours=24)
    reconcile_after: timedelta = timedelta(seconds=30)
    heartbeat_interval: timedelta = timedelta(seconds=15)
    enabled_currencies: frozenset[str] | None = None
    # How often a read-modify-write is retried after losing an optimistic-concurrency race.
    conflict_retries: int = 5


# --- access ----------------------------------------------------------------------------------


def is_owner(payment: Payment, principal: Principal) -> bool:
    return bool(principal.user) and principal.user in (payment.payer, payment.creator.user)


@dataclass(frozen=True, slots=True)
class Access:
    """Who may act on a payment for one RPC.

    `any_with`: permissions that allow acting on every payment; `own_with`: what an owner
    needs to act on their own (None: owners may not act for being owners; "" : nothing);
    `payer_only`: "own" means being the payer, not the creator; `denied`: the permission a
    refusal names.
    """

    action: str
    any_with: tuple[str, ...]
    own_with: str | None
    denied: str
    payer_only: bool = False


GET_ACCESS = Access("GetPayment", (READ_ALL,), "", READ_ALL)
WATCH_ACCESS = Access("WatchPayment", (READ_ALL,), "", READ_ALL)
PROCESS_ACCESS = Access("ProcessPayment", (PROCESS,), CREATE, PROCESS, payer_only=True)
CANCEL_ACCESS = Access("CancelPayment", (MANAGE,), CREATE, MANAGE)
REFUND_ACCESS = Access("RefundPayment", (REFUND,), None, REFUND)


def _may_own(payment: Payment, principal: Principal, access: Access) -> bool:
    if access.own_with is None:
        return False
    owner = (
        bool(principal.user) and principal.user == payment.payer
        if access.payer_only
        else is_owner(payment, principal)
    )
    return owner and (not access.own_with or principal.has(access.own_with))


async def load_payment(
    uow: PaymentsUnitOfWork, payment_id: str, principal: Principal, access: Access
) -> Payment:
    """The payment if the caller may act on it. Callers who could not see it if it existed
    get PERMISSION_DENIED for a missing one too (AIP-211: ids cannot be probed)."""
    payment = await uow.payments.get(payment_id)
    staff = any(principal.has(permission) for permission in access.any_with)
    if payment is None:
        if staff or principal.has(READ_ALL):
            raise NotFound(f"payments/{payment_id}", reason=PAYMENT_NOT_FOUND)
        raise permission_missing(access.denied)
    if staff or _may_own(payment, principal, access):
        return payment
    raise permission_missing(access.denied)


def check_etag(payment: Payment, etag: str) -> None:
    if etag and etag != payment.etag:
        raise Aborted(
            f"{payment.name} has changed since the etag given; read it again",
            reason=ETAG_MISMATCH,
        )


def check_reason(reason: str, field_name: str = "reason") -> None:
    if len(reason) > MAX_REASON_CHARS:
        raise InvalidArgument(
            [FieldViolation(field_name, f"must be at most {MAX_REASON_CHARS} characters")],
            reason=INVALID_REASON,
        )


# --- idempotent replies ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReplyKey:
    scope: str
    request_id: str
    fingerprint: bytes

    @property
    def token(self) -> str:
        """Kept on the payment or refund whose provider outcome the reply waits for."""
        return f"{self.scope}\n{self.request_id}"

    @staticmethod
    def parse(token: str) -> tuple[str, str]:
        scope, _, request_id = token.rpartition("\n")
        return scope, request_id


def reply_key(method: str, principal: Principal, request_id: str, fingerprint: bytes) -> ReplyKey:
    """Scoped to the RPC and the caller. `request_id` is required on every mutating RPC (its
    form, a UUID, is checked before the handler runs)."""
    if not request_id:
        raise InvalidArgument(
            [FieldViolation("request_id", "is required: a client-chosen UUID per request")],
            reason=INVALID_REQUEST_ID,
        )
    return ReplyKey(f"{SERVICE_PATH}/{method}|{principal.identity}", request_id, fingerprint)


class LostRaceError(Exception):
    """A concurrent twin of this request stored its reply first: replay that one instead."""


async def replayed(
    uow: PaymentsUnitOfWork, key: ReplyKey, deps: PaymentsDeps
) -> PaymentResult | None:
    """The first reply to this request, if there was one (inside `uow`)."""
    stored = await uow.replies.get(key.scope, key.request_id)
    if stored is None:
        return None
    if stored.expires_at <= deps.clock():
        # Past its window the id is free again.
        await uow.replies.delete(key.scope, key.request_id)
        return None
    if stored.fingerprint != key.fingerprint:
        raise AlreadyExists(
            "request_id was already used for a different request", reason=REQUEST_ID_REUSED
        )
    if stored.result is None:
        raise RequestInProgress(retry_after=timedelta(seconds=1))
    return stored.result


async def remember(
    uow: PaymentsUnitOfWork,
    key: ReplyKey,
    deps: PaymentsDeps,
    result: PaymentResult | None,
) -> None:
    """Store the reply (None: claim the id until the outcome is known) in this transaction."""
    try:
        await uow.replies.add(
            key.scope,
            key.request_id,
            key.fingerprint,
            result,
            now=deps.clock(),
            ttl=deps.idempotency_ttl,
        )
    except DuplicateKeyError:
        raise LostRaceError from None


class Claim:
    """Claiming a request id as the first statement of each attempt's transaction.

    The insert is the check: a twin's insert of the same id waits for this transaction
    (PostgreSQL) or for the write lock (SQLite) and then fails, so every other statement of
    the twin runs after this call committed or gave up. Only after losing does an attempt
    read the stored reply, so the common case costs one statement.
    """

    def __init__(self) -> None:
        self.lost = False

    async def take(
        self,
        uow: PaymentsUnitOfWork,
        key: ReplyKey,
        deps: PaymentsDeps,
        result: PaymentResult | None = None,
    ) -> PaymentResult | None:
        """None: this call owns the id now (its reply is `result`, or pending). Otherwise the
        first reply to replay. Raises `LostRaceError`: roll back and take again."""
        if self.lost:
            first = await replayed(uow, key, deps)
            if first is not None:
                return first
        try:
            await remember(uow, key, deps, result)
        except LostRaceError:
            self.lost = True
            raise
        return None


async def complete_reply(uow: PaymentsUnitOfWork, token: str, result: PaymentResult) -> None:
    if token:
        scope, request_id = ReplyKey.parse(token)
        await uow.replies.complete(scope, request_id, result)


# --- the change log --------------------------------------------------------------------------


async def record_change(
    uow: PaymentsUnitOfWork,
    payment: Payment,
    event: Event,
    previous: PaymentStatus | None,
    now: datetime,
    refund_id: str | None = None,
) -> None:
    """Publish `event` and log the change it reports (same id) for WatchPayment."""
    await uow.changes.add(
        PaymentChange(
            id=event.id,
            payment_id=payment.id,
            sequence=payment.version,
            previous_status=previous,
            status=payment.status,
            time=now,
            payment=payment.snapshot(),
            refund_id=refund_id,
        )
    )
    await uow.outbox.add(event)


# --- the provider ----------------------------------------------------------------------------


def provider_unavailable() -> Unavailable:
    return Unavailable(
        "the payment provider cannot be reached; nothing was charged. Retry with the same "
        "request_id.",
        reason=PROVIDER_UNAVAILABLE,
        retry_after=timedelta(seconds=5),
    )


async def ask_provider(
    call: Awaitable[ProviderDecision | None], timeout: timedelta
) -> tuple[bool, ProviderDecision | None]:
    """Run a provider call under our own deadline as well as the adapter's.

    Returns `(answered, decision)`; `answered` is False when the outcome is unknown (timeout,
    unreachable, a bug in the adapter): the caller must then leave things to the reconciler.
    """
    try:
        # A little beyond the adapter's own timeout, which should fire first.
        async with asyncio.timeout(timeout.total_seconds() + 1.0):
            return True, await call
    except (ProviderTimeoutError, TimeoutError, ProviderUnavailableError) as error:
        log.warning("payment provider gave no answer: %s", type(error).__name__)
        return False, None
    except Exception:
        log.exception("payment provider call failed; the reconciler will ask again")
        return False, None


def violations_of(errors: Sequence[InvalidArgument]) -> InvalidArgument:
    """One INVALID_ARGUMENT with every violation; the first error's reason names it."""
    return InvalidArgument(
        [violation for error in errors for violation in error.violations],
        reason=errors[0].reason,
    )
