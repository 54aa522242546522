"""Retention: finished notifications, their change log and dead letters go after
`retention`; unfinished ones stay whatever their age. Time passes on the harness clock; the
sweep is called directly (and once through the service's own periodic task)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from functools import partial
from pathlib import Path

import grpc
import pytest
from google.protobuf import timestamp_pb2
from sqlalchemy import text

from gatehouse.notifications.handlers.dead_letters import RequeueOutcome, requeue
from gatehouse.notifications.v1 import notifications_pb2 as pb
from gatehouse.runtime.config import Settings
from tests.integration.notifications.harness import (
    NotificationsHarness,
    email,
    eventually,
    running_notifications,
)


async def _count(harness: NotificationsHarness, table: str) -> int:
    async with harness.app.database.database.engine.connect() as connection:
        found = await connection.scalar(text(f"SELECT count(*) FROM {table}"))
        return int(found or 0)


async def _counts(harness: NotificationsHarness) -> dict[str, int]:
    tables = (
        "notifications_notifications",
        "notifications_changes",
        "notifications_dead_letters",
        "notifications_rate_limits",
        "idempotency_records",
    )
    return {table.removeprefix("notifications_"): await _count(harness, table) for table in tables}


async def _gone(harness: NotificationsHarness, name: str) -> bool:
    try:
        await harness.get(name)
    except grpc.aio.AioRpcError as error:
        if error.code() != grpc.StatusCode.NOT_FOUND:
            raise
        return True
    return False


async def test_the_sweep_forgets_finished_notifications_after_the_retention_in_batches(
    database_url: str, settings: Settings, certs_dir: Path
) -> None:
    async with running_notifications(
        database_url,
        settings,
        certs_dir,
        retry_max_attempts=1,
        retention=timedelta(days=30),
        retention_batch=1,  # every row its own batch: the loop is exercised
    ) as harness:
        hook = pb.Recipient(address=pb.Address(webhook_url=harness.webhook.url))
        [sent] = await harness.send(recipient=pb.Recipient(address=email("a@example.com")))
        harness.webhook.status = 404
        [failed] = await harness.send(channel=pb.CHANNEL_WEBHOOK, recipient=hook)
        await harness.deliver()
        harness.clock.advance(timedelta(minutes=2))
        harness.webhook.status = 500
        [dead] = await harness.send(channel=pb.CHANNEL_WEBHOOK, recipient=hook)
        later = timestamp_pb2.Timestamp()
        later.FromDatetime(harness.clock() + timedelta(days=29))
        [waiting] = await harness.send(
            recipient=pb.Recipient(address=email("later@example.com")), schedule_time=later
        )
        await harness.deliver()
        assert (await harness.get(sent.name)).status == pb.NOTIFICATION_STATUS_SENT
        assert (await harness.get(failed.name)).status == pb.NOTIFICATION_STATUS_FAILED
        assert (await harness.get(dead.name)).status == pb.NOTIFICATION_STATUS_DEAD_LETTERED
        before = await _counts(harness)
        assert before["notifications"] == 4
        assert before["dead_letters"] == 1
        assert before["rate_limits"] == 2
        assert before["idempotency_records"] == 4

        # No notification is old enough yet; the replies' 24 hours are over.
        harness.clock.advance(timedelta(days=29))
        early = await harness.app.sweep()
        assert (early.total, early.replies) == (4, 4)
        assert await _counts(harness) == {**before, "idempotency_records": 0}

        # Past the retention: two sweeps at once (two replicas) delete each row once.
        harness.clock.advance(timedelta(days=2))
        reports = await asyncio.gather(harness.app.sweep(), harness.app.sweep())
        assert sum(r.notifications for r in reports) == 3
        assert sum(r.dead_letters for r in reports) == 1
        assert sum(r.changes for r in reports) == before["changes"] - 1
        assert sum(r.rate_limits for r in reports) == before["rate_limits"]
        assert await _counts(harness) == {
            "notifications": 1,
            "changes": 1,  # the waiting one's own entry
            "dead_letters": 0,
            "rate_limits": 0,
            "idempotency_records": 0,
        }
        for name in (sent.name, failed.name, dead.name):
            assert await _gone(harness, name)
        # The unfinished one stays whatever its age, and is still delivered.
        assert (await harness.get(waiting.name)).status == pb.NOTIFICATION_STATUS_SCHEDULED
        gone = await requeue(harness.app.uow, harness.app.deps, dead.name)
        assert gone.outcome is RequeueOutcome.NOT_FOUND
        assert (await harness.app.sweep()).total == 0
        await harness.deliver()
        assert (await harness.get(waiting.name)).status == pb.NOTIFICATION_STATUS_SENT


async def test_the_running_service_sweeps_on_its_own(
    database_url: str, settings: Settings, certs_dir: Path
) -> None:
    async with running_notifications(
        database_url,
        settings,
        certs_dir,
        worker=True,
        worker_interval=timedelta(milliseconds=100),
        retention_sweep_interval=timedelta(milliseconds=100),
    ) as harness:
        [sent] = await harness.send(recipient=pb.Recipient(address=email("a@example.com")))
        await harness.sink.wait_for(1)

        async def is_sent() -> bool:
            return (await harness.get(sent.name)).status == pb.NOTIFICATION_STATUS_SENT

        await eventually(is_sent, "sent by the worker")
        harness.clock.advance(timedelta(days=31))
        await eventually(partial(_gone, harness, sent.name), "swept by the service")
        assert await _count(harness, "notifications_changes") == 0


@pytest.mark.parametrize("value", ["0", "-5"])
def test_the_retention_must_be_positive(value: str) -> None:
    from gatehouse.notifications.settings import load_notifications_settings  # noqa: PLC0415
    from gatehouse.runtime.config import ConfigurationError  # noqa: PLC0415

    with pytest.raises(ConfigurationError, match="GATEHOUSE_NOTIFICATIONS_RETENTION"):
        load_notifications_settings(_env_file=None, retention=value)
