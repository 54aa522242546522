"""Webhooks to a real HTTP server (signed body, headers, receipts) and every delivery fault:
SMTP down / 4xx / 5xx, webhook timeout / 500 / 404, retries with backoff, dead letters,
events, and a worker that dies mid-send."""

from __future__ import annotations

import json
from datetime import timedelta

from gatehouse.events.v1.envelope_pb2 import Event
from gatehouse.notifications.v1 import events_pb2
from gatehouse.notifications.v1 import notifications_pb2 as pb
from tests.integration.notifications.harness import (
    WEBHOOK_SECRET,
    NotificationsHarness,
    email,
    inline,
)


async def _events(harness: NotificationsHarness, subject: str) -> list[Event]:
    entries = await harness.bus.read("events.notification", after=None, count=10_000)
    return [event for _, event in entries if event.subject == subject]


async def _published(harness: NotificationsHarness, subject: str, count: int) -> list[Event]:
    import asyncio  # noqa: PLC0415

    for _ in range(500):
        found = await _events(harness, subject)
        if len(found) >= count:
            return found
        await asyncio.sleep(0.01)
    return await _events(harness, subject)


def _hook(harness: NotificationsHarness) -> pb.Recipient:
    return pb.Recipient(address=pb.Address(webhook_url=harness.webhook.url))


async def test_webhook_delivery_is_signed_and_documented(
    notifications: NotificationsHarness,
) -> None:
    [queued] = await notifications.send(
        channel=pb.CHANNEL_WEBHOOK,
        recipient=_hook(notifications),
        inline_content=inline("Door forced", "Door 3 was forced open"),
        priority=pb.PRIORITY_HIGH,
        category=pb.CATEGORY_ALERT,
        related_resource="buildings/b1/doors/d3",
    )
    report = await notifications.deliver()
    assert report.sent == 1
    [request] = await notifications.webhook.wait_for(1)
    assert request.method == "POST"
    assert request.header("Content-Type") == "application/json"
    assert request.header("Idempotency-Key") == queued.name.split("/")[1]
    assert request.signature_valid(WEBHOOK_SECRET)
    assert not request.signature_valid(b"another secret")
    body = json.loads(request.body)
    assert body == {
        "notification": queued.name,
        "channel": "CHANNEL_WEBHOOK",
        "address": {"webhookUrl": notifications.webhook.url},
        "subject": "Door forced",
        "textBody": "Door 3 was forced open",
        "priority": "PRIORITY_HIGH",
        "category": "CATEGORY_ALERT",
        "attemptNumber": 1,
        "createTime": body["createTime"],
        "relatedResource": "buildings/b1/doors/d3",
    }
    sent = await notifications.get(queued.name)
    assert sent.status == pb.NOTIFICATION_STATUS_SENT
    assert sent.provider_message_id == "gw-1"
    assert sent.attempts[0].provider == "webhook:webhook"
    assert sent.attempts[0].provider_response.startswith("HTTP 200")
    [event] = await _published(notifications, queued.name, 1)
    assert event.type == "notification.sent"
    payload = events_pb2.NotificationSent()
    assert event.data.Unpack(payload)
    assert payload.provider_message_id == "gw-1"
    assert payload.attempt_count == 1
    # Events carry no address and no content.
    assert notifications.webhook.url not in str(payload)


async def test_webhook_500_is_retried_with_the_same_idempotency_key_then_succeeds(
    notifications: NotificationsHarness,
) -> None:
    notifications.webhook.status = 500
    notifications.webhook.body = b"upstream broke"
    [queued] = await notifications.send(channel=pb.CHANNEL_WEBHOOK, recipient=_hook(notifications))
    await notifications.deliver()
    held = await notifications.get(queued.name)
    assert held.status == pb.NOTIFICATION_STATUS_SCHEDULED
    assert held.hold_reason == pb.HOLD_REASON_RETRY_BACKOFF
    [failed] = held.attempts
    assert failed.outcome == pb.ATTEMPT_OUTCOME_TRANSIENT_FAILURE
    assert failed.error_code == "WEBHOOK_HTTP_ERROR"
    assert "HTTP 500 upstream broke" in failed.provider_response
    # Not due before its backoff.
    assert (await notifications.deliver()).claimed == 0
    notifications.webhook.status = 200
    notifications.clock.advance(timedelta(minutes=11))
    await notifications.deliver()
    sent = await notifications.get(queued.name)
    assert sent.status == pb.NOTIFICATION_STATUS_SENT
    assert [a.attempt_number for a in sent.attempts] == [1, 2]
    first, second = await notifications.webhook.wait_for(2)
    assert first.header("Idempotency-Key") == second.header("Idempotency-Key")
    assert json.loads(second.body)["attemptNumber"] == 2


async def test_webhook_timeouts_exhaust_the_retries_into_a_dead_letter(
    notifications: NotificationsHarness,
) -> None:
    notifications.webhook.delay = 2.0  # the sender gives up after 0.5 s
    [queued] = await notifications.send(channel=pb.CHANNEL_WEBHOOK, recipient=_hook(notifications))
    for _ in range(5):
        await notifications.deliver()
        notifications.clock.advance(timedelta(minutes=11))
    dead = await notifications.get(queued.name)
    assert dead.status == pb.NOTIFICATION_STATUS_DEAD_LETTERED
    assert len(dead.attempts) == 5
    assert {a.error_code for a in dead.attempts} == {"WEBHOOK_TIMEOUT"}
    assert dead.failure_code == "WEBHOOK_TIMEOUT"
    events = await _published(notifications, queued.name, 1)
    assert [e.type for e in events] == ["notification.failed"]
    payload = events_pb2.NotificationFailed()
    assert events[0].data.Unpack(payload)
    assert payload.status == pb.NOTIFICATION_STATUS_DEAD_LETTERED
    assert payload.attempt_count == 5
    from sqlalchemy import text  # noqa: PLC0415

    async with notifications.app.database.database.engine.connect() as connection:
        kept = await connection.execute(
            text("SELECT failure_code FROM notifications_dead_letters WHERE notification_id = :i"),
            {"i": queued.name.split("/")[1]},
        )
        assert kept.scalar_one() == "WEBHOOK_TIMEOUT"
        delivery = await connection.execute(
            text("SELECT delivery FROM notifications_notifications WHERE id = :i"),
            {"i": queued.name.split("/")[1]},
        )
        # A dead letter keeps its deliverable copy (no sensitive values in it) for a requeue.
        assert "Plain body" in delivery.scalar_one()


async def test_webhook_404_fails_at_once(notifications: NotificationsHarness) -> None:
    notifications.webhook.status = 404
    [queued] = await notifications.send(channel=pb.CHANNEL_WEBHOOK, recipient=_hook(notifications))
    await notifications.deliver()
    failed = await notifications.get(queued.name)
    assert failed.status == pb.NOTIFICATION_STATUS_FAILED
    assert failed.attempts[0].outcome == pb.ATTEMPT_OUTCOME_PERMANENT_FAILURE
    [event] = await _published(notifications, queued.name, 1)
    assert event.type == "notification.failed"


async def test_smtp_4xx_is_retried_and_5xx_fails(notifications: NotificationsHarness) -> None:
    notifications.sink.reply_with("451 4.3.0 mailbox busy, try later")
    [deferred] = await notifications.send(recipient=pb.Recipient(address=email("a@example.com")))
    await notifications.deliver()
    held = await notifications.get(deferred.name)
    assert held.status == pb.NOTIFICATION_STATUS_SCHEDULED
    assert held.attempts[0].error_code == "SMTP_TEMPORARY_FAILURE"
    assert held.attempts[0].provider_response.startswith("451")

    notifications.sink.reply_with("550 5.1.1 no such mailbox")
    [rejected] = await notifications.send(recipient=pb.Recipient(address=email("b@example.com")))
    await notifications.deliver()
    failed = await notifications.get(rejected.name)
    assert failed.status == pb.NOTIFICATION_STATUS_FAILED
    assert failed.failure_code == "SMTP_REJECTED"
    assert failed.attempts[0].provider_response.startswith("550")

    notifications.sink.reply_with(None)
    notifications.clock.advance(timedelta(minutes=11))
    await notifications.deliver()
    assert (await notifications.get(deferred.name)).status == pb.NOTIFICATION_STATUS_SENT
    [mail] = await notifications.sink.wait_for(1)
    assert mail.recipients == ("a@example.com",)


async def test_smtp_down_is_a_transient_failure_and_nothing_is_lost(
    notifications: NotificationsHarness,
) -> None:
    port = notifications.sink.port
    await notifications.sink.stop()
    [queued] = await notifications.send(recipient=pb.Recipient(address=email("c@example.com")))
    await notifications.deliver()
    held = await notifications.get(queued.name)
    assert held.status == pb.NOTIFICATION_STATUS_SCHEDULED
    assert held.attempts[0].error_code == "SMTP_UNREACHABLE"
    notifications.sink.port = port
    await notifications.sink.start()
    notifications.clock.advance(timedelta(minutes=11))
    await notifications.deliver()
    assert (await notifications.get(queued.name)).status == pb.NOTIFICATION_STATUS_SENT
    await notifications.sink.wait_for(1)


async def test_a_worker_that_dies_mid_send_loses_an_attempt_not_the_message(
    notifications: NotificationsHarness,
) -> None:
    from gatehouse.notifications.handlers import delivery  # noqa: PLC0415

    [queued] = await notifications.send(recipient=pb.Recipient(address=email("d@example.com")))
    notification_id = queued.name.split("/")[1]
    # Claim it as a worker that then vanishes (no send, no record).
    claimed = await delivery._claim(
        notification_id,
        notifications.app.uow,
        notifications.app.deps,
        notifications.app.worker_options,
        delivery.RoundReport(),
    )
    assert claimed is not None
    assert (await notifications.get(queued.name)).status == pb.NOTIFICATION_STATUS_SENDING
    # While the lease holds nobody takes it again.
    assert (await notifications.deliver()).claimed == 0
    notifications.clock.advance(notifications.app.worker_options.lease + timedelta(seconds=1))
    report = await notifications.deliver()
    assert report.lost == 1
    lost = await notifications.get(queued.name)
    assert lost.status == pb.NOTIFICATION_STATUS_SCHEDULED
    assert lost.attempts[0].error_code == "WORKER_LOST"
    notifications.clock.advance(timedelta(minutes=11))
    await notifications.deliver()
    sent = await notifications.get(queued.name)
    assert sent.status == pb.NOTIFICATION_STATUS_SENT
    [mail] = await notifications.sink.wait_for(1)
    assert mail.message_id == f"<{notification_id}@gatehouse.local>"
