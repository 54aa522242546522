"""The notification aggregate and its delivery rules: statuses, holds, suppression,
attempts, retries with backoff, the per-recipient rate limit.

    QUEUED | SCHEDULED  -> SENDING (claimed by a worker), SCHEDULED (held), SUPPRESSED
    SENDING             -> SENT, FAILED, DEAD_LETTERED, SCHEDULED (retry backoff)
    DEAD_LETTERED       -> QUEUED (an operator requeued it: attempts kept, a fresh set granted)
Final: SENT, FAILED, SUPPRESSED, DEAD_LETTERED (final for the worker; only an operator
reopens a dead letter).
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from gatehouse.notifications.domain.addresses import Address, Channel
from gatehouse.notifications.domain.preferences import Preferences
from gatehouse.notifications.domain.templates import REDACTED, Actor


class Priority(enum.IntEnum):
    LOW = 1
    NORMAL = 2
    HIGH = 3
    CRITICAL = 4


class Category(enum.StrEnum):
    TRANSACTIONAL = "TRANSACTIONAL"
    ALERT = "ALERT"
    SECURITY = "SECURITY"
    EMERGENCY = "EMERGENCY"
    MARKETING = "MARKETING"


class Status(enum.StrEnum):
    QUEUED = "QUEUED"
    SCHEDULED = "SCHEDULED"
    SENDING = "SENDING"
    SENT = "SENT"
    FAILED = "FAILED"
    SUPPRESSED = "SUPPRESSED"
    DEAD_LETTERED = "DEAD_LETTERED"


class HoldReason(enum.StrEnum):
    SCHEDULED = "SCHEDULED"
    QUIET_HOURS = "QUIET_HOURS"
    RATE_LIMITED = "RATE_LIMITED"
    RETRY_BACKOFF = "RETRY_BACKOFF"


class SuppressionReason(enum.StrEnum):
    OPTED_OUT = "OPTED_OUT"
    NO_ADDRESS = "NO_ADDRESS"
    RECIPIENT_INACTIVE = "RECIPIENT_INACTIVE"


class RequeueRefusal(enum.StrEnum):
    """Why a notification cannot be requeued."""

    NOT_DEAD_LETTERED = "NOT_DEAD_LETTERED"
    # Its deliverable copy held sensitive values (or predates requeueing) and was erased.
    CONTENT_ERASED = "CONTENT_ERASED"


class Outcome(enum.StrEnum):
    SUCCEEDED = "SUCCEEDED"
    TRANSIENT_FAILURE = "TRANSIENT_FAILURE"
    PERMANENT_FAILURE = "PERMANENT_FAILURE"


FINAL = frozenset({Status.SENT, Status.FAILED, Status.SUPPRESSED, Status.DEAD_LETTERED})
DUE = frozenset({Status.QUEUED, Status.SCHEDULED})
URGENT_CATEGORIES = frozenset({Category.SECURITY, Category.EMERGENCY})


def ignores_opt_out(category: Category) -> bool:
    return category in URGENT_CATEGORIES


def ignores_quiet_hours(category: Category, priority: Priority) -> bool:
    return category in URGENT_CATEGORIES or priority is Priority.CRITICAL


def bypasses_rate_limit(category: Category, priority: Priority) -> bool:
    return category in URGENT_CATEGORIES or priority >= Priority.HIGH


def suppression_for(
    preferences: Preferences | None, channel: Channel, category: Category
) -> SuppressionReason | None:
    """Opt-outs and marketing consent (a literal address has no preferences)."""
    if preferences is None or ignores_opt_out(category):
        return None
    if preferences.for_channel(channel).opted_out:
        return SuppressionReason.OPTED_OUT
    if category is Category.MARKETING and not preferences.marketing_opt_in:
        return SuppressionReason.OPTED_OUT
    return None


def quiet_hours_release(
    preferences: Preferences | None, category: Category, priority: Priority, now: datetime
) -> datetime | None:
    if preferences is None or preferences.quiet_hours is None:
        return None
    if ignores_quiet_hours(category, priority):
        return None
    return preferences.quiet_hours.release_time(now)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter; `max_attempts` counts every attempt, the first too."""

    max_attempts: int = 5
    first_backoff: timedelta = timedelta(seconds=30)
    multiplier: float = 2.0
    max_backoff: timedelta = timedelta(hours=1)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if self.first_backoff <= timedelta(0) or self.max_backoff < self.first_backoff:
            raise ValueError("need 0 < first_backoff <= max_backoff")
        if self.multiplier < 1:
            raise ValueError("multiplier must be >= 1")

    def backoff(self, failed_attempts: int, rng: random.Random) -> timedelta:
        """Wait after the `failed_attempts`-th failure: grows, capped, jittered in [0.5, 1]."""
        grown = self.first_backoff * self.multiplier ** max(0, failed_attempts - 1)
        return min(grown, self.max_backoff) * rng.uniform(0.5, 1.0)


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most `count` messages per `window` per recipient address and channel."""

    count: int = 1
    window: timedelta = timedelta(minutes=1)

    def __post_init__(self) -> None:
        if self.count < 1 or self.window <= timedelta(0):
            raise ValueError("a rate limit needs count >= 1 and a positive window")


@dataclass(frozen=True, slots=True)
class RateWindow:
    """The state of one recipient's window: when it opened and what it has used."""

    start: datetime
    used: int

    def take(self, limit: RateLimit, now: datetime) -> tuple[RateWindow, datetime | None]:
        """(new state, None) when a message may go now; (state, reopen time) otherwise."""
        if now >= self.start + limit.window:
            return RateWindow(now, 1), None
        if self.used < limit.count:
            return RateWindow(self.start, self.used + 1), None
        return self, self.start + limit.window


@dataclass(frozen=True, slots=True)
class Attempt:
    number: int
    start_time: datetime
    end_time: datetime
    outcome: Outcome
    provider: str
    provider_response: str = ""
    provider_message_id: str = ""
    error_code: str = ""
    error_message: str = ""


@dataclass(frozen=True, slots=True)
class TemplateUse:
    name: str  # templates/{id}
    version: int
    locale: str
    variables: tuple[tuple[str, str], ...]  # stored values, sensitive ones redacted


@dataclass(frozen=True, slots=True)
class RecipientSpec:
    """The recipient as the sender gave it: exactly one of the three."""

    user: str = ""
    role: str = ""
    address: Address | None = None


@dataclass(frozen=True, slots=True)
class Delivery:
    """What the provider gets: the rendered message with sensitive values in it. Kept only
    until the notification is final, then erased."""

    subject: str = ""
    text_body: str = ""
    html_body: str = ""


@dataclass(frozen=True, slots=True)
class Notification:
    id: str
    recipient: RecipientSpec
    user: str
    address: Address | None
    channel: Channel
    template: TemplateUse | None
    subject: str  # stored copy (redacted)
    text_body: str  # stored copy (redacted)
    priority: Priority
    category: Category
    status: Status
    hold_reason: HoldReason | None
    suppression_reason: SuppressionReason | None
    schedule_time: datetime | None
    next_attempt_time: datetime | None
    sender: Actor
    batch_id: str
    related_resource: str
    create_time: datetime
    update_time: datetime
    delivery: Delivery = field(default_factory=Delivery)
    attempts: tuple[Attempt, ...] = ()
    send_time: datetime | None = None
    provider_message_id: str = ""
    failure_code: str = ""
    failure_message: str = ""
    version: int = 1
    # Attempts made before the last requeue: each requeue grants `max_attempts` new ones.
    attempt_base: int = 0

    @property
    def name(self) -> str:
        return f"notifications/{self.id}"

    @property
    def is_final(self) -> bool:
        return self.status in FINAL

    @property
    def due_time(self) -> datetime:
        """When it was due: its schedule, or its acceptance when sent at once."""
        if self.schedule_time is not None and self.schedule_time > self.create_time:
            return self.schedule_time
        return self.create_time

    @property
    def holds_secrets(self) -> bool:
        """Rendered from sensitive template values (stored redacted, delivered in clear)."""
        return self.template is not None and any(
            value == REDACTED for _, value in self.template.variables
        )

    def _changed(self, now: datetime, **changes: object) -> Notification:
        updated = replace(self, update_time=now, version=self.version + 1, **changes)  # type: ignore[arg-type]
        if updated.is_final:
            # The deliverable copy may hold secrets: it goes once nothing will send it. A
            # dead letter keeps it for an operator's requeue unless it holds secrets.
            keep = updated.status is Status.DEAD_LETTERED and not updated.holds_secrets
            updated = replace(
                updated,
                delivery=updated.delivery if keep else Delivery(),
                next_attempt_time=None,
            )
        return updated

    def requeue_refusal(self) -> RequeueRefusal | None:
        if self.status is not Status.DEAD_LETTERED:
            return RequeueRefusal.NOT_DEAD_LETTERED
        if self.delivery == Delivery():
            return RequeueRefusal.CONTENT_ERASED
        return None

    def requeue(self, now: datetime) -> Notification:
        """DEAD_LETTERED -> QUEUED, due now: the attempts stay in its history and the retry
        policy counts afresh from here."""
        refusal = self.requeue_refusal()
        if refusal is not None:
            raise ValueError(f"{self.name} cannot be requeued: {refusal.value}")
        return self._changed(
            now,
            status=Status.QUEUED,
            hold_reason=None,
            next_attempt_time=now,
            failure_code="",
            failure_message="",
            attempt_base=len(self.attempts),
        )

    def hold(self, reason: HoldReason, until: datetime, now: datetime) -> Notification:
        return self._changed(
            now, status=Status.SCHEDULED, hold_reason=reason, next_attempt_time=until
        )

    def suppress(self, reason: SuppressionReason, now: datetime) -> Notification:
        return self._changed(
            now, status=Status.SUPPRESSED, suppression_reason=reason, hold_reason=None
        )

    def start_sending(self, now: datetime) -> Notification:
        return self._changed(now, status=Status.SENDING, hold_reason=None)

    def record(
        self,
        attempt: Attempt,
        policy: RetryPolicy,
        rng: random.Random,
        now: datetime,
    ) -> Notification:
        """The status an attempt leads to: SENT, FAILED, a retry, or DEAD_LETTERED."""
        attempts = (*self.attempts, attempt)
        if attempt.outcome is Outcome.SUCCEEDED:
            return self._changed(
                now,
                attempts=attempts,
                status=Status.SENT,
                send_time=attempt.end_time,
                provider_message_id=attempt.provider_message_id,
                hold_reason=None,
            )
        if attempt.outcome is Outcome.PERMANENT_FAILURE:
            return self._changed(
                now,
                attempts=attempts,
                status=Status.FAILED,
                failure_code=attempt.error_code,
                failure_message=attempt.error_message,
                hold_reason=None,
            )
        made = len(attempts) - self.attempt_base
        if made >= policy.max_attempts:
            return self._changed(
                now,
                attempts=attempts,
                status=Status.DEAD_LETTERED,
                failure_code=attempt.error_code,
                failure_message=f"{attempt.error_message} (gave up after {made} attempts)",
                hold_reason=None,
            )
        return self._changed(
            now,
            attempts=attempts,
            status=Status.SCHEDULED,
            hold_reason=HoldReason.RETRY_BACKOFF,
            next_attempt_time=now + policy.backoff(made, rng),
        )


@dataclass(frozen=True, slots=True)
class DeliveryChange:
    """One change of a notification's status, for WatchDeliveries (the change log)."""

    id: str  # ULID; the event's envelope id when the change published one
    notification_id: str
    sequence: int  # the notification's version after the change
    previous_status: Status | None
    status: Status
    time: datetime
    notification: Notification
    attempt: Attempt | None = None
    visible_to: tuple[str, ...] = ()  # users who may see it (recipient user, sender user)
