"""WatchDeliveries: one notification from its current state to a final one, resume without
gap or duplicate, every visible notification live, access."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc

from gatehouse.notifications.v1 import notifications_pb2 as pb
from tests.integration.notifications.harness import (
    ALICE,
    BOB,
    NotificationsHarness,
    email,
    refused,
)

S = {
    v: pb.NotificationStatus.Name(v).removeprefix("NOTIFICATION_STATUS_")
    for v in pb.NotificationStatus.values()
}


async def _updates(stream: AsyncIterator[pb.WatchDeliveriesResponse]) -> list[pb.DeliveryUpdate]:
    return [m.delivery_update async for m in stream if m.HasField("delivery_update")]


async def test_watch_one_follows_it_to_sent_and_resumes_exactly(
    notifications: NotificationsHarness,
) -> None:
    [queued] = await notifications.send(recipient=pb.Recipient(address=email("w@example.com")))
    stream = notifications.stub().WatchDeliveries(
        pb.WatchDeliveriesRequest(name=queued.name), metadata=notifications.staff()
    )
    iterator = aiter(stream)
    first = await anext(iterator)
    assert first.delivery_update.previous_status == pb.NOTIFICATION_STATUS_UNSPECIFIED
    assert first.delivery_update.status == pb.NOTIFICATION_STATUS_QUEUED
    await notifications.deliver()
    rest = await asyncio.wait_for(_updates(iterator), timeout=20)
    assert [(S[u.previous_status], S[u.status]) for u in rest] == [
        ("QUEUED", "SENDING"),
        ("SENDING", "SENT"),
    ]
    assert rest[-1].attempt.outcome == pb.ATTEMPT_OUTCOME_SUCCEEDED
    assert rest[-1].notification.status == pb.NOTIFICATION_STATUS_SENT
    resumed = notifications.stub().WatchDeliveries(
        pb.WatchDeliveriesRequest(name=queued.name, resume_after=first.delivery_update.event_id),
        metadata=notifications.staff(),
    )
    again = await asyncio.wait_for(_updates(aiter(resumed)), timeout=20)
    assert [u.event_id for u in again] == [u.event_id for u in rest]
    await refused(
        anext(
            aiter(
                notifications.stub().WatchDeliveries(
                    pb.WatchDeliveriesRequest(name=queued.name, resume_after="nonsense"),
                    metadata=notifications.staff(),
                )
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "UNKNOWN_RESUME_POINT",
    )


async def test_watch_all_shows_only_what_the_caller_may_see(
    notifications: NotificationsHarness,
) -> None:
    # A known resume point makes the start deterministic however slow the stream opens.
    # (HIGH priority: two messages to one address within a minute bypass the rate limit.)
    [earlier] = await notifications.send(
        recipient=pb.Recipient(user=ALICE), priority=pb.PRIORITY_HIGH
    )
    opening = notifications.stub().WatchDeliveries(
        pb.WatchDeliveriesRequest(name=earlier.name), metadata=notifications.user(ALICE)
    )
    start = (await anext(aiter(opening))).delivery_update.event_id
    opening.cancel()
    await notifications.send(recipient=pb.Recipient(user=BOB))
    [mine] = await notifications.send(recipient=pb.Recipient(user=ALICE), priority=pb.PRIORITY_HIGH)
    stream = notifications.stub().WatchDeliveries(
        pb.WatchDeliveriesRequest(resume_after=start), metadata=notifications.user(ALICE)
    )
    seen: list[pb.DeliveryUpdate] = []

    async def collect() -> None:
        sent = 0
        async for message in stream:
            if message.HasField("delivery_update"):
                seen.append(message.delivery_update)
                sent += message.delivery_update.status == pb.NOTIFICATION_STATUS_SENT
                if sent == 2:
                    return

    reader = asyncio.create_task(collect())
    await notifications.deliver_until_idle()
    await asyncio.wait_for(reader, timeout=20)
    stream.cancel()
    assert {u.notification.name for u in seen} == {earlier.name, mine.name}
    assert [S[u.status] for u in seen if u.notification.name == mine.name] == [
        "QUEUED",
        "SENDING",
        "SENT",
    ]
    assert len({u.event_id for u in seen}) == len(seen)


async def test_watch_one_needs_access(notifications: NotificationsHarness) -> None:
    [to_bob] = await notifications.send(recipient=pb.Recipient(user=BOB))
    await refused(
        anext(
            aiter(
                notifications.stub().WatchDeliveries(
                    pb.WatchDeliveriesRequest(name=to_bob.name), metadata=notifications.user(ALICE)
                )
            )
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        "PERMISSION_MISSING",
    )
