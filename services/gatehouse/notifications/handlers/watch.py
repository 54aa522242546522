"""WatchDeliveries: delivery status changes as they commit, of one notification or of all
the caller may see.

The change log (`notifications_changes`, written in the transaction of each change) is the
source of truth, so the first message, a resume and the live part come from one sequence on
any replica. The live hub is the doorbell: SENT and FAILED/DEAD_LETTERED changes publish
events on `events.notification`, and the subscription's heartbeat (every
`watch_poll_interval`) re-reads the log for the changes that publish none (QUEUED ->
SENDING, holds, retries) and for relays in other processes. The subscription is opened
before the log is first read, so nothing committing in between slips through.

Watching all: changes are read in id (ULID) order. A change committed late with an id a
little older than one already sent (two transactions racing) is caught by re-reading a
short look-back window and dropping ids already sent.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from gatehouse.notifications.domain.addresses import Channel
from gatehouse.notifications.domain.notifications import FINAL, DeliveryChange
from gatehouse.notifications.handlers.common import READ_ALL, NotificationsDeps, Principal
from gatehouse.notifications.handlers.ports import NotificationsUnitOfWork
from gatehouse.notifications.handlers.queries import get_notification
from gatehouse.runtime.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
)
from gatehouse.runtime.events import stream_for
from gatehouse.runtime.ids import encode_ulid, is_ulid, ulid_time
from gatehouse.runtime.live import LiveHeartbeat, LiveSource

UNKNOWN_RESUME_POINT = "UNKNOWN_RESUME_POINT"
RESUME_POINT_UNAVAILABLE = "RESUME_POINT_UNAVAILABLE"
SUBSCRIBER_TOO_SLOW = "SUBSCRIBER_TOO_SLOW"
SHUTTING_DOWN = "SHUTTING_DOWN"
NOTIFICATION_STREAM = stream_for("notification.sent")
_BATCH = 200
_LOOKBACK = timedelta(seconds=5)

UowFactory = Callable[[], NotificationsUnitOfWork]


@dataclass(frozen=True, slots=True)
class WatchDeliveries:
    notification_id: str = ""
    channels: frozenset[Channel] = frozenset()
    resume_after: str = ""


@dataclass(frozen=True, slots=True)
class ChangeItem:
    change: DeliveryChange
    first: bool = False


@dataclass(frozen=True, slots=True)
class HeartbeatItem:
    time: datetime
    last_event_id: str


WatchItem = ChangeItem | HeartbeatItem


def floor_id(when: datetime) -> str:
    """The smallest ULID of the millisecond `when` falls in."""
    return encode_ulid(int(when.timestamp() * 1000) << 80)


def _unknown(detail: str) -> InvalidArgument:
    return InvalidArgument([FieldViolation("resume_after", detail)], reason=UNKNOWN_RESUME_POINT)


async def watch_deliveries(
    query: WatchDeliveries,
    principal: Principal,
    uow: UowFactory,
    live: LiveSource,
    deps: NotificationsDeps,
    stopping: asyncio.Event | None = None,
) -> AsyncIterator[WatchItem]:
    if query.notification_id:
        items = _watch_one(query, principal, uow, live, deps, stopping)
    else:
        items = _watch_all(query, principal, uow, live, deps, stopping)
    async for item in items:
        yield item


async def _watch_one(
    query: WatchDeliveries,
    principal: Principal,
    uow: UowFactory,
    live: LiveSource,
    deps: NotificationsDeps,
    stopping: asyncio.Event | None,
) -> AsyncIterator[WatchItem]:
    notification = await get_notification(query.notification_id, principal, uow())
    name = notification.name
    subscription = await live.subscribe(
        [NOTIFICATION_STREAM],
        filter=lambda event: event.subject == name,
        stopping=stopping,
        heartbeat_interval=deps.watch_poll_interval,
        overflow_reason=SUBSCRIBER_TOO_SLOW,
    )
    last_id = ""
    try:
        async with uow() as tx:
            if query.resume_after:
                anchor = await tx.changes.get(query.resume_after)
                if anchor is None or anchor.notification_id != notification.id:
                    raise _unknown(f"is not a change of {name}")
                pending = await tx.changes.after_sequence(notification.id, anchor.sequence, _BATCH)
                sequence, status, first = anchor.sequence, anchor.status, False
                last_id = anchor.id
            else:
                latest = await tx.changes.latest(notification.id)
                if latest is None:
                    raise RuntimeError(f"{name} has no change log")
                pending, sequence, status, first = [latest], 0, None, True
        idle_since = deps.clock()
        while True:
            for change in pending:
                yield ChangeItem(change, first=first)
                first = False
                last_id, sequence, status = change.id, change.sequence, change.status
                idle_since = deps.clock()
            if status in FINAL:
                return
            try:
                message = await anext(subscription)
            except StopAsyncIteration:
                break
            except ResourceExhausted as overflow:
                overflow.metadata = {"last_event_id": last_id}
                raise
            async with uow() as tx:
                pending = await tx.changes.after_sequence(notification.id, sequence, _BATCH)
            if (
                not pending
                and isinstance(message, LiveHeartbeat)
                and deps.clock() - idle_since >= deps.heartbeat_interval
            ):
                idle_since = deps.clock()
                yield HeartbeatItem(idle_since, last_id)
    finally:
        await subscription.aclose()
    if subscription.ended_by is not None:
        draining = Unavailable(
            "the server is shutting down; reconnect with resume_after", reason=SHUTTING_DOWN
        )
        draining.metadata["last_event_id"] = last_id
        raise draining


async def _watch_all(
    query: WatchDeliveries,
    principal: Principal,
    uow: UowFactory,
    live: LiveSource,
    deps: NotificationsDeps,
    stopping: asyncio.Event | None,
) -> AsyncIterator[WatchItem]:
    read_all = principal.has(READ_ALL)

    def visible(change: DeliveryChange) -> bool:
        if query.channels and change.notification.channel not in query.channels:
            return False
        return read_all or (bool(principal.user) and principal.user in change.visible_to)

    subscription = await live.subscribe(
        [NOTIFICATION_STREAM],
        stopping=stopping,
        heartbeat_interval=deps.watch_poll_interval,
        overflow_reason=SUBSCRIBER_TOO_SLOW,
    )
    last_id = query.resume_after
    try:
        if query.resume_after:
            await _check_resume_point(query.resume_after, uow, deps)
            cursor = _Cursor(query.resume_after)
        else:
            cursor = _Cursor(floor_id(deps.clock()))
        idle_since = deps.clock()
        while True:
            changes, full = await cursor.read(uow)
            for change in changes:
                if visible(change):
                    last_id = change.id
                    idle_since = deps.clock()
                    yield ChangeItem(change)
            if full:
                continue
            try:
                message = await anext(subscription)
            except StopAsyncIteration:
                break
            except ResourceExhausted as overflow:
                overflow.metadata = {"last_event_id": last_id}
                raise
            if (
                isinstance(message, LiveHeartbeat)
                and deps.clock() - idle_since >= deps.heartbeat_interval
            ):
                idle_since = deps.clock()
                yield HeartbeatItem(idle_since, last_id)
    finally:
        await subscription.aclose()
    if subscription.ended_by is not None:
        draining = Unavailable(
            "the server is shutting down; reconnect with resume_after", reason=SHUTTING_DOWN
        )
        draining.metadata["last_event_id"] = last_id
        raise draining


class _Cursor:
    """Where a watch of all notifications is in the change log: everything after `start`,
    re-reading a short look-back window so a change that committed late with an older id is
    still sent, once."""

    def __init__(self, start: str) -> None:
        self._start = start
        self._newest = start
        self._sent: OrderedDict[str, None] = OrderedDict()

    async def read(self, uow: UowFactory) -> tuple[list[DeliveryChange], bool]:
        """New changes in id order, and whether the read was full (more may be waiting)."""
        lookback = floor_id(ulid_time(self._newest) - _LOOKBACK)
        async with uow() as tx:
            changes = await tx.changes.since(max(lookback, self._start), _BATCH * 5)
            if len(changes) >= _BATCH * 5 and all(c.id in self._sent for c in changes):
                # A busy look-back window holds only what was sent: move on from the newest.
                changes = await tx.changes.since(self._newest, _BATCH * 5)
        fresh = []
        for change in changes:
            if change.id in self._sent or change.id <= self._start:
                continue
            self._sent[change.id] = None
            self._newest = max(self._newest, change.id)
            fresh.append(change)
        horizon = floor_id(ulid_time(self._newest) - _LOOKBACK * 2)
        while self._sent and next(iter(self._sent)) < horizon:
            self._sent.popitem(last=False)
        return fresh, len(changes) >= _BATCH * 5


async def _check_resume_point(resume_after: str, uow: UowFactory, deps: NotificationsDeps) -> None:
    if not is_ulid(resume_after):
        raise _unknown("is not an event id from this stream")
    async with uow() as tx:
        found = await tx.changes.get(resume_after)
        oldest = await tx.changes.oldest_id()
    if found is not None:
        return
    if (
        oldest is None
        or resume_after < oldest
        or ulid_time(resume_after) < deps.clock() - deps.replay_window
    ):
        raise FailedPrecondition(
            "the resume point is older than the replay window; re-read with "
            "ListNotifications, then watch afresh",
            reason=RESUME_POINT_UNAVAILABLE,
        )
    raise _unknown("is not an event id from this stream")
