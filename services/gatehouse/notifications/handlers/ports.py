"""The interfaces the use cases depend on; adapters implement them (SQLAlchemy, SMTP, HTTP
webhooks, auth over gRPC, the key-value cache) and tests may substitute their own."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from gatehouse.notifications.domain.addresses import Channel
from gatehouse.notifications.domain.notifications import (
    Category,
    DeliveryChange,
    Notification,
    Outcome,
    RateWindow,
    Status,
)
from gatehouse.notifications.domain.preferences import Preferences
from gatehouse.notifications.domain.templates import Template
from gatehouse.runtime.db import UnitOfWork
from gatehouse.runtime.outbox import Outbox

Clock = Callable[[], datetime]
IdFactory = Callable[[], str]


# --- storage ---------------------------------------------------------------------------------


class StaleVersionError(Exception):
    """The row changed since it was loaded (another worker or request saved it first)."""


@dataclass(frozen=True, slots=True)
class NotificationFilter:
    visible_to: str | None = None  # None: all (notifications.read_all)
    user: str = ""
    role: str = ""
    address_key: str = ""
    channels: frozenset[Channel] = frozenset()
    statuses: frozenset[Status] = frozenset()
    categories: frozenset[Category] = frozenset()
    created_from: datetime | None = None
    created_before: datetime | None = None
    batch_id: str = ""
    related_resource: str = ""


@dataclass(frozen=True, slots=True)
class PageCursor:
    create_time: datetime
    notification_id: str


@dataclass(frozen=True, slots=True)
class StatsRow:
    channel: Channel
    status: Status
    count: int


class NotificationRepository(Protocol):
    async def add(self, notification: Notification) -> None: ...

    async def get(self, notification_id: str) -> Notification | None:
        """With its attempts, oldest first."""
        ...

    async def update(
        self,
        notification: Notification,
        *,
        expected_version: int,
        lease: tuple[str, datetime] | None = None,
    ) -> None:
        """Save if still at `expected_version` (else `StaleVersionError`, nothing written).
        `lease` (owner, until) marks the worker that claimed it; None clears it."""
        ...

    async def page(
        self, where: NotificationFilter, *, newest_first: bool, after: PageCursor | None, limit: int
    ) -> list[Notification]: ...

    async def due(self, now: datetime, lease_expired_before: datetime, limit: int) -> list[str]:
        """Ids of notifications a worker may claim: QUEUED or SCHEDULED with their time
        come, and SENDING ones whose lease ran out (their worker died), most urgent first."""
        ...

    async def lease(self, notification_id: str) -> tuple[str, datetime | None] | None:
        """(owner, until) of the current lease; None when there is no such notification."""
        ...

    async def held_for(self, address_key: str, channel: Channel) -> int:
        """How many notifications to this address wait in RATE_LIMITED."""
        ...

    async def stats(
        self,
        created_from: datetime,
        created_before: datetime,
        channels: frozenset[Channel],
        categories: frozenset[Category],
    ) -> list[StatsRow]: ...


class ChangeRepository(Protocol):
    async def add(self, change: DeliveryChange) -> None: ...

    async def get(self, change_id: str) -> DeliveryChange | None: ...

    async def latest(self, notification_id: str) -> DeliveryChange | None: ...

    async def after_sequence(
        self, notification_id: str, sequence: int, limit: int
    ) -> list[DeliveryChange]: ...

    async def since(self, after_id: str, limit: int) -> list[DeliveryChange]:
        """Changes of every notification with an id greater than `after_id`, in id order."""
        ...

    async def oldest_id(self) -> str | None: ...


class TemplateRepository(Protocol):
    async def add(self, template: Template) -> None:
        """Insert a version; `DuplicateKeyError` if (id, version) exists."""
        ...

    async def get(self, template_id: str, version: int = 0) -> Template | None:
        """The version, or the latest for 0."""
        ...

    async def exists(self, template_id: str) -> bool: ...

    async def page(self, channel: Channel | None, after: str, limit: int) -> list[Template]:
        """Latest versions ordered by id, after `after`."""
        ...


class PreferenceRepository(Protocol):
    async def get(self, user: str) -> Preferences | None: ...

    async def save(self, preferences: Preferences, *, expected_version: int) -> None:
        """Insert (expected 0) or update if still at `expected_version`."""
        ...


class RateLimitRepository(Protocol):
    async def window(self, key: str) -> RateWindow | None:
        """The recipient's window, locked for this transaction where the backend can."""
        ...

    async def save(self, key: str, window: RateWindow) -> None: ...


@dataclass(frozen=True, slots=True)
class StoredReply:
    fingerprint: bytes
    expires_at: datetime
    body: bytes


class ReplyStore(Protocol):
    async def get(self, scope: str, request_id: str) -> StoredReply | None: ...

    async def add(
        self,
        scope: str,
        request_id: str,
        fingerprint: bytes,
        body: bytes,
        *,
        now: datetime,
        ttl: timedelta,
    ) -> None:
        """`DuplicateKeyError` when the id is taken (roll back, then replay)."""
        ...

    async def complete(self, scope: str, request_id: str, body: bytes) -> None:
        """Replace the body of a reply claimed in this transaction."""
        ...

    async def delete(self, scope: str, request_id: str) -> None: ...


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A notification as it was when its retries ran out."""

    notification: Notification
    dead_time: datetime


class DeadLetterRepository(Protocol):
    async def add(self, notification: Notification, now: datetime) -> None:
        """Record it (replacing an earlier dead letter of the same notification)."""
        ...

    async def remove(self, notification_id: str) -> None: ...

    async def page(self, after: tuple[datetime, str] | None, limit: int) -> list[DeadLetter]:
        """Oldest first, after the (dead_time, notification_id) given."""
        ...


@dataclass(frozen=True, slots=True)
class SweepCounts:
    notifications: int = 0
    changes: int = 0
    dead_letters: int = 0


class RetentionStore(Protocol):
    async def sweep_finished(self, before: datetime, limit: int) -> SweepCounts:
        """Delete up to `limit` final notifications last changed before `before`, with their
        change log and dead letters. Idempotent and safe against a concurrent sweep or
        requeue: rows that no longer qualify are left alone."""
        ...

    async def sweep_rate_windows(self, before: datetime, limit: int) -> int:
        """Delete up to `limit` rate-limit windows that opened before `before`."""
        ...

    async def sweep_replies(self, now: datetime, limit: int) -> int:
        """Delete up to `limit` stored idempotent replies that expired by `now`."""
        ...


class NotificationsUnitOfWork(UnitOfWork, Protocol):
    notifications: NotificationRepository
    changes: ChangeRepository
    templates: TemplateRepository
    preferences: PreferenceRepository
    rate_limits: RateLimitRepository
    replies: ReplyStore
    dead_letters: DeadLetterRepository
    retention: RetentionStore
    outbox: Outbox


# --- providers --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """One attempt's input to a sender."""

    notification: Notification
    attempt_number: int
    subject: str
    text_body: str
    html_body: str


@dataclass(frozen=True, slots=True)
class SendResult:
    outcome: Outcome
    provider: str
    provider_response: str = ""
    provider_message_id: str = ""
    error_code: str = ""
    error_message: str = ""


class Sender(Protocol):
    """A provider adapter. Must not raise for delivery failures: it classifies them."""

    @property
    def name(self) -> str: ...

    async def send(self, message: OutgoingMessage) -> SendResult: ...


class Senders(Protocol):
    def for_channel(self, channel: Channel) -> Sender: ...


# --- other services ---------------------------------------------------------------------------


class UserState(enum.StrEnum):
    ACTIVE = "ACTIVE"
    LOCKED = "LOCKED"
    DELETED = "DELETED"


@dataclass(frozen=True, slots=True)
class UserInfo:
    name: str  # users/{id}
    email: str
    display_name: str = ""
    state: UserState = UserState.ACTIVE


class DirectoryUnavailableError(Exception):
    """Auth cannot be asked right now (UNAVAILABLE to the caller, a retry for consumers)."""


class UserDirectory(Protocol):
    async def user(self, name: str) -> UserInfo | None:
        """None: no such user."""
        ...

    async def role_members(self, role: str, limit: int) -> list[UserInfo] | None:
        """Members of `roles/{role}` (at most `limit` + 1, so the caller sees an overflow);
        None: no such role."""
        ...


class SendQuota(Protocol):
    async def take(self, caller: str) -> timedelta | None:
        """None when `caller` may send now; else how long until it may."""
        ...


class NoSendQuota:
    async def take(self, caller: str) -> timedelta | None:
        return None


# --- cache ------------------------------------------------------------------------------------


class TemplateCache(Protocol):
    async def latest(self, template_id: str) -> Template | None: ...

    async def remember(self, template: Template) -> None: ...

    async def invalidate(self, template_id: str) -> None: ...

    async def rendered(self, key: str) -> bytes | None: ...

    async def remember_rendered(self, key: str, body: bytes) -> None: ...


class NoTemplateCache:
    async def latest(self, template_id: str) -> Template | None:
        return None

    async def remember(self, template: Template) -> None:
        return None

    async def invalidate(self, template_id: str) -> None:
        return None

    async def rendered(self, key: str) -> bytes | None:
        return None

    async def remember_rendered(self, key: str, body: bytes) -> None:
        return None
