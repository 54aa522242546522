"""What the notifications use cases share: the caller, the dependencies, access rules,
idempotent replies, the change log and the events."""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from google.protobuf import duration_pb2, timestamp_pb2

from gatehouse.events.v1.envelope_pb2 import Event
from gatehouse.notifications.domain.addresses import AddressRules
from gatehouse.notifications.domain.notifications import (
    DeliveryChange,
    Notification,
    RateLimit,
    RetryPolicy,
    Status,
)
from gatehouse.notifications.domain.templates import Actor
from gatehouse.notifications.handlers.ports import (
    Clock,
    IdFactory,
    NoSendQuota,
    NoTemplateCache,
    NotificationsUnitOfWork,
    SendQuota,
    TemplateCache,
    UserDirectory,
)
from gatehouse.notifications.v1 import events_pb2, notifications_pb2
from gatehouse.runtime.errors import (
    AlreadyExists,
    FieldViolation,
    InvalidArgument,
)
from gatehouse.runtime.events import new_event
from gatehouse.runtime.ids import new_ulid
from gatehouse.runtime.principal import Principal as RuntimePrincipal

log = logging.getLogger("gatehouse.notifications")

SERVICE_PATH = "gatehouse.notifications.v1.NotificationsService"
SOURCE = "notifications"

SEND = "notifications.send"
READ_ALL = "notifications.read_all"
MANAGE_TEMPLATES = "notifications.templates.manage"

PERMISSION_MISSING = "PERMISSION_MISSING"
REQUEST_ID_REUSED = "REQUEST_ID_REUSED"
INVALID_REQUEST_ID = "INVALID_REQUEST_ID"
INVALID_RESOURCE_NAME = "INVALID_RESOURCE_NAME"
ETAG_MISMATCH = "ETAG_MISMATCH"

SENT_EVENT = "notification.sent"
FAILED_EVENT = "notification.failed"

USER_NAME = re.compile(r"users/[A-Za-z0-9._~-]{1,128}")
ROLE_NAME = re.compile(r"roles/[a-z][a-z0-9-]{0,62}")


def utc_now() -> datetime:
    return datetime.now(UTC)


def _no_wake() -> None:
    return None


@dataclass(frozen=True, slots=True)
class Principal(RuntimePrincipal):
    """Who is asking (`gatehouse.runtime.principal`), and how this service records them."""

    def actor(self) -> Actor:
        return Actor(user=self.user, service=self.service, client_address=self.client_address)


@dataclass(frozen=True)
class NotificationsDeps:
    """Everything a use case needs besides its unit of work; built by the composition root."""

    directory: UserDirectory
    cache: TemplateCache = field(default_factory=NoTemplateCache)
    send_quota: SendQuota = field(default_factory=NoSendQuota)
    address_rules: AddressRules = field(default_factory=AddressRules)
    clock: Clock = field(default=utc_now)
    new_id: IdFactory = field(default=new_ulid)
    idempotency_ttl: timedelta = timedelta(hours=24)
    max_fanout: int = 10_000
    max_held_per_recipient: int = 100
    max_schedule_ahead: timedelta = timedelta(days=30)
    rate_limit: RateLimit = field(default_factory=RateLimit)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    heartbeat_interval: timedelta = timedelta(seconds=15)
    watch_poll_interval: timedelta = timedelta(seconds=1)
    replay_window: timedelta = timedelta(hours=24)
    # Wakes the delivery worker after a commit that queued something.
    wake: Callable[[], None] = field(default=_no_wake)
    rng: random.Random = field(default_factory=random.Random)


# --- access ----------------------------------------------------------------------------------


def may_see(notification: Notification, principal: Principal) -> bool:
    if principal.has(READ_ALL):
        return True
    return bool(principal.user) and principal.user in (notification.user, notification.sender.user)


def check_name(value: str, pattern: re.Pattern[str], field_name: str, shape: str) -> None:
    if pattern.fullmatch(value) is None:
        raise InvalidArgument(
            [FieldViolation(field_name, f"must look like '{shape}'")],
            reason=INVALID_RESOURCE_NAME,
        )


# --- idempotent replies ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReplyKey:
    scope: str
    request_id: str
    fingerprint: bytes


def reply_key(method: str, principal: Principal, request_id: str, fingerprint: bytes) -> ReplyKey:
    if not request_id:
        raise InvalidArgument(
            [FieldViolation("request_id", "is required: a client-chosen UUID per request")],
            reason=INVALID_REQUEST_ID,
        )
    return ReplyKey(f"{SERVICE_PATH}/{method}|{principal.identity}", request_id, fingerprint)


async def replayed(tx: NotificationsUnitOfWork, key: ReplyKey, now: datetime) -> bytes | None:
    """The first reply's body, if this request ran before (inside `tx`)."""
    stored = await tx.replies.get(key.scope, key.request_id)
    if stored is None:
        return None
    if stored.expires_at <= now:
        await tx.replies.delete(key.scope, key.request_id)
        return None
    if stored.fingerprint != key.fingerprint:
        raise AlreadyExists(
            "request_id was already used for a different request", reason=REQUEST_ID_REUSED
        )
    return stored.body


# --- the change log and events ---------------------------------------------------------------


def _stamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


_CHANNEL = {
    "EMAIL": notifications_pb2.CHANNEL_EMAIL,
    "SMS": notifications_pb2.CHANNEL_SMS,
    "WHATSAPP": notifications_pb2.CHANNEL_WHATSAPP,
    "PUSH": notifications_pb2.CHANNEL_PUSH,
    "CHAT": notifications_pb2.CHANNEL_CHAT,
    "WEBHOOK": notifications_pb2.CHANNEL_WEBHOOK,
}
_CATEGORY = {
    "TRANSACTIONAL": notifications_pb2.CATEGORY_TRANSACTIONAL,
    "ALERT": notifications_pb2.CATEGORY_ALERT,
    "SECURITY": notifications_pb2.CATEGORY_SECURITY,
    "EMERGENCY": notifications_pb2.CATEGORY_EMERGENCY,
    "MARKETING": notifications_pb2.CATEGORY_MARKETING,
}


def _event_for(n: Notification) -> Event | None:
    template = "" if n.template is None else n.template.name
    version = 0 if n.template is None else n.template.version
    last = n.attempts[-1] if n.attempts else None
    provider = "" if last is None else last.provider
    if n.status is Status.SENT:
        latency = duration_pb2.Duration()
        if n.send_time is not None:
            latency.FromTimedelta(max(n.send_time - n.due_time, timedelta(0)))
        return new_event(
            SENT_EVENT,
            source=SOURCE,
            subject=n.name,
            time=n.update_time,
            data=events_pb2.NotificationSent(
                notification=n.name,
                user=n.user,
                channel=_CHANNEL[n.channel.value],
                category=_CATEGORY[n.category.value],
                priority=int(n.priority),  # type: ignore[arg-type]
                template=template,
                template_version=version,
                provider=provider,
                provider_message_id=n.provider_message_id,
                attempt_count=len(n.attempts),
                batch_id=n.batch_id,
                related_resource=n.related_resource,
                create_time=_stamp(n.create_time),
                send_time=_stamp(n.send_time),
                delivery_latency=latency,
            ),
        )
    if n.status in (Status.FAILED, Status.DEAD_LETTERED):
        return new_event(
            FAILED_EVENT,
            source=SOURCE,
            subject=n.name,
            time=n.update_time,
            data=events_pb2.NotificationFailed(
                notification=n.name,
                user=n.user,
                channel=_CHANNEL[n.channel.value],
                category=_CATEGORY[n.category.value],
                priority=int(n.priority),  # type: ignore[arg-type]
                template=template,
                template_version=version,
                status=notifications_pb2.NOTIFICATION_STATUS_FAILED
                if n.status is Status.FAILED
                else notifications_pb2.NOTIFICATION_STATUS_DEAD_LETTERED,
                failure_code=n.failure_code,
                failure_message=n.failure_message,
                provider=provider,
                attempt_count=len(n.attempts),
                batch_id=n.batch_id,
                related_resource=n.related_resource,
                create_time=_stamp(n.create_time),
                fail_time=_stamp(n.update_time),
            ),
        )
    return None


async def record_change(
    tx: NotificationsUnitOfWork,
    notification: Notification,
    previous: Status | None,
    deps: NotificationsDeps,
) -> DeliveryChange:
    """Log the change for WatchDeliveries and publish its event, if it has one (same id)."""
    event = _event_for(notification) if notification.status is not previous else None
    change = DeliveryChange(
        id=deps.new_id() if event is None else event.id,
        notification_id=notification.id,
        sequence=notification.version,
        previous_status=previous,
        status=notification.status,
        time=notification.update_time,
        notification=notification,
        attempt=notification.attempts[-1]
        if notification.attempts and previous is Status.SENDING
        else None,
        visible_to=tuple(u for u in (notification.user, notification.sender.user) if u),
    )
    await tx.changes.add(change)
    if event is not None:
        await tx.outbox.add(event)
    return change
