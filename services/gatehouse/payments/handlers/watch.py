"""WatchPayment: a payment's changes as they commit, until it reaches a final state.

The change log (`payments_changes`, written in the transaction of each change) is the
source of truth: it holds every change with the payment as of then, so the first message,
a resume from any earlier change and the live part all come from one ordered sequence per
payment (the payment's version), on any replica. The live hub is the doorbell: every change
also publishes an event on `events.payment`, and each one for this payment makes the stream
read the log after the last change it sent. The subscription is opened before the log is
first read, so a change committing in between rings the bell rather than slipping through;
heartbeats also re-read the log, so a bus that lags or a relay in another process delays a
change by at most one heartbeat interval, never loses it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

from gatehouse.payments.domain.payments import FINAL_STATUSES, PaymentChange, PaymentStatus
from gatehouse.payments.handlers.common import (
    WATCH_ACCESS,
    PaymentsDeps,
    Principal,
    load_payment,
)
from gatehouse.payments.handlers.events import CREATED
from gatehouse.payments.handlers.ports import PaymentsUnitOfWork
from gatehouse.runtime.errors import FieldViolation, InvalidArgument, ResourceExhausted, Unavailable
from gatehouse.runtime.events import stream_for
from gatehouse.runtime.live import LiveHeartbeat, LiveSource

UNKNOWN_RESUME_POINT = "UNKNOWN_RESUME_POINT"
SUBSCRIBER_TOO_SLOW = "SUBSCRIBER_TOO_SLOW"
SHUTTING_DOWN = "SHUTTING_DOWN"
PAYMENT_STREAM = stream_for(CREATED)
# Changes read from the log per query; a payment has few, a resume from its first change
# of a long refund history a few more.
_BATCH = 100
# A payment that settles refunds stays open for ever with `follow_refunds`.
_FINAL_WITHOUT_REFUNDS = FINAL_STATUSES | {
    PaymentStatus.COMPLETED,
    PaymentStatus.PARTIALLY_REFUNDED,
}


@dataclass(frozen=True, slots=True)
class WatchPayment:
    payment_id: str
    resume_after: str = ""
    follow_refunds: bool = False


@dataclass(frozen=True, slots=True)
class ChangeItem:
    change: PaymentChange
    first: bool = False  # the opening message of a stream that did not resume


@dataclass(frozen=True, slots=True)
class HeartbeatItem:
    time: datetime
    last_event_id: str


WatchItem = ChangeItem | HeartbeatItem


def _is_final(status: PaymentStatus, follow_refunds: bool) -> bool:
    return status in (FINAL_STATUSES if follow_refunds else _FINAL_WITHOUT_REFUNDS)


async def watch_payment(
    query: WatchPayment,
    principal: Principal,
    uow: PaymentsUnitOfWork,
    live: LiveSource,
    deps: PaymentsDeps,
    stopping: asyncio.Event | None = None,
) -> AsyncIterator[WatchItem]:
    """Raises before the first item for bad requests (access, resume point); afterwards
    RESOURCE_EXHAUSTED / SUBSCRIBER_TOO_SLOW or UNAVAILABLE / SHUTTING_DOWN, each with the
    last delivered id in the ErrorInfo metadata."""
    async with uow as tx:
        payment = await load_payment(tx, query.payment_id, principal, WATCH_ACCESS)
    name = payment.name
    subscription = await live.subscribe(
        [PAYMENT_STREAM],
        filter=lambda event: event.subject == name,
        stopping=stopping,
        heartbeat_interval=deps.heartbeat_interval,
        overflow_reason=SUBSCRIBER_TOO_SLOW,
    )
    try:
        anchor, pending = await _opening(uow, payment.id, query.resume_after)
        first = anchor is None
        last_id = "" if anchor is None else anchor.id
        sequence = 0 if anchor is None else anchor.sequence
        status = None if anchor is None else anchor.status
        while True:
            for change in pending:
                yield ChangeItem(change, first=first)
                first = False
                last_id, sequence, status = change.id, change.sequence, change.status
            if len(pending) == _BATCH:
                pending = await _after(uow, payment.id, sequence)
                continue
            if status is not None and _is_final(status, query.follow_refunds):
                return
            try:
                message = await anext(subscription)
            except StopAsyncIteration:
                break
            except ResourceExhausted as overflow:
                overflow.metadata = {"last_event_id": last_id}
                raise
            pending = await _after(uow, payment.id, sequence)
            if not pending and isinstance(message, LiveHeartbeat):
                yield HeartbeatItem(datetime.now(UTC), last_id)
    finally:
        await subscription.aclose()
    if subscription.ended_by is not None:
        draining = Unavailable(
            "the server is shutting down; reconnect with resume_after", reason=SHUTTING_DOWN
        )
        draining.metadata["last_event_id"] = last_id
        raise draining


async def _opening(
    uow: PaymentsUnitOfWork, payment_id: str, resume_after: str
) -> tuple[PaymentChange | None, list[PaymentChange]]:
    """Where the stream starts (the change resumed after, if any) and what it sends first."""
    async with uow as tx:
        if not resume_after:
            latest = await tx.changes.latest(payment_id)
            if latest is None:
                raise RuntimeError(f"payments/{payment_id} has no change log")
            return None, [latest]
        anchor = await tx.changes.get(resume_after)
        if anchor is None or anchor.payment_id != payment_id:
            raise InvalidArgument(
                [FieldViolation("resume_after", f"is not a change of payments/{payment_id}")],
                reason=UNKNOWN_RESUME_POINT,
            )
        return anchor, await tx.changes.after(payment_id, anchor.sequence, _BATCH)


async def _after(uow: PaymentsUnitOfWork, payment_id: str, sequence: int) -> list[PaymentChange]:
    async with uow as tx:
        return await tx.changes.after(payment_id, sequence, _BATCH)
