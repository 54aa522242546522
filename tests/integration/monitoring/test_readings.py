"""ReportReadings: batches stored once each, bad readings rejected with reasons, bounded
under a flood."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from sqlalchemy import func, select

from gatehouse.monitoring.adapters.orm import ReadingRow
from gatehouse.monitoring.simulator import random_readings
from gatehouse.monitoring.v1 import monitoring_pb2, monitoring_pb2_grpc
from gatehouse.runtime.config import Settings
from gatehouse.runtime.db import sqlite_url
from tests.integration.monitoring.harness import (
    MonitoringHarness,
    fast_settings,
    running_monitoring,
)
from tests.support.grpc_calls import error_info, rich_status

REJECT = monitoring_pb2.ReadingRejectionReason


async def _stored(m: MonitoringHarness, device_id: str) -> int:
    async with m.app.uow() as uow:
        count = await uow.session.scalar(
            select(func.count()).select_from(ReadingRow).where(ReadingRow.device_id == device_id)
        )
    return int(count or 0)


def _reading(metric: str, value: float, when: datetime | None) -> monitoring_pb2.Reading:
    reading = monitoring_pb2.Reading(metric=metric, value=value)
    if when is not None:
        reading.time.FromDatetime(when)
    return reading


async def _upload(
    channel: grpc.aio.Channel, name: str, batches: list[monitoring_pb2.ReadingBatch]
) -> monitoring_pb2.ReportReadingsResponse:
    async def requests() -> AsyncIterator[monitoring_pb2.ReportReadingsRequest]:
        for index, batch in enumerate(batches):
            yield monitoring_pb2.ReportReadingsRequest(name=name if index == 0 else "", batch=batch)

    return await monitoring_pb2_grpc.MonitoringServiceStub(channel).ReportReadings(requests())


async def test_batches_are_stored_once_with_rejections(monitoring: MonitoringHarness) -> None:
    building = await monitoring.building()
    device, _ = await monitoring.register(building.name, monitoring_pb2.DEVICE_KIND_SENSOR)
    channel = await monitoring.device_channel(device.name)
    now = datetime.now(UTC).replace(microsecond=0)
    good = monitoring_pb2.ReadingBatch(
        batch_id="b1",
        readings=[
            _reading("temperature_celsius", 21.5, now - timedelta(minutes=1)),
            _reading("temperature_celsius", 21.0, now - timedelta(minutes=3)),  # out of order
            _reading("temperature_celsius", 21.0, now - timedelta(minutes=3)),  # duplicate
            _reading("door_open", 1, now - timedelta(days=6)),
            _reading("temperature_celsius", 22.0, now + timedelta(hours=1)),  # future
            _reading("temperature_celsius", 22.0, now - timedelta(days=8)),  # too old
            _reading("temperature_celsius", 22.0, None),  # no time
            _reading("temperature_celsius", math.nan, now),
            _reading("temperature_celsius", math.inf, now),
            _reading("Temperature", 1.0, now),
            _reading("", 1.0, now),
        ],
    )
    summary = await _upload(channel, device.name, [good, good])
    assert (summary.batch_count, summary.duplicate_batch_count) == (2, 1)
    assert (summary.accepted_count, summary.rejected_count) == (3, 8)
    assert [(r.batch_id, r.index, r.reason) for r in summary.rejections] == [
        ("b1", 2, REJECT.READING_REJECTION_REASON_DUPLICATE),
        ("b1", 4, REJECT.READING_REJECTION_REASON_TIME_IN_FUTURE),
        ("b1", 5, REJECT.READING_REJECTION_REASON_TIME_TOO_OLD),
        ("b1", 6, REJECT.READING_REJECTION_REASON_TIME_TOO_OLD),
        ("b1", 7, REJECT.READING_REJECTION_REASON_VALUE_NOT_FINITE),
        ("b1", 8, REJECT.READING_REJECTION_REASON_VALUE_NOT_FINITE),
        ("b1", 9, REJECT.READING_REJECTION_REASON_INVALID_METRIC),
        ("b1", 10, REJECT.READING_REJECTION_REASON_INVALID_METRIC),
    ]
    span = summary.accepted_time_range
    assert span.start_time.ToDatetime(tzinfo=UTC) == now - timedelta(days=6)
    assert span.end_time.ToDatetime(tzinfo=UTC) == now - timedelta(minutes=1, microseconds=-1)
    assert await _stored(monitoring, device.name.rsplit("/", 1)[-1]) == 3
    # The same readings in a new batch: already stored, so duplicates.
    again = monitoring_pb2.ReadingBatch(batch_id="b2", readings=good.readings[:2])
    summary = await _upload(channel, device.name, [again])
    assert (summary.accepted_count, summary.rejected_count) == (0, 2)
    assert not summary.HasField("accepted_time_range")


async def test_oversized_batch_fails_after_storing_the_earlier_ones(
    monitoring: MonitoringHarness,
) -> None:
    building = await monitoring.building()
    device, token = await monitoring.register(
        building.name, monitoring_pb2.DEVICE_KIND_SENSOR, token=True
    )
    channel = await monitoring.channel()

    async def requests() -> AsyncIterator[monitoring_pb2.ReportReadingsRequest]:
        yield monitoring_pb2.ReportReadingsRequest(name=device.name, batch=random_readings(100))
        yield monitoring_pb2.ReportReadingsRequest(batch=random_readings(1001))

    stub = monitoring_pb2_grpc.MonitoringServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ReportReadings(requests(), metadata=(("x-gatehouse-device-token", token),))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(rich_status(raised.value)).reason == "READINGS_BATCH_TOO_LARGE"
    assert await _stored(monitoring, device.name.rsplit("/", 1)[-1]) == 100

    async def no_batch_id() -> AsyncIterator[monitoring_pb2.ReportReadingsRequest]:
        yield monitoring_pb2.ReportReadingsRequest(
            name=device.name, batch=monitoring_pb2.ReadingBatch()
        )

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ReportReadings(no_batch_id(), metadata=(("x-gatehouse-device-token", token),))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_readings_on_the_session_are_stored(monitoring: MonitoringHarness) -> None:
    building = await monitoring.building()
    device, _ = await monitoring.register(building.name, monitoring_pb2.DEVICE_KIND_SENSOR)
    sim = await monitoring.device(device)
    batch = random_readings(50)
    await sim.readings(batch)
    await sim.readings(batch)  # resent after a doubt: stored once
    await sim.close()
    assert await _stored(monitoring, device.name.rsplit("/", 1)[-1]) == 50


async def test_a_flood_is_slowed_down_and_memory_stays_bounded(
    settings: Settings, certs_dir: Path, tmp_path: Path
) -> None:
    """A device pushing readings as fast as it can is held back by flow control: the server
    reads a batch, stores it, paced to the rate, and only then reads the next. What the device
    managed to produce ahead of the server is bounded by the flow-control windows, not by the
    size of the flood."""
    slow = fast_settings(max_readings_per_second=2_000.0, readings_burst=2_000)
    async with running_monitoring(
        settings, certs_dir, sqlite_url(tmp_path / "m.db"), monitoring_settings=slow
    ) as m:
        building = await m.building()
        device, _ = await m.register(building.name, monitoring_pb2.DEVICE_KIND_SENSOR)
        channel = await m.device_channel(device.name)
        produced = 0
        batch_size = 500

        async def flood() -> AsyncIterator[monitoring_pb2.ReportReadingsRequest]:
            nonlocal produced
            while True:
                produced += 1
                yield monitoring_pb2.ReportReadingsRequest(
                    name=device.name, batch=random_readings(batch_size)
                )

        call = monitoring_pb2_grpc.MonitoringServiceStub(channel).ReportReadings(flood())
        device_id = device.name.rsplit("/", 1)[-1]
        # Once the windows are full the device only gets to send what the server took.
        await asyncio.sleep(1.5)
        produced_before, stored_before = produced, await _stored(m, device_id)
        await asyncio.sleep(1.5)
        produced_after, stored_after = produced, await _stored(m, device_id)
        call.cancel()
        taken = (stored_after - stored_before) // batch_size
        assert taken >= 2, "the server kept storing at its pace"
        assert produced_after - produced_before <= taken + 10
        # What it got ahead is bounded by the flow-control windows (a few MiB), whatever
        # the size of the flood; memory does not grow with it.
        assert produced_after - stored_after // batch_size < 400
