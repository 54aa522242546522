"""Operator use cases on dead letters: list them, requeue them.

A requeue moves a DEAD_LETTERED notification back to QUEUED, due now, in one transaction:
the notification (its attempts kept; the retry policy counts afresh), its change-log entry
(WatchDeliveries shows DEAD_LETTERED -> QUEUED) and the removal of its dead letter. The
running worker then sends it. Requeueing twice, or a notification that is not dead-lettered,
changes nothing and says why.
"""

from __future__ import annotations

import enum
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from gatehouse.notifications.domain.notifications import RequeueRefusal, Status
from gatehouse.notifications.handlers.common import NotificationsDeps, record_change
from gatehouse.notifications.handlers.ports import (
    DeadLetter,
    NotificationsUnitOfWork,
    StaleVersionError,
)

log = logging.getLogger("gatehouse.notifications.dead_letters")

UowFactory = Callable[[], NotificationsUnitOfWork]
NAME_PREFIX = "notifications/"
MAX_LIST = 1_000
_ID = re.compile(r"[0-9A-Za-z]{1,26}")


class RequeueOutcome(enum.StrEnum):
    REQUEUED = "REQUEUED"
    NOT_FOUND = "NOT_FOUND"
    NOT_DEAD_LETTERED = "NOT_DEAD_LETTERED"
    CONTENT_ERASED = "CONTENT_ERASED"
    # Changed by someone else while we looked (another operator's requeue): not ours to redo.
    CONFLICT = "CONFLICT"


@dataclass(frozen=True, slots=True)
class RequeueResult:
    name: str
    outcome: RequeueOutcome
    status: Status | None = None  # its status after the call; None when not found

    @property
    def requeued(self) -> bool:
        return self.outcome is RequeueOutcome.REQUEUED


def notification_id(name: str) -> str | None:
    """`notifications/{id}` or a bare id -> the id; None when it cannot be one."""
    value = name.removeprefix(NAME_PREFIX)
    return value if _ID.fullmatch(value) else None


async def list_dead_letters(
    uow: UowFactory, limit: int, after: tuple[datetime, str] | None = None
) -> list[DeadLetter]:
    """The dead letters, oldest first (as they were when given up on)."""
    async with uow() as tx:
        return await tx.dead_letters.page(after, max(0, min(limit, MAX_LIST)))


async def requeue(uow: UowFactory, deps: NotificationsDeps, name: str) -> RequeueResult:
    """Requeue one dead-lettered notification, in a transaction of its own."""
    found_id = notification_id(name)
    if found_id is None:
        return RequeueResult(name, RequeueOutcome.NOT_FOUND)
    display = f"{NAME_PREFIX}{found_id}"
    async with uow() as tx:
        current = await tx.notifications.get(found_id)
        if current is None:
            return RequeueResult(display, RequeueOutcome.NOT_FOUND)
        refusal = current.requeue_refusal()
        if refusal is RequeueRefusal.NOT_DEAD_LETTERED:
            return RequeueResult(display, RequeueOutcome.NOT_DEAD_LETTERED, current.status)
        if refusal is RequeueRefusal.CONTENT_ERASED:
            return RequeueResult(display, RequeueOutcome.CONTENT_ERASED, current.status)
        requeued = current.requeue(deps.clock())
        try:
            await tx.notifications.update(requeued, expected_version=current.version)
        except StaleVersionError:
            return RequeueResult(display, RequeueOutcome.CONFLICT, current.status)
        await record_change(tx, requeued, current.status, deps)
        await tx.dead_letters.remove(found_id)
        await tx.commit()
    log.info("%s requeued by an operator after %d attempts", requeued.name, len(requeued.attempts))
    deps.wake()
    return RequeueResult(display, RequeueOutcome.REQUEUED, requeued.status)


async def requeue_many(
    uow: UowFactory, deps: NotificationsDeps, names: Sequence[str]
) -> list[RequeueResult]:
    """Each in its own transaction: one that cannot be requeued does not hold up the rest."""
    return [await requeue(uow, deps, name) for name in names]


async def requeue_all(
    uow: UowFactory, deps: NotificationsDeps, *, batch: int = 100
) -> list[RequeueResult]:
    """Every dead letter there is when called (those dead-lettered meanwhile are picked up
    too, until a page comes back empty)."""
    results: list[RequeueResult] = []
    after: tuple[datetime, str] | None = None
    while True:
        page = await list_dead_letters(uow, batch, after)
        if not page:
            return results
        for letter in page:
            results.append(await requeue(uow, deps, letter.notification.name))
        last = page[-1]
        after = (last.dead_time, last.notification.id)
