"""Delivery rules in the domain: quiet hours across midnight and DST, opt-outs and their
bypasses, the rate-limit window, backoff, and the notification's transitions."""

from __future__ import annotations

import random
from datetime import UTC, datetime, time, timedelta

import pytest

from gatehouse.notifications.domain.addresses import Address, AddressKind, Channel
from gatehouse.notifications.domain.notifications import (
    Attempt,
    Category,
    Delivery,
    HoldReason,
    Notification,
    Outcome,
    Priority,
    RateLimit,
    RateWindow,
    RecipientSpec,
    RetryPolicy,
    Status,
    SuppressionReason,
    bypasses_rate_limit,
    quiet_hours_release,
    suppression_for,
)
from gatehouse.notifications.domain.preferences import (
    ChannelPreference,
    Preferences,
    QuietHours,
    QuietHoursError,
)
from gatehouse.notifications.domain.templates import Actor

T0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def notification(**overrides: object) -> Notification:
    fields: dict[str, object] = {
        "id": "01J0000000000000000000000A",
        "recipient": RecipientSpec(user="users/a"),
        "user": "users/a",
        "address": Address(AddressKind.EMAIL, "a@example.com"),
        "channel": Channel.EMAIL,
        "template": None,
        "subject": "s",
        "text_body": "t",
        "priority": Priority.NORMAL,
        "category": Category.TRANSACTIONAL,
        "status": Status.SENDING,
        "hold_reason": None,
        "suppression_reason": None,
        "schedule_time": None,
        "next_attempt_time": None,
        "sender": Actor(user="users/s"),
        "batch_id": "b",
        "related_resource": "",
        "create_time": T0,
        "update_time": T0,
        "delivery": Delivery("s", "t", "<p>t</p>"),
    }
    fields.update(overrides)
    return Notification(**fields)  # type: ignore[arg-type]


def attempt(outcome: Outcome, number: int = 1, code: str = "") -> Attempt:
    return Attempt(number, T0, T0, outcome, "smtp", error_code=code, error_message=code)


def test_quiet_hours_across_midnight_in_the_users_zone() -> None:
    quiet = QuietHours(time(22), time(7), "Europe/Madrid")
    # 23:30 in Madrid (UTC+1 in winter) -> held until 07:00 Madrid = 06:00 UTC next day.
    at = datetime(2026, 1, 15, 22, 30, tzinfo=UTC)
    assert quiet.release_time(at) == datetime(2026, 1, 16, 6, 0, tzinfo=UTC)
    # 06:00 Madrid -> until 07:00 the same morning.
    assert quiet.release_time(datetime(2026, 1, 16, 5, 0, tzinfo=UTC)) == datetime(
        2026, 1, 16, 6, 0, tzinfo=UTC
    )
    assert quiet.release_time(datetime(2026, 1, 16, 12, 0, tzinfo=UTC)) is None


def test_quiet_hours_follow_daylight_saving() -> None:
    quiet = QuietHours(time(22), time(7), "Europe/Madrid")
    # The night the clocks go forward (29 March 2026): 07:00 local is 05:00 UTC.
    at = datetime(2026, 3, 28, 23, 0, tzinfo=UTC)  # 00:00 local
    assert quiet.release_time(at) == datetime(2026, 3, 29, 5, 0, tzinfo=UTC)


def test_quiet_hours_are_checked() -> None:
    with pytest.raises(QuietHoursError) as bad_zone:
        QuietHours(time(22), time(7), "Mars/Olympus")
    assert bad_zone.value.reason == "INVALID_TIME_ZONE"
    with pytest.raises(QuietHoursError) as same:
        QuietHours(time(7), time(7), "UTC")
    assert same.value.reason == "INVALID_QUIET_HOURS"


def test_security_emergency_and_critical_ignore_quiet_hours() -> None:
    prefs = Preferences("users/a", quiet_hours=QuietHours(time(0), time(23, 59), "UTC"))
    assert quiet_hours_release(prefs, Category.TRANSACTIONAL, Priority.NORMAL, T0) is not None
    assert quiet_hours_release(prefs, Category.ALERT, Priority.HIGH, T0) is not None
    assert quiet_hours_release(prefs, Category.SECURITY, Priority.NORMAL, T0) is None
    assert quiet_hours_release(prefs, Category.EMERGENCY, Priority.LOW, T0) is None
    assert quiet_hours_release(prefs, Category.ALERT, Priority.CRITICAL, T0) is None


def test_opt_outs_and_marketing_consent() -> None:
    out = Preferences("users/a", channels=(ChannelPreference(Channel.EMAIL, opted_out=True),))
    assert (
        suppression_for(out, Channel.EMAIL, Category.TRANSACTIONAL) is SuppressionReason.OPTED_OUT
    )
    assert suppression_for(out, Channel.SMS, Category.TRANSACTIONAL) is None
    assert suppression_for(out, Channel.EMAIL, Category.SECURITY) is None
    assert suppression_for(out, Channel.EMAIL, Category.EMERGENCY) is None
    plain = Preferences("users/a")
    assert suppression_for(plain, Channel.EMAIL, Category.MARKETING) is SuppressionReason.OPTED_OUT
    consent = Preferences("users/a", marketing_opt_in=True)
    assert suppression_for(consent, Channel.EMAIL, Category.MARKETING) is None
    assert suppression_for(None, Channel.EMAIL, Category.MARKETING) is None


def test_rate_window_allows_count_per_window_then_names_the_reopening() -> None:
    limit = RateLimit(count=2, window=timedelta(minutes=1))
    window = RateWindow(T0 - timedelta(hours=1), 0)
    window, held = window.take(limit, T0)
    assert held is None
    window, held = window.take(limit, T0 + timedelta(seconds=10))
    assert held is None
    same, held = window.take(limit, T0 + timedelta(seconds=20))
    assert held == T0 + timedelta(minutes=1)
    assert same == window
    _, held = window.take(limit, T0 + timedelta(minutes=1))
    assert held is None


def test_rate_limit_bypasses() -> None:
    assert not bypasses_rate_limit(Category.TRANSACTIONAL, Priority.NORMAL)
    assert bypasses_rate_limit(Category.TRANSACTIONAL, Priority.HIGH)
    assert bypasses_rate_limit(Category.TRANSACTIONAL, Priority.CRITICAL)
    assert bypasses_rate_limit(Category.SECURITY, Priority.LOW)
    assert bypasses_rate_limit(Category.EMERGENCY, Priority.NORMAL)


def test_backoff_grows_is_capped_and_jittered() -> None:
    policy = RetryPolicy(first_backoff=timedelta(seconds=10), max_backoff=timedelta(seconds=60))
    rng = random.Random(7)
    waits = [policy.backoff(n, rng) for n in range(1, 7)]
    assert timedelta(seconds=5) <= waits[0] <= timedelta(seconds=10)
    assert timedelta(seconds=10) <= waits[1] <= timedelta(seconds=20)
    assert all(w <= timedelta(seconds=60) for w in waits)
    assert all(w >= timedelta(seconds=30) for w in waits[3:])


def test_transitions_sent_failed_retry_dead_letter() -> None:
    policy = RetryPolicy(max_attempts=3)
    rng = random.Random(1)
    sent = notification().record(attempt(Outcome.SUCCEEDED), policy, rng, T0)
    assert sent.status is Status.SENT
    assert sent.send_time == T0
    assert sent.delivery == Delivery()  # the deliverable copy is gone once final
    failed = notification().record(
        attempt(Outcome.PERMANENT_FAILURE, code="SMTP_REJECTED"), policy, rng, T0
    )
    assert failed.status is Status.FAILED
    assert failed.failure_code == "SMTP_REJECTED"
    retry = notification().record(attempt(Outcome.TRANSIENT_FAILURE, code="X"), policy, rng, T0)
    assert retry.status is Status.SCHEDULED
    assert retry.hold_reason is HoldReason.RETRY_BACKOFF
    assert retry.next_attempt_time is not None
    assert retry.next_attempt_time > T0
    assert retry.delivery.text_body == "t"
    second = retry.start_sending(T0).record(
        attempt(Outcome.TRANSIENT_FAILURE, 2, "X"), policy, rng, T0
    )
    third = second.start_sending(T0).record(
        attempt(Outcome.TRANSIENT_FAILURE, 3, "X"), policy, rng, T0
    )
    assert third.status is Status.DEAD_LETTERED
    assert len(third.attempts) == 3
    assert third.version == notification().version + 5


def test_due_time_is_the_schedule_or_the_acceptance() -> None:
    assert notification().due_time == T0
    later = T0 + timedelta(hours=1)
    assert notification(schedule_time=later).due_time == later
