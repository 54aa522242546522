"""Readings: a batch is stored in one transaction, once, with what was rejected and why."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta

from gatehouse.monitoring.domain.devices import Device
from gatehouse.monitoring.domain.readings import (
    MAX_BATCH_ID,
    MAX_READINGS_PER_BATCH,
    BatchOutcome,
    Reading,
    UploadSummary,
    screen,
)
from gatehouse.monitoring.domain.sessions import ReadingsBatch
from gatehouse.monitoring.domain.throttle import TokenBucket
from gatehouse.monitoring.handlers.common import MonitoringDependencies
from gatehouse.monitoring.handlers.devices import authenticate_device, identity_mismatch
from gatehouse.monitoring.handlers.ports import UnitOfWorkFactory
from gatehouse.runtime.errors import FieldViolation, InvalidArgument, ResourceExhausted
from gatehouse.runtime.identity import Caller

# The resolution readings are stored with everywhere (PostgreSQL keeps microseconds).
_RESOLUTION = timedelta(microseconds=1)


def check_batch(batch: ReadingsBatch, field: str) -> None:
    """The contract's hard limits: a batch id, and at most 1000 readings."""
    if not batch.batch_id:
        raise InvalidArgument([FieldViolation(f"{field}.batch_id", "is required")])
    if len(batch.batch_id) > MAX_BATCH_ID:
        raise InvalidArgument(
            [FieldViolation(f"{field}.batch_id", f"at most {MAX_BATCH_ID} characters")]
        )
    if len(batch.readings) > MAX_READINGS_PER_BATCH:
        raise InvalidArgument(
            [FieldViolation(f"{field}.readings", f"at most {MAX_READINGS_PER_BATCH} per batch")],
            reason="READINGS_BATCH_TOO_LARGE",
        )


async def store_batch(
    device: Device,
    batch: ReadingsBatch,
    uow_factory: UnitOfWorkFactory,
    deps: MonitoringDependencies,
) -> BatchOutcome:
    now = deps.clock()
    async with uow_factory() as uow:
        if not await uow.readings.claim_batch(device.id, batch.batch_id, now):
            return BatchOutcome(duplicate=True, accepted=0, rejections=())
        first = screen(batch.readings, now)
        candidates = [reading for _, reading in first.accepted]
        stored: set[tuple[str, datetime]] = set()
        if candidates:
            times = [reading.time for reading in candidates if reading.time is not None]
            stored = await uow.readings.stored(
                device.id, [reading.metric for reading in candidates], min(times), max(times)
            )
        screened = first if not stored else screen(batch.readings, now, stored)
        accepted: list[Reading] = [reading for _, reading in screened.accepted]
        await uow.readings.add_many(device.id, accepted)
        await uow.commit()
    times = [reading.time for reading in accepted if reading.time is not None]
    return BatchOutcome(
        duplicate=False,
        accepted=len(accepted),
        rejections=screened.rejected,
        earliest=min(times) if times else None,
        latest=max(times) + _RESOLUTION if times else None,
    )


async def upload(
    batches: AsyncIterator[tuple[str, ReadingsBatch]],
    caller: Caller,
    uow_factory: UnitOfWorkFactory,
    deps: MonitoringDependencies,
    monotonic: Callable[[], float],
) -> UploadSummary:
    """ReportReadings: authenticate on the first message, then store batch after batch as
    they are read (each its own transaction), paced to the readings rate."""
    summary = UploadSummary()
    device: Device | None = None
    settings = deps.settings
    bucket = TokenBucket(settings.max_readings_per_second, settings.readings_burst, monotonic())
    limit = settings.rate_exceeded_after.total_seconds()
    async for name, batch in batches:
        if device is None:
            if not name:
                raise InvalidArgument([FieldViolation("name", "is required on the first message")])
            async with uow_factory() as uow:
                device = await authenticate_device(name, caller, uow)
        elif name and name != device.name:
            raise identity_mismatch()
        check_batch(batch, "batch")
        delay = bucket.take(max(1, len(batch.readings)), monotonic())
        if delay > 0:
            if bucket.throttled_for > limit:
                raise ResourceExhausted(
                    "the device uploads more readings than it may for too long",
                    reason="READINGS_RATE_EXCEEDED",
                    retry_after=timedelta(seconds=max(1.0, delay)),
                )
            await asyncio.sleep(delay)
        summary.add(batch.batch_id, await store_batch(device, batch, uow_factory, deps))
    return summary
