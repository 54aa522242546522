"""Email end to end: SendNotification -> worker -> real SMTP (aiosmtpd) -> what arrived."""

from __future__ import annotations

import grpc

from gatehouse.notifications.v1 import notifications_pb2 as pb
from tests.integration.notifications.harness import (
    ALICE,
    NotificationsHarness,
    email,
    inline,
    refused,
)


async def test_inline_email_to_an_address_arrives_with_text_and_html_parts(
    notifications: NotificationsHarness,
) -> None:
    [queued] = await notifications.send(
        recipient=pb.Recipient(address=email("ana@example.com")),
        inline_content=inline("Your receipt", "Thanks, Ana.", "<p>Thanks, <b>Ana</b>.</p>"),
        related_resource="payments/p1",
    )
    assert queued.status == pb.NOTIFICATION_STATUS_QUEUED
    report = await notifications.deliver()
    assert report.sent == 1
    [mail] = await notifications.sink.wait_for(1)
    assert mail.recipients == ("ana@example.com",)
    assert mail.subject == "Your receipt"
    assert mail.part("text/plain").strip() == "Thanks, Ana."
    assert "<b>Ana</b>" in mail.part("text/html")
    assert mail.message_id == f"<{queued.name.split('/')[1]}@gatehouse.local>"
    sent = await notifications.get(queued.name)
    assert sent.status == pb.NOTIFICATION_STATUS_SENT
    [attempt] = sent.attempts
    assert attempt.outcome == pb.ATTEMPT_OUTCOME_SUCCEEDED
    assert attempt.provider == "smtp"
    assert attempt.provider_response.startswith("250")
    assert sent.provider_message_id == mail.message_id


async def test_email_to_a_user_uses_their_auth_address(notifications: NotificationsHarness) -> None:
    [queued] = await notifications.send(recipient=pb.Recipient(user=ALICE))
    assert queued.user == ALICE
    assert queued.address.email_address == "alice@example.com"
    await notifications.deliver()
    [mail] = await notifications.sink.wait_for(1)
    assert mail.recipients == ("alice@example.com",)


async def test_bad_addresses_are_refused_and_nothing_is_written(
    notifications: NotificationsHarness,
) -> None:
    await refused(
        notifications.send(recipient=pb.Recipient(address=email("not-an-address"))),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ADDRESS",
    )
    await refused(
        notifications.send(
            channel=pb.CHANNEL_SMS,
            recipient=pb.Recipient(address=pb.Address(phone_number="600123456")),
            inline_content=inline(subject="", text="hi"),
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ADDRESS",
    )
    await refused(
        notifications.send(
            channel=pb.CHANNEL_SMS,
            recipient=pb.Recipient(address=email("ana@example.com")),
            inline_content=inline(subject="", text="hi"),
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "ADDRESS_CHANNEL_MISMATCH",
    )
    await refused(
        notifications.send(
            channel=pb.CHANNEL_WEBHOOK,
            recipient=pb.Recipient(address=pb.Address(webhook_url="https://evil.example.org/x")),
            inline_content=inline(),
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "ADDRESS_NOT_ALLOWED",
    )
    listed = await notifications.stub().ListNotifications(
        pb.ListNotificationsRequest(), metadata=notifications.staff()
    )
    assert list(listed.notifications) == []
