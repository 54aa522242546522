"""Delivery rules and the request contract: preferences and opt-outs, quiet hours in the
user's time zone, the per-recipient rate limit with its bypasses, scheduled sends, role
broadcasts, request_id idempotency, visibility, listings and stats."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import grpc
from google.protobuf import timestamp_pb2
from google.type import timeofday_pb2

from gatehouse.notifications.v1 import notifications_pb2 as pb
from gatehouse.runtime.config import Settings
from tests.integration.notifications.harness import (
    ALICE,
    BOB,
    NotificationsHarness,
    email,
    inline,
    refused,
    request_id,
    running_notifications,
)


def _stamp(value: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def quiet_now(
    harness: NotificationsHarness, zone: str = "America/Argentina/Buenos_Aires"
) -> pb.QuietHours:
    """Quiet hours that contain the harness's current time, in `zone`."""
    local = harness.clock().astimezone(ZoneInfo(zone))
    start = (local - timedelta(hours=1)).time()
    end = (local + timedelta(hours=2)).time()
    return pb.QuietHours(
        start_time=timeofday_pb2.TimeOfDay(hours=start.hour, minutes=start.minute),
        end_time=timeofday_pb2.TimeOfDay(hours=end.hour, minutes=end.minute),
        time_zone=zone,
    )


async def test_opted_out_users_are_refused_but_security_messages_go(
    notifications: NotificationsHarness,
) -> None:
    await notifications.set_preferences(
        ALICE,
        pb.NotificationPreferences(
            channels=[pb.ChannelPreference(channel=pb.CHANNEL_EMAIL, opted_out=True)]
        ),
    )
    await refused(
        notifications.send(recipient=pb.Recipient(user=ALICE)),
        grpc.StatusCode.FAILED_PRECONDITION,
        "RECIPIENT_OPTED_OUT",
    )
    [security] = await notifications.send(
        recipient=pb.Recipient(user=ALICE), category=pb.CATEGORY_SECURITY
    )
    assert security.status == pb.NOTIFICATION_STATUS_QUEUED
    await refused(
        notifications.send(recipient=pb.Recipient(user=BOB), category=pb.CATEGORY_MARKETING),
        grpc.StatusCode.FAILED_PRECONDITION,
        "RECIPIENT_OPTED_OUT",
    )
    await refused(
        notifications.send(
            channel=pb.CHANNEL_SMS,
            recipient=pb.Recipient(user=BOB),
            inline_content=inline(subject="", text="hi"),
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "RECIPIENT_NO_ADDRESS",
    )
    await refused(
        notifications.send(recipient=pb.Recipient(user="users/ghost")),
        grpc.StatusCode.NOT_FOUND,
        "RECIPIENT_NOT_FOUND",
    )


async def test_role_broadcasts_suppress_who_cannot_be_told(
    notifications: NotificationsHarness,
) -> None:
    await notifications.set_preferences(
        BOB,
        pb.NotificationPreferences(
            channels=[pb.ChannelPreference(channel=pb.CHANNEL_EMAIL, opted_out=True)]
        ),
    )
    created = await notifications.send(recipient=pb.Recipient(role="roles/operator"))
    by_user = {n.user: n for n in created}
    assert by_user[ALICE].status == pb.NOTIFICATION_STATUS_QUEUED
    assert by_user[BOB].status == pb.NOTIFICATION_STATUS_SUPPRESSED
    assert by_user[BOB].suppression_reason == pb.SUPPRESSION_REASON_OPTED_OUT
    assert len({n.batch_id for n in created}) == 1
    assert all(n.recipient.role == "roles/operator" for n in created)
    await refused(
        notifications.send(recipient=pb.Recipient(role="roles/nobody")),
        grpc.StatusCode.NOT_FOUND,
        "RECIPIENT_NOT_FOUND",
    )


async def test_quiet_hours_hold_until_they_end_in_the_users_zone(
    notifications: NotificationsHarness,
) -> None:
    await notifications.set_preferences(
        ALICE, pb.NotificationPreferences(quiet_hours=quiet_now(notifications))
    )
    [normal] = await notifications.send(recipient=pb.Recipient(user=ALICE))
    [urgent] = await notifications.send(
        recipient=pb.Recipient(user=ALICE), category=pb.CATEGORY_EMERGENCY
    )
    await notifications.deliver_until_idle()
    held = await notifications.get(normal.name)
    assert held.status == pb.NOTIFICATION_STATUS_SCHEDULED
    assert held.hold_reason == pb.HOLD_REASON_QUIET_HOURS
    release = held.next_attempt_time.ToDatetime(tzinfo=UTC)
    assert timedelta(hours=1, minutes=58) < release - notifications.clock() <= timedelta(hours=2)
    assert (await notifications.get(urgent.name)).status == pb.NOTIFICATION_STATUS_SENT
    notifications.clock.advance(timedelta(hours=2, minutes=1))
    await notifications.deliver_until_idle()
    assert (await notifications.get(normal.name)).status == pb.NOTIFICATION_STATUS_SENT
    await notifications.sink.wait_for(2)


async def test_rate_limit_holds_the_second_message_a_minute_and_high_priority_bypasses(
    notifications: NotificationsHarness,
) -> None:
    to = pb.Recipient(address=email("busy@example.com"))
    [first] = await notifications.send(recipient=to)
    [second] = await notifications.send(recipient=to)
    [urgent] = await notifications.send(recipient=to, priority=pb.PRIORITY_HIGH)
    await notifications.deliver_until_idle()
    statuses = {n.name: (await notifications.get(n.name)) for n in (first, second, urgent)}
    sent = [n for n in statuses.values() if n.status == pb.NOTIFICATION_STATUS_SENT]
    held = [n for n in statuses.values() if n.status == pb.NOTIFICATION_STATUS_SCHEDULED]
    assert statuses[urgent.name].status == pb.NOTIFICATION_STATUS_SENT
    assert len(sent) == 2
    assert len(held) == 1
    assert held[0].hold_reason == pb.HOLD_REASON_RATE_LIMITED
    await notifications.sink.wait_for(2)
    notifications.clock.advance(timedelta(minutes=1, seconds=1))
    await notifications.deliver_until_idle()
    assert (await notifications.get(held[0].name)).status == pb.NOTIFICATION_STATUS_SENT
    mails = await notifications.sink.wait_for(3)
    assert len(mails) == 3


async def test_a_full_backlog_of_held_messages_is_resource_exhausted(
    database_url: str, settings: Settings, certs_dir: Path
) -> None:
    async with running_notifications(
        database_url, settings, certs_dir, max_held_per_recipient=1
    ) as harness:
        to = pb.Recipient(address=email("slow@example.com"))
        await harness.send(recipient=to)
        await harness.send(recipient=to)
        await harness.deliver_until_idle()  # one sent, one held
        await refused(
            harness.send(recipient=to),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "RATE_LIMITED",
        )


async def test_each_callers_send_quota(
    database_url: str, settings: Settings, certs_dir: Path
) -> None:
    async with running_notifications(
        database_url, settings, certs_dir, send_quota_per_minute=2
    ) as harness:
        for n in range(2):
            await harness.send(recipient=pb.Recipient(address=email(f"q{n}@example.com")))
        status = await refused(
            harness.send(recipient=pb.Recipient(address=email("q3@example.com"))),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "RATE_LIMITED",
        )
        assert "quota" in status.message
        # Another caller has a quota of its own.
        await harness.send(
            recipient=pb.Recipient(address=email("q4@example.com")),
            metadata=harness.user(BOB, ["notifications.send"]),
        )


async def test_scheduled_sends_wait_for_their_time(notifications: NotificationsHarness) -> None:
    when = notifications.clock() + timedelta(hours=3)
    [scheduled] = await notifications.send(
        recipient=pb.Recipient(address=email("later@example.com")), schedule_time=_stamp(when)
    )
    assert scheduled.status == pb.NOTIFICATION_STATUS_SCHEDULED
    assert scheduled.hold_reason == pb.HOLD_REASON_SCHEDULED
    assert (await notifications.deliver()).claimed == 0
    notifications.clock.advance(timedelta(hours=3, seconds=1))
    await notifications.deliver()
    assert (await notifications.get(scheduled.name)).status == pb.NOTIFICATION_STATUS_SENT
    await refused(
        notifications.send(
            recipient=pb.Recipient(address=email("later@example.com")),
            schedule_time=_stamp(notifications.clock() + timedelta(days=31)),
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "SCHEDULE_TIME_TOO_FAR",
    )


async def test_request_id_replays_and_never_sends_twice(
    notifications: NotificationsHarness,
) -> None:
    rid = request_id()
    to = pb.Recipient(address=email("once@example.com"))
    first = await notifications.send(recipient=to, request_id=rid)
    again = await notifications.send(recipient=to, request_id=rid)
    assert [n.name for n in first] == [n.name for n in again]
    concurrent = await asyncio.gather(
        *(notifications.send(recipient=to, request_id=rid) for _ in range(5))
    )
    assert {n[0].name for n in concurrent} == {first[0].name}
    await refused(
        notifications.send(
            recipient=pb.Recipient(address=email("other@example.com")), request_id=rid
        ),
        grpc.StatusCode.ALREADY_EXISTS,
        "REQUEST_ID_REUSED",
    )
    await notifications.deliver_until_idle()
    await notifications.sink.wait_for(1)
    listed = await notifications.stub().ListNotifications(
        pb.ListNotificationsRequest(), metadata=notifications.staff()
    )
    assert len(listed.notifications) == 1
    assert len(notifications.sink.received) == 1


async def test_request_validation(notifications: NotificationsHarness) -> None:
    await refused(
        notifications.send(recipient=pb.Recipient()),
        grpc.StatusCode.INVALID_ARGUMENT,
        "RECIPIENT_REQUIRED",
    )
    await refused(
        notifications.send(recipient=pb.Recipient(user=ALICE), channel=pb.CHANNEL_UNSPECIFIED),
        grpc.StatusCode.INVALID_ARGUMENT,
        "CHANNEL_REQUIRED",
    )
    await refused(
        notifications.stub().SendNotification(
            pb.SendNotificationRequest(
                recipient=pb.Recipient(user=ALICE),
                channel=pb.CHANNEL_EMAIL,
                request_id=request_id(),
            ),
            metadata=notifications.staff(),
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "CONTENT_REQUIRED",
    )
    await refused(
        notifications.send(
            channel=pb.CHANNEL_SMS,
            recipient=pb.Recipient(address=pb.Address(phone_number="+34600123456")),
            inline_content=inline(html="<p>x</p>", subject=""),
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "CONTENT_CHANNEL_MISMATCH",
    )
    await refused(
        notifications.send(recipient=pb.Recipient(user=ALICE), request_id=""),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_REQUEST_ID",
    )
    await refused(
        notifications.send(recipient=pb.Recipient(user=ALICE), metadata=notifications.user(ALICE)),
        grpc.StatusCode.PERMISSION_DENIED,
        "PERMISSION_MISSING",
    )


async def test_visibility_listing_and_stats(notifications: NotificationsHarness) -> None:
    [to_alice] = await notifications.send(recipient=pb.Recipient(user=ALICE))
    [to_bob] = await notifications.send(recipient=pb.Recipient(user=BOB))
    mine = await notifications.stub().ListNotifications(
        pb.ListNotificationsRequest(), metadata=notifications.user(ALICE)
    )
    assert [n.name for n in mine.notifications] == [to_alice.name]
    await refused(
        notifications.stub().GetNotification(
            pb.GetNotificationRequest(name=to_bob.name), metadata=notifications.user(ALICE)
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        "PERMISSION_MISSING",
    )
    await refused(
        notifications.stub().GetNotification(
            pb.GetNotificationRequest(name="notifications/01ARZ3NDEKTSV4RRFFQ69G5FAV"),
            metadata=notifications.staff(),
        ),
        grpc.StatusCode.NOT_FOUND,
        "NOTIFICATION_NOT_FOUND",
    )
    page = await notifications.stub().ListNotifications(
        pb.ListNotificationsRequest(page_size=1, order_by="create_time"),
        metadata=notifications.staff(),
    )
    assert [n.name for n in page.notifications] == [to_alice.name]
    second = await notifications.stub().ListNotifications(
        pb.ListNotificationsRequest(
            page_size=1, order_by="create_time", page_token=page.next_page_token
        ),
        metadata=notifications.staff(),
    )
    assert [n.name for n in second.notifications] == [to_bob.name]
    await refused(
        notifications.stub().ListNotifications(
            pb.ListNotificationsRequest(page_size=1, page_token=page.next_page_token),
            metadata=notifications.staff(),
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_PAGE_TOKEN",
    )
    by_address = await notifications.stub().ListNotifications(
        pb.ListNotificationsRequest(recipient="bob@example.com"), metadata=notifications.staff()
    )
    assert [n.name for n in by_address.notifications] == [to_bob.name]
    await notifications.deliver_until_idle()
    stats = await notifications.stub().GetDeliveryStats(
        pb.GetDeliveryStatsRequest(), metadata=notifications.staff()
    )
    assert stats.total_count == 2
    assert [(c.channel, c.status, c.count) for c in stats.counts] == [
        (pb.CHANNEL_EMAIL, pb.NOTIFICATION_STATUS_SENT, 2)
    ]
    await refused(
        notifications.stub().GetDeliveryStats(
            pb.GetDeliveryStatsRequest(), metadata=notifications.user(ALICE)
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        "PERMISSION_MISSING",
    )


async def test_preferences_are_the_users_own(notifications: NotificationsHarness) -> None:
    defaults = await notifications.stub().GetPreferences(
        pb.GetPreferencesRequest(name="users/me/notificationPreferences"),
        metadata=notifications.user(ALICE),
    )
    assert defaults.preferences.name == f"{ALICE}/notificationPreferences"
    assert not defaults.preferences.marketing_opt_in
    saved = await notifications.set_preferences(
        ALICE,
        pb.NotificationPreferences(
            channels=[
                pb.ChannelPreference(
                    channel=pb.CHANNEL_SMS, address=pb.Address(phone_number="+34600123456")
                )
            ],
            preferred_locale="es-AR",
        ),
    )
    assert saved.etag
    await refused(
        notifications.stub().SetPreferences(
            pb.SetPreferencesRequest(
                preferences=pb.NotificationPreferences(name=f"{BOB}/notificationPreferences"),
                request_id=request_id(),
            ),
            metadata=notifications.user(ALICE),
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        "PERMISSION_MISSING",
    )
    for bad, reason in (
        (
            pb.NotificationPreferences(
                quiet_hours=pb.QuietHours(
                    start_time=timeofday_pb2.TimeOfDay(hours=22),
                    end_time=timeofday_pb2.TimeOfDay(hours=7),
                    time_zone="Mars/Olympus",
                )
            ),
            "INVALID_TIME_ZONE",
        ),
        (
            pb.NotificationPreferences(
                quiet_hours=pb.QuietHours(
                    start_time=timeofday_pb2.TimeOfDay(hours=7),
                    end_time=timeofday_pb2.TimeOfDay(hours=7),
                    time_zone="Europe/Madrid",
                )
            ),
            "INVALID_QUIET_HOURS",
        ),
        (
            pb.NotificationPreferences(
                channels=[
                    pb.ChannelPreference(channel=pb.CHANNEL_SMS),
                    pb.ChannelPreference(channel=pb.CHANNEL_SMS),
                ]
            ),
            "DUPLICATE_CHANNEL",
        ),
        (
            pb.NotificationPreferences(
                channels=[
                    pb.ChannelPreference(
                        channel=pb.CHANNEL_SMS, address=pb.Address(email_address="a@b.co")
                    )
                ]
            ),
            "ADDRESS_CHANNEL_MISMATCH",
        ),
    ):
        bad.name = f"{ALICE}/notificationPreferences"
        await refused(
            notifications.stub().SetPreferences(
                pb.SetPreferencesRequest(preferences=bad, request_id=request_id()),
                metadata=notifications.user(ALICE),
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            reason,
        )
    # Stale etag.
    await refused(
        notifications.stub().SetPreferences(
            pb.SetPreferencesRequest(
                preferences=pb.NotificationPreferences(
                    name=f"{ALICE}/notificationPreferences", etag='"prefs/0"'
                ),
                request_id=request_id(),
            ),
            metadata=notifications.user(ALICE),
        ),
        grpc.StatusCode.ABORTED,
        "ETAG_MISMATCH",
    )
    [sms] = await notifications.send(
        channel=pb.CHANNEL_SMS,
        recipient=pb.Recipient(user=ALICE),
        inline_content=inline(subject="", text="Your visitor is here"),
    )
    assert sms.address.phone_number == "+34600123456"
