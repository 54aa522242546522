"""GetNotification, ListNotifications and GetDeliveryStats."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from gatehouse.notifications.adapters.repositories import address_hash
from gatehouse.notifications.domain.addresses import (
    AddressError,
    AddressKind,
    Channel,
    make_address,
)
from gatehouse.notifications.domain.notifications import Category, Notification, Status
from gatehouse.notifications.handlers.common import (
    READ_ALL,
    ROLE_NAME,
    USER_NAME,
    NotificationsDeps,
    Principal,
    may_see,
)
from gatehouse.notifications.handlers.ports import (
    NotificationFilter,
    NotificationsUnitOfWork,
    PageCursor,
    StatsRow,
)
from gatehouse.runtime.errors import FieldViolation, InvalidArgument, NotFound, permission_missing

NOTIFICATION_NOT_FOUND = "NOTIFICATION_NOT_FOUND"
INVALID_PAGE_TOKEN = "INVALID_PAGE_TOKEN"  # noqa: S105 - an error reason, not a secret
INVALID_PAGE_SIZE = "INVALID_PAGE_SIZE"
INVALID_ORDER_BY = "INVALID_ORDER_BY"
INVALID_TIME_RANGE = "INVALID_TIME_RANGE"
INVALID_RECIPIENT = "INVALID_RECIPIENT"
MAX_STATS_RANGE = timedelta(days=90)


async def get_notification(
    notification_id: str, principal: Principal, uow: NotificationsUnitOfWork
) -> Notification:
    async with uow as tx:
        found = await tx.notifications.get(notification_id)
    if found is None:
        if principal.has(READ_ALL):
            raise NotFound(f"notifications/{notification_id}", reason=NOTIFICATION_NOT_FOUND)
        raise permission_missing(READ_ALL)
    if not may_see(found, principal):
        raise permission_missing(READ_ALL)
    return found


@dataclass(frozen=True, slots=True)
class ListNotifications:
    page_size: int = 0
    page_token: str = ""
    recipient: str = ""
    channels: tuple[Channel | None, ...] = ()
    statuses: tuple[Status | None, ...] = ()
    categories: tuple[Category | None, ...] = ()
    created_from: datetime | None = None
    created_before: datetime | None = None
    batch_id: str = ""
    related_resource: str = ""
    order_by: str = ""


@dataclass(frozen=True, slots=True)
class NotificationPage:
    notifications: list[Notification]
    next_page_token: str


def _query_hash(query: ListNotifications) -> str:
    parts = [
        query.recipient,
        sorted(c.value for c in query.channels if c),
        sorted(s.value for s in query.statuses if s),
        sorted(c.value for c in query.categories if c),
        query.created_from.isoformat() if query.created_from else "",
        query.created_before.isoformat() if query.created_before else "",
        query.batch_id,
        query.related_resource,
        query.order_by.strip(),
    ]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def _encode_token(last: Notification, query_hash: str) -> str:
    raw = json.dumps([last.create_time.isoformat(), last.id, query_hash]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_token(token: str, query_hash: str) -> PageCursor:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        when, last_id, issued_for = json.loads(raw)
        cursor = PageCursor(datetime.fromisoformat(when), str(last_id))
    except (ValueError, TypeError):
        cursor = None
        issued_for = None
    if cursor is None or issued_for != query_hash or cursor.create_time.tzinfo is None:
        raise InvalidArgument(
            [FieldViolation("page_token", "is malformed or was issued for a different query")],
            reason=INVALID_PAGE_TOKEN,
        )
    return cursor


def _recipient_filter(
    recipient: str, principal: Principal, deps: NotificationsDeps
) -> dict[str, str]:
    if not recipient:
        return {}
    if recipient.startswith("users/"):
        if USER_NAME.fullmatch(recipient) is None:
            raise _bad_recipient()
        if recipient != principal.user and not principal.has(READ_ALL):
            raise permission_missing(READ_ALL)
        return {"user": recipient}
    if recipient.startswith("roles/"):
        if ROLE_NAME.fullmatch(recipient) is None:
            raise _bad_recipient()
        if not principal.has(READ_ALL):
            raise permission_missing(READ_ALL)
        return {"role": recipient}
    if not principal.has(READ_ALL):
        raise permission_missing(READ_ALL)
    kind = (
        AddressKind.EMAIL
        if "@" in recipient
        else AddressKind.PHONE
        if recipient.startswith("+")
        else AddressKind.WEBHOOK_URL
    )
    try:
        address = make_address(kind, recipient, deps.address_rules)
    except AddressError:
        raise _bad_recipient() from None
    return {"address_key": address_hash(address)}


def _bad_recipient() -> InvalidArgument:
    return InvalidArgument(
        [
            FieldViolation(
                "recipient", "must be users/{user}, roles/{role} or an email, phone or URL"
            )
        ],
        reason=INVALID_RECIPIENT,
    )


async def list_notifications(
    query: ListNotifications,
    principal: Principal,
    uow: NotificationsUnitOfWork,
    deps: NotificationsDeps,
) -> NotificationPage:
    if query.page_size < 0:
        raise InvalidArgument(
            [FieldViolation("page_size", "must not be negative")], reason=INVALID_PAGE_SIZE
        )
    order = " ".join(query.order_by.split()).lower()
    if order not in ("", "create_time desc", "create_time", "create_time asc"):
        raise InvalidArgument(
            [FieldViolation("order_by", "must be 'create_time desc' or 'create_time asc'")],
            reason=INVALID_ORDER_BY,
        )
    if (
        query.created_from is not None
        and query.created_before is not None
        and query.created_before < query.created_from
    ):
        raise InvalidArgument(
            [FieldViolation("create_time_range", "end is before start")],
            reason=INVALID_TIME_RANGE,
        )
    for name, values in (
        ("channels", query.channels),
        ("statuses", query.statuses),
        ("categories", query.categories),
    ):
        if any(value is None for value in values):
            raise InvalidArgument([FieldViolation(name, "UNSPECIFIED is not a filter value")])
    recipient = _recipient_filter(query.recipient, principal, deps)
    where = NotificationFilter(
        visible_to=None if principal.has(READ_ALL) else principal.user,
        channels=frozenset(c for c in query.channels if c),
        statuses=frozenset(s for s in query.statuses if s),
        categories=frozenset(c for c in query.categories if c),
        created_from=query.created_from,
        created_before=query.created_before,
        batch_id=query.batch_id,
        related_resource=query.related_resource,
        **recipient,
    )
    query_hash = _query_hash(query)
    after = _decode_token(query.page_token, query_hash) if query.page_token else None
    size = 50 if query.page_size == 0 else min(query.page_size, 500)
    async with uow as tx:
        found = await tx.notifications.page(
            where, newest_first=order in ("", "create_time desc"), after=after, limit=size + 1
        )
    more = len(found) > size
    found = found[:size]
    token = _encode_token(found[-1], query_hash) if more and found else ""
    return NotificationPage(found, token)


@dataclass(frozen=True, slots=True)
class DeliveryStats:
    start: datetime
    end: datetime
    rows: list[StatsRow]

    @property
    def total(self) -> int:
        return sum(row.count for row in self.rows)


_CHANNEL_ORDER = list(Channel)
_STATUS_ORDER = list(Status)


async def delivery_stats(
    start: datetime | None,
    end: datetime | None,
    channels: tuple[Channel | None, ...],
    categories: tuple[Category | None, ...],
    uow: NotificationsUnitOfWork,
    deps: NotificationsDeps,
) -> DeliveryStats:
    now = deps.clock()
    end = end or now
    start = start or end - timedelta(hours=24)
    if end < start or end - start > MAX_STATS_RANGE:
        raise InvalidArgument(
            [FieldViolation("time_range", "end must not be before start, nor 90 days after it")],
            reason=INVALID_TIME_RANGE,
        )
    async with uow as tx:
        rows = await tx.notifications.stats(
            start,
            end,
            frozenset(c for c in channels if c),
            frozenset(c for c in categories if c),
        )
    rows = [row for row in rows if row.count]
    rows.sort(key=lambda r: (_CHANNEL_ORDER.index(r.channel), _STATUS_ORDER.index(r.status)))
    return DeliveryStats(start, end, rows)
