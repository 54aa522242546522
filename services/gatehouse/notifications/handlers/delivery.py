"""The delivery worker's rounds: claim what is due, apply the delivery rules, send, record.

One notification goes through three short transactions and a send between them:

1. *Claim.* Re-read it; apply the rules that hold at the time it falls due (opt-out now ->
   SUPPRESSED; quiet hours -> held until they end; the per-recipient rate limit -> held until
   the window reopens); otherwise move it to SENDING with a lease (this worker, until when)
   in a conditional update on its version. Two workers racing for it: one update wins, the
   other finds the version moved and leaves it.
2. *Send*, outside any transaction, under the sender's own timeout.
3. *Record* the attempt, if the lease is still ours: SENT, FAILED, a retry with backoff
   (SCHEDULED, RETRY_BACKOFF) or DEAD_LETTERED, with the change log entry and the event in
   the same commit.

A worker that dies between 1 and 3 leaves a SENDING row whose lease runs out; the next round
records that attempt as lost (transient, WORKER_LOST) and retries under the same rules. The
provider may have accepted the lost attempt: the retry carries the same Message-ID (email)
or Idempotency-Key (webhooks), so the receiver drops the duplicate.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from gatehouse.notifications.adapters.repositories import rate_key
from gatehouse.notifications.domain.notifications import (
    DUE,
    Attempt,
    HoldReason,
    Notification,
    Outcome,
    RateWindow,
    Status,
    bypasses_rate_limit,
    quiet_hours_release,
    suppression_for,
)
from gatehouse.notifications.handlers.common import NotificationsDeps, record_change
from gatehouse.notifications.handlers.ports import (
    NotificationsUnitOfWork,
    OutgoingMessage,
    Senders,
    SendResult,
    StaleVersionError,
)

log = logging.getLogger("gatehouse.notifications.delivery")

UowFactory = Callable[[], NotificationsUnitOfWork]
WORKER_LOST = "WORKER_LOST"
SENDER_CRASHED = "SENDER_ERROR"


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    owner: str
    batch_size: int = 100
    concurrency: int = 16
    send_timeout: timedelta = timedelta(seconds=30)

    @property
    def lease(self) -> timedelta:
        # Long enough that a live worker always records before anyone reclaims.
        return self.send_timeout * 2 + timedelta(seconds=30)


@dataclass(slots=True)
class RoundReport:
    claimed: int = 0
    sent: int = 0
    held: int = 0
    failed: int = 0
    retried: int = 0
    suppressed: int = 0
    lost: int = 0


async def deliver_due(
    uow: UowFactory, deps: NotificationsDeps, senders: Senders, options: WorkerOptions
) -> RoundReport:
    """One round: everything due now (up to a batch). The claims of a round share one
    transaction and so do the recorded outcomes (three transactions a round, whatever its
    size: SQLite has one writer, and PostgreSQL likes fewer commits too); the sends between
    them run `concurrency` at a time."""
    report = RoundReport()
    now = deps.clock()
    claimed: list[Notification] = []
    async with uow() as tx:
        ids = await tx.notifications.due(now, now, options.batch_size)
        if not ids:
            return report
        for notification_id in ids:
            taken = await _claim_in(tx, notification_id, deps, options, report)
            if taken is not None:
                claimed.append(taken)
        await tx.commit()
    report.claimed = len(claimed)
    if not claimed:
        return report
    gate = asyncio.Semaphore(options.concurrency)

    async def attempt_for(n: Notification) -> Attempt:
        async with gate:
            return await _attempt(senders, n, deps, options)

    attempts = await asyncio.gather(*(attempt_for(n) for n in claimed))
    async with uow() as tx:
        for n, attempt in zip(claimed, attempts, strict=True):
            await _record_in(tx, n, attempt, deps, options, report)
        await tx.commit()
    return report


async def _attempt(
    senders: Senders, n: Notification, deps: NotificationsDeps, options: WorkerOptions
) -> Attempt:
    start = deps.clock()
    result = await _send(senders, n, options)
    return Attempt(
        number=len(n.attempts) + 1,
        start_time=start,
        end_time=deps.clock(),
        outcome=result.outcome,
        provider=result.provider,
        provider_response=result.provider_response[:1024],
        provider_message_id=result.provider_message_id,
        error_code=result.error_code,
        error_message=result.error_message[:1024],
    )


async def _save(
    tx: NotificationsUnitOfWork,
    before: Notification,
    after: Notification,
    deps: NotificationsDeps,
    lease: tuple[str, datetime] | None = None,
) -> None:
    await tx.notifications.update(after, expected_version=before.version, lease=lease)
    await record_change(tx, after, before.status, deps)
    if after.status is Status.DEAD_LETTERED:
        await tx.dead_letters.add(after, after.update_time)


async def _record_in(
    tx: NotificationsUnitOfWork,
    claimed: Notification,
    attempt: Attempt,
    deps: NotificationsDeps,
    options: WorkerOptions,
    report: RoundReport,
) -> None:
    """Record the attempt if the lease is still ours (else another worker took it over after
    our lease ran out, and its outcome wins)."""
    current = await tx.notifications.get(claimed.id)
    lease = await tx.notifications.lease(claimed.id)
    if (
        current is None
        or lease is None
        or lease[0] != options.owner
        or current.version != claimed.version
    ):
        log.warning(
            "notifications/%s: lease lost while sending; the attempt is not recorded", claimed.id
        )
        return
    recorded = current.record(attempt, deps.retry, deps.rng, attempt.end_time)
    try:
        await _save(tx, current, recorded, deps)
    except StaleVersionError:
        return
    _count(report, recorded.status)


def _count(report: RoundReport, status: Status) -> None:
    if status is Status.SENT:
        report.sent += 1
    elif status is Status.SCHEDULED:
        report.retried += 1
    else:
        report.failed += 1


async def _send(senders: Senders, n: Notification, options: WorkerOptions) -> SendResult:
    sender = senders.for_channel(n.channel)
    message = OutgoingMessage(
        notification=n,
        attempt_number=len(n.attempts) + 1,
        subject=n.delivery.subject,
        text_body=n.delivery.text_body,
        html_body=n.delivery.html_body,
    )
    try:
        # The sender's own timeout should fire first; this one bounds a misbehaving adapter.
        async with asyncio.timeout(options.send_timeout.total_seconds() + 5):
            return await sender.send(message)
    except TimeoutError:
        return SendResult(
            Outcome.TRANSIENT_FAILURE,
            sender.name,
            error_code="PROVIDER_TIMEOUT",
            error_message="the provider did not answer in time",
        )
    except Exception as error:
        log.exception("sender %s failed on notifications/%s", sender.name, n.id)
        return SendResult(
            Outcome.TRANSIENT_FAILURE,
            sender.name,
            error_code=SENDER_CRASHED,
            error_message=f"the provider adapter failed: {type(error).__name__}",
        )


async def _claim(
    notification_id: str,
    uow: UowFactory,
    deps: NotificationsDeps,
    options: WorkerOptions,
    report: RoundReport,
) -> Notification | None:
    """`_claim_in` in a transaction of its own."""
    async with uow() as tx:
        taken = await _claim_in(tx, notification_id, deps, options, report)
        await tx.commit()
    return taken


async def _claim_in(
    tx: NotificationsUnitOfWork,
    notification_id: str,
    deps: NotificationsDeps,
    options: WorkerOptions,
    report: RoundReport,
) -> Notification | None:
    """The notification, moved to SENDING under our lease; None when there is nothing to send
    now (not due any more, taken by another worker, suppressed or held by a rule)."""
    now = deps.clock()
    n = await tx.notifications.get(notification_id)
    if n is None:
        return None
    if n.status is Status.SENDING:
        held = await tx.notifications.lease(notification_id)
        if held is not None and held[1] is not None and held[1] < now:
            await _record_lost(tx, n, deps, report)
        # Otherwise another worker holds it right now.
        return None
    if n.status not in DUE or n.next_attempt_time is None or n.next_attempt_time > now:
        return None
    after = await _apply_rules(tx, n, deps, now)
    lease: tuple[str, datetime] | None = None
    if after is None:
        after = n.start_sending(now)
        lease = (options.owner, now + options.lease)
    try:
        await _save(tx, n, after, deps, lease)
    except StaleVersionError:
        # Another worker changed it since it was read: theirs.
        return None
    if after.status is Status.SENDING:
        return after
    if after.status is Status.SUPPRESSED:
        report.suppressed += 1
    else:
        report.held += 1
    return None


async def _record_lost(
    tx: NotificationsUnitOfWork, n: Notification, deps: NotificationsDeps, report: RoundReport
) -> None:
    """Its worker died mid-attempt (the lease ran out): that attempt counts as lost."""
    now = deps.clock()
    lost = Attempt(
        number=len(n.attempts) + 1,
        start_time=n.update_time,
        end_time=now,
        outcome=Outcome.TRANSIENT_FAILURE,
        provider="",
        error_code=WORKER_LOST,
        error_message="the worker sending it stopped before recording the outcome",
    )
    try:
        await _save(tx, n, n.record(lost, deps.retry, deps.rng, now), deps)
    except StaleVersionError:
        return
    report.lost += 1


async def _apply_rules(
    tx: NotificationsUnitOfWork, n: Notification, deps: NotificationsDeps, now: datetime
) -> Notification | None:
    """The notification held or suppressed by a rule, or None to send it now."""
    preferences = await tx.preferences.get(n.user) if n.user else None
    suppression = suppression_for(preferences, n.channel, n.category)
    if suppression is not None:
        return n.suppress(suppression, now)
    release = quiet_hours_release(preferences, n.category, n.priority, now)
    if release is not None:
        return n.hold(HoldReason.QUIET_HOURS, release, now)
    if n.address is not None and not bypasses_rate_limit(n.category, n.priority):
        key = rate_key(n.address, n.channel)
        window = await tx.rate_limits.window(key) or RateWindow(now - deps.rate_limit.window, 0)
        taken, reopen = window.take(deps.rate_limit, now)
        if reopen is not None:
            return n.hold(HoldReason.RATE_LIMITED, reopen, now)
        await tx.rate_limits.save(key, taken)
    return None
