"""Requeueing a dead letter in the domain: the transition, what it keeps, what it refuses, a
fresh set of retries; the stored document round trip; how the CLI shows addresses."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest

from gatehouse.notifications.adapters import codec
from gatehouse.notifications.cli import shown_address
from gatehouse.notifications.domain.addresses import Address, AddressKind
from gatehouse.notifications.domain.notifications import (
    Delivery,
    Notification,
    Outcome,
    RequeueRefusal,
    RetryPolicy,
    Status,
    TemplateUse,
)
from gatehouse.notifications.domain.templates import REDACTED
from gatehouse.notifications.handlers.dead_letters import notification_id
from tests.unit.notifications.test_delivery_rules import T0, attempt, notification

POLICY = RetryPolicy(max_attempts=2)
RNG = random.Random(7)


def _dead(n: Notification) -> Notification:
    for number in range(len(n.attempts) + 1, len(n.attempts) + 1 + POLICY.max_attempts):
        if n.status is Status.SCHEDULED:
            n = n.start_sending(T0)
        n = n.record(
            attempt(Outcome.TRANSIENT_FAILURE, number, "SMTP_UNREACHABLE"), POLICY, RNG, T0
        )
    assert n.status is Status.DEAD_LETTERED
    return n


def test_a_dead_letter_is_requeued_with_its_history_and_a_fresh_set_of_retries() -> None:
    dead = _dead(notification())
    assert dead.delivery == Delivery("s", "t", "<p>t</p>")  # kept: nothing secret in it
    assert dead.next_attempt_time is None
    later = T0 + timedelta(days=1)
    queued = dead.requeue(later)
    assert queued.status is Status.QUEUED
    assert queued.next_attempt_time == later
    assert queued.attempts == dead.attempts
    assert (queued.failure_code, queued.failure_message) == ("", "")
    assert queued.version == dead.version + 1
    assert queued.update_time == later
    assert queued.delivery == dead.delivery
    # One more failure is a retry, not an immediate dead letter.
    retry = queued.start_sending(later).record(
        attempt(Outcome.TRANSIENT_FAILURE, 3, "X"), POLICY, RNG, later
    )
    assert retry.status is Status.SCHEDULED
    again = retry.start_sending(later).record(
        attempt(Outcome.TRANSIENT_FAILURE, 4, "X"), POLICY, RNG, later
    )
    assert again.status is Status.DEAD_LETTERED
    assert again.failure_message.endswith("(gave up after 2 attempts)")
    assert len(again.attempts) == 4


def test_only_a_dead_letter_with_its_content_can_be_requeued() -> None:
    for status in (Status.QUEUED, Status.SENDING, Status.SENT, Status.FAILED):
        n = notification(status=status)
        assert n.requeue_refusal() is RequeueRefusal.NOT_DEAD_LETTERED
        with pytest.raises(ValueError, match="NOT_DEAD_LETTERED"):
            n.requeue(T0)
    secret = notification(
        template=TemplateUse("templates/reset", 1, "en", (("link", REDACTED),)),
    )
    assert secret.holds_secrets
    dead = _dead(secret)
    assert dead.delivery == Delivery()  # erased: it held the reset link
    assert dead.requeue_refusal() is RequeueRefusal.CONTENT_ERASED
    with pytest.raises(ValueError, match="CONTENT_ERASED"):
        dead.requeue(T0)


def test_other_final_states_still_erase_the_deliverable_copy() -> None:
    sent = notification().record(attempt(Outcome.SUCCEEDED), POLICY, RNG, T0)
    failed = notification().record(attempt(Outcome.PERMANENT_FAILURE, code="R"), POLICY, RNG, T0)
    assert sent.delivery == Delivery() == failed.delivery


def test_the_attempt_base_survives_the_stored_document() -> None:
    queued = _dead(notification()).requeue(T0)
    loaded = codec.notification_from(codec.loads(codec.dumps(codec.notification_doc(queued))))
    assert loaded.attempt_base == 2
    assert loaded.attempts == queued.attempts
    fresh = codec.notification_doc(notification())
    assert "attempt_base" not in fresh
    assert codec.notification_from(fresh).attempt_base == 0


def test_names_and_ids() -> None:
    assert notification_id("notifications/01J0000000000000000000000A") == (
        "01J0000000000000000000000A"
    )
    assert notification_id("01J0000000000000000000000A") == "01J0000000000000000000000A"
    for bad in ("", "notifications/", "notifications/a/b", "x" * 27, "notifications/ä"):
        assert notification_id(bad) is None


def test_the_cli_masks_addresses_that_can_carry_credentials() -> None:
    assert shown_address(Address(AddressKind.EMAIL, "a@example.com")) == "a@example.com"
    assert shown_address(Address(AddressKind.PHONE, "+34600123456")) == "+34600123456"
    hook = Address(AddressKind.WEBHOOK_URL, "https://u:pw@hooks.example.com:8443/T1/B2/SECRET?k=v")
    assert shown_address(hook) == "https://hooks.example.com:8443/..."
    bare = Address(AddressKind.WEBHOOK_URL, "https://hooks.example.com/")
    assert shown_address(bare) == "https://hooks.example.com"
    token = "abcdEFGH1234567890"
    shown = shown_address(Address(AddressKind.PUSH_TOKEN, token))
    assert token not in shown
    assert shown == f"push token abcd... ({len(token)} characters)"
    assert shown_address(None) == "-"
