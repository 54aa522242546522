"""Retention: what the service forgets, and when.

Finished notifications (SENT, FAILED, SUPPRESSED, DEAD_LETTERED) last changed more than the
retention ago go, with their change-log entries and dead letters; so do rate-limit windows
that opened that long ago (an expired window counts like none), and idempotent replies past
their `idempotency_ttl` (a retry after that is a new request anyway). Unfinished notifications
stay whatever their age. Every replica may sweep: the deletes are conditional, so two sweeps
at once delete each row once, and a requeue that commits during a sweep keeps its rows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from gatehouse.notifications.handlers.common import NotificationsDeps
from gatehouse.notifications.handlers.ports import NotificationsUnitOfWork

log = logging.getLogger("gatehouse.notifications.retention")

UowFactory = Callable[[], NotificationsUnitOfWork]


@dataclass(frozen=True, slots=True)
class RetentionOptions:
    retention: timedelta = timedelta(days=30)
    batch: int = 500
    # Bounds one sweep; what is left waits for the next.
    max_batches: int = 1_000

    def __post_init__(self) -> None:
        if self.retention <= timedelta(0) or self.batch < 1 or self.max_batches < 1:
            raise ValueError("need a positive retention, batch and max_batches")


@dataclass(slots=True)
class SweepReport:
    notifications: int = 0
    changes: int = 0
    dead_letters: int = 0
    rate_limits: int = 0
    replies: int = 0

    @property
    def total(self) -> int:
        return (
            self.notifications + self.changes + self.dead_letters + self.rate_limits + self.replies
        )


async def sweep(uow: UowFactory, deps: NotificationsDeps, options: RetentionOptions) -> SweepReport:
    """One sweep: batches of `options.batch`, each in a transaction of its own, until nothing
    is left past the retention (or `max_batches`)."""
    report = SweepReport()
    now = deps.clock()
    cutoff = now - options.retention
    for _ in range(options.max_batches):
        async with uow() as tx:
            counts = await tx.retention.sweep_finished(cutoff, options.batch)
            await tx.commit()
        report.notifications += counts.notifications
        report.changes += counts.changes
        report.dead_letters += counts.dead_letters
        if counts.notifications < options.batch:
            break
    window_cutoff = now - max(options.retention, deps.rate_limit.window)
    for _ in range(options.max_batches):
        async with uow() as tx:
            swept = await tx.retention.sweep_rate_windows(window_cutoff, options.batch)
            await tx.commit()
        report.rate_limits += swept
        if swept < options.batch:
            break
    for _ in range(options.max_batches):
        async with uow() as tx:
            swept = await tx.retention.sweep_replies(now, options.batch)
            await tx.commit()
        report.replies += swept
        if swept < options.batch:
            break
    if report.total:
        log.info(
            "retention: forgot %d notifications, %d changes, %d dead letters, %d rate windows, "
            "%d replies",
            report.notifications,
            report.changes,
            report.dead_letters,
            report.rate_limits,
            report.replies,
        )
    return report
