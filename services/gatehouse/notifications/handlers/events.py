"""Event-driven messages: the mesh's events turned into notifications through the same path
as SendNotification (templates, preferences, rules, worker), sent by the service itself.

Each handler runs inside the consumer runner's transaction (processed-event marker first,
see `gatehouse.runtime.consumers`). The request id is a UUIDv5 of the event id and the
message kind, so a redelivered event sends nothing new even past the marker's retention.
A recipient that cannot be told (opted out, no address, unknown, deleted) is logged and
skipped: that is an outcome, not a failure to retry. Auth being unreachable is a failure:
the runner retries it with backoff and dead-letters it after its attempts.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from google.protobuf import timestamp_pb2
from google.type import money_pb2

from gatehouse.access.v1 import access_pb2
from gatehouse.access.v1 import events_pb2 as access_events
from gatehouse.auth.v1 import events_pb2 as auth_events
from gatehouse.common.v1 import common_pb2
from gatehouse.events.v1.envelope_pb2 import Event
from gatehouse.monitoring.v1 import events_pb2 as monitoring_events
from gatehouse.notifications.adapters.unit_of_work import SqlAlchemyNotificationsUnitOfWork
from gatehouse.notifications.domain import defaults
from gatehouse.notifications.domain.addresses import Channel
from gatehouse.notifications.domain.notifications import Category, Priority
from gatehouse.notifications.handlers.common import (
    NotificationsDeps,
    Principal,
    replayed,
    reply_key,
)
from gatehouse.notifications.handlers.ports import NotificationsUnitOfWork, UserInfo
from gatehouse.notifications.handlers.send import (
    SendNotification,
    TemplateInput,
    resolve_targets,
    send_in,
)
from gatehouse.payments.v1 import events_pb2 as payment_events
from gatehouse.runtime.consumers import Consumer
from gatehouse.runtime.errors import FailedPrecondition, NotFound
from gatehouse.runtime.tls import spiffe_id

log = logging.getLogger("gatehouse.notifications.events")

CONSUMER = "notifications"
_NAMESPACE = uuid.UUID("6f2b8a52-3c1d-5e7a-9b0c-6e6f74696679")


@dataclass(frozen=True, slots=True)
class EventMessages:
    """What the event handlers need from the composition root."""

    deps: Callable[[], NotificationsDeps]
    oncall_role: str = "roles/operator"
    emergency_role: str = "roles/resident"
    password_reset_url: str = "https://gatehouse.local/reset-password?token="  # noqa: S105 - a URL base


def request_id_for(event: Event, kind: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{event.id}/{kind}"))


def _service() -> Principal:
    return Principal(service=spiffe_id(CONSUMER))


def money_text(money: money_pb2.Money) -> str:
    amount = Decimal(money.units) + Decimal(money.nanos) / Decimal(1_000_000_000)
    return f"{amount.quantize(Decimal('0.01'))} {money.currency_code}"


def _time_text(stamp: timestamp_pb2.Timestamp) -> str:
    if not stamp.seconds and not stamp.nanos:
        return ""
    return stamp.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%d %H:%M UTC")


_SEVERITY = {
    common_pb2.SEVERITY_INFO: "INFO",
    common_pb2.SEVERITY_LOW: "LOW",
    common_pb2.SEVERITY_MEDIUM: "MEDIUM",
    common_pb2.SEVERITY_HIGH: "HIGH",
    common_pb2.SEVERITY_CRITICAL: "CRITICAL",
}
_MODES = {
    access_pb2.EMERGENCY_MODE_UNLOCK_ALL: "all doors unlocked, evacuate",
    access_pb2.EMERGENCY_MODE_LOCKDOWN: "building locked down, stay where you are",
}


async def _send(
    tx: NotificationsUnitOfWork,
    deps: NotificationsDeps,
    event: Event,
    kind: str,
    template: str,
    variables: dict[str, str],
    *,
    user: str = "",
    role: str = "",
    known: UserInfo | None = None,
    category: Category = Category.TRANSACTIONAL,
    priority: Priority = Priority.NORMAL,
) -> None:
    principal = _service()
    command = SendNotification(
        request_id=request_id_for(event, kind),
        fingerprint=hashlib.sha256(f"{event.id}/{kind}".encode()).digest(),
        channel=Channel.EMAIL,
        user=user,
        role=role,
        template=TemplateInput(name=f"templates/{template}", variables=variables),
        priority=priority,
        category=category,
        related_resource=event.subject,
        known_user=known,
    )
    key = reply_key("SendNotification", principal, command.request_id, command.fingerprint)
    if await replayed(tx, key, deps.clock()) is not None:
        return
    try:
        targets = await resolve_targets(command, deps)
        created = await send_in(tx, command, principal, deps, targets, key)
    except (FailedPrecondition, NotFound) as outcome:
        log.info("%s for %s: not sent (%s)", kind, event.subject, outcome.reason)
        return
    log.info("%s for %s: %d notifications queued", kind, event.subject, len(created))
    # The runner commits after this returns; wake the worker a moment later.
    asyncio.get_running_loop().call_later(0.05, deps.wake)


async def _payer(deps: NotificationsDeps, payer: str) -> UserInfo | None:
    return await deps.directory.user(payer) if payer else None


def build_consumer(
    uow: Callable[[], SqlAlchemyNotificationsUnitOfWork], messages: EventMessages
) -> Consumer[SqlAlchemyNotificationsUnitOfWork]:
    consumer: Consumer[SqlAlchemyNotificationsUnitOfWork] = Consumer(CONSUMER, uow)

    @consumer.handles("user.registered", auth_events.UserRegistered)
    async def welcome(
        event: Event, data: auth_events.UserRegistered, tx: NotificationsUnitOfWork
    ) -> None:
        await _send(
            tx,
            messages.deps(),
            event,
            "welcome",
            defaults.WELCOME,
            {"display_name": data.display_name, "email": data.email},
            user=data.user,
            known=UserInfo(data.user, data.email, data.display_name),
        )

    @consumer.handles("user.locked", auth_events.UserLocked)
    async def lockout(
        event: Event, data: auth_events.UserLocked, tx: NotificationsUnitOfWork
    ) -> None:
        await _send(
            tx,
            messages.deps(),
            event,
            "lockout",
            defaults.LOCKOUT,
            {
                "display_name": data.display_name,
                "failed_attempts": str(data.failed_attempts),
                "lock_expire_time": _time_text(data.lock_expire_time),
                "client_address": data.client_address,
            },
            user=data.user,
            known=UserInfo(data.user, data.email, data.display_name),
            category=Category.SECURITY,
            priority=Priority.HIGH,
        )

    @consumer.handles("password_reset.requested", auth_events.PasswordResetRequested)
    async def password_reset(
        event: Event, data: auth_events.PasswordResetRequested, tx: NotificationsUnitOfWork
    ) -> None:
        await _send(
            tx,
            messages.deps(),
            event,
            "password-reset",
            defaults.PASSWORD_RESET,
            {
                "display_name": data.display_name,
                "reset_link": messages.password_reset_url + data.reset_token,
                "expire_time": _time_text(data.expire_time),
                "client_address": data.client_address,
            },
            user=data.user,
            known=UserInfo(data.user, data.email, data.display_name),
            category=Category.SECURITY,
            priority=Priority.HIGH,
        )

    @consumer.handles("payment.processed", payment_events.PaymentProcessed)
    async def receipt(
        event: Event, data: payment_events.PaymentProcessed, tx: NotificationsUnitOfWork
    ) -> None:
        deps = messages.deps()
        payer = await _payer(deps, data.payer)
        await _send(
            tx,
            deps,
            event,
            "receipt",
            defaults.RECEIPT,
            {
                "display_name": payer.display_name if payer else "",
                "payment": data.payment,
                "amount": money_text(data.amount),
                "description": data.description,
                "card_last4": data.card_last4,
                "date": _time_text(data.complete_time)
                or datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            },
            user=data.payer,
            known=payer,
        )

    @consumer.handles("payment.failed", payment_events.PaymentFailed)
    async def payment_failed(
        event: Event, data: payment_events.PaymentFailed, tx: NotificationsUnitOfWork
    ) -> None:
        deps = messages.deps()
        payer = await _payer(deps, data.payer)
        await _send(
            tx,
            deps,
            event,
            "payment-failed",
            defaults.PAYMENT_FAILED,
            {
                "display_name": payer.display_name if payer else "",
                "payment": data.payment,
                "amount": money_text(data.amount),
                "failure_reason": data.failure_reason,
            },
            user=data.payer,
            known=payer,
        )

    @consumer.handles("payment.refunded", payment_events.PaymentRefunded)
    async def refund(
        event: Event, data: payment_events.PaymentRefunded, tx: NotificationsUnitOfWork
    ) -> None:
        deps = messages.deps()
        payer = await _payer(deps, data.payer)
        await _send(
            tx,
            deps,
            event,
            "refund",
            defaults.REFUND,
            {
                "display_name": payer.display_name if payer else "",
                "payment": data.payment,
                "refund_amount": money_text(data.refund_amount),
                "remaining_amount": money_text(data.remaining_amount),
                "reason": data.reason,
            },
            user=data.payer,
            known=payer,
        )

    @consumer.handles("visitor.checked_in", access_events.VisitorCheckedIn)
    async def visitor(
        event: Event, data: access_events.VisitorCheckedIn, tx: NotificationsUnitOfWork
    ) -> None:
        deps = messages.deps()
        host = await _payer(deps, data.host)
        await _send(
            tx,
            deps,
            event,
            "visitor-arrived",
            defaults.VISITOR,
            {
                "display_name": host.display_name if host else "",
                "visitor_name": data.display_name,
                "company": data.company,
                "building": data.building,
            },
            user=data.host,
            known=host,
            priority=Priority.HIGH,
        )

    @consumer.handles("alert.triggered", monitoring_events.AlertTriggered)
    async def alert(
        event: Event, data: monitoring_events.AlertTriggered, tx: NotificationsUnitOfWork
    ) -> None:
        severity = _SEVERITY.get(data.alert.severity, "INFO")
        await _send(
            tx,
            messages.deps(),
            event,
            "alert-oncall",
            defaults.ALERT,
            {
                "alert": data.alert.name,
                "severity": severity,
                "summary": data.alert.summary or data.alert.name,
                "description": data.alert.description,
                "building": data.building,
            },
            role=messages.oncall_role,
            category=Category.ALERT,
            # Critical alerts page through quiet hours; high ones skip the rate limit.
            priority=Priority.CRITICAL
            if severity == "CRITICAL"
            else Priority.HIGH
            if severity == "HIGH"
            else Priority.NORMAL,
        )

    @consumer.handles("emergency.triggered", access_events.EmergencyTriggered)
    async def emergency(
        event: Event, data: access_events.EmergencyTriggered, tx: NotificationsUnitOfWork
    ) -> None:
        variables = {
            "building": data.building,
            "mode": _MODES.get(data.mode, "emergency"),
            "reason": data.reason,
        }
        deps = messages.deps()
        for kind, role in (
            ("emergency", messages.emergency_role),
            ("emergency-oncall", messages.oncall_role),
        ):
            await _send(
                tx,
                deps,
                event,
                kind,
                defaults.EMERGENCY,
                variables,
                role=role,
                category=Category.EMERGENCY,
                priority=Priority.CRITICAL,
            )

    return consumer
