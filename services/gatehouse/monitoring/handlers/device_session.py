"""A device's live session (ConnectDevice): hello, then heartbeats, readings, events and
acknowledgements up while commands and pings go down, until one side ends it.

`run_session` is what the servicer iterates. It reads the device's messages in a task of its
own, one at a time and paced by a token bucket: a device sending faster than its rate is
slowed down (the server stops reading, and HTTP/2 flow control holds the device back), never
buffered; one that keeps it up for `rate_exceeded_after` is cut off. What goes down waits in
the session's bounded queue.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from gatehouse.monitoring.domain import names
from gatehouse.monitoring.domain.alerts import (
    Actor,
    ObservedEvent,
    effective_observe_time,
    evaluate_device_event,
)
from gatehouse.monitoring.domain.devices import Device
from gatehouse.monitoring.domain.enums import DeviceEventKind, StatusChangeReason
from gatehouse.monitoring.domain.readings import MAX_READINGS_PER_BATCH
from gatehouse.monitoring.domain.sessions import (
    CommandAck,
    DeviceMessage,
    Heartbeat,
    Hello,
    Outbound,
    ReadingsBatch,
    SessionEnd,
    Welcome,
)
from gatehouse.monitoring.domain.throttle import TokenBucket
from gatehouse.monitoring.handlers import events
from gatehouse.monitoring.handlers.alerts import raise_or_occur
from gatehouse.monitoring.handlers.commands import acknowledge_command
from gatehouse.monitoring.handlers.common import (
    MONITORING_SPIFFE_ID,
    MonitoringDependencies,
    building_or_404,
)
from gatehouse.monitoring.handlers.devices import authenticate_device, identity_mismatch
from gatehouse.monitoring.handlers.ports import (
    HeartbeatSink,
    LiveSession,
    SessionDirectory,
    SessionMetrics,
    UnitOfWorkFactory,
)
from gatehouse.monitoring.handlers.readings import check_batch, store_batch
from gatehouse.runtime.errors import (
    Aborted,
    DomainError,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
)
from gatehouse.runtime.identity import Caller

log = logging.getLogger("gatehouse.monitoring.sessions")

RULE_ACTOR = Actor(service=MONITORING_SPIFFE_ID)


def session_replaced() -> Aborted:
    return Aborted(
        "a newer session of this device replaced this one", reason="DEVICE_SESSION_REPLACED"
    )


def heartbeat_timeout() -> Unavailable:
    return Unavailable(
        "no heartbeat within the offline threshold; reconnect",
        reason="HEARTBEAT_TIMEOUT",
        retry_after=None,
    )


def shutting_down() -> Unavailable:
    return Unavailable("this server is shutting down; reconnect", reason="SHUTTING_DOWN")


@dataclass(frozen=True)
class SessionServices:
    """What sessions need beyond the handlers' usual dependencies."""

    deps: MonitoringDependencies
    uow_factory: UnitOfWorkFactory
    sessions: SessionDirectory
    heartbeats: HeartbeatSink
    metrics: SessionMetrics
    monotonic: Callable[[], float]
    # Runs cleanup after a session, outliving the RPC that ended (a cancelled handler
    # cannot be trusted to finish awaiting).
    spawn: Callable[[Coroutine[Any, Any, None]], None]


async def run_session(
    messages: AsyncIterator[DeviceMessage], caller: Caller, services: SessionServices
) -> AsyncIterator[Outbound]:
    try:
        first = await anext(messages)
    except StopAsyncIteration:
        return
    if not isinstance(first.body, Hello):
        raise FailedPrecondition("the first message must be a hello", reason="HELLO_REQUIRED")
    if not first.name:
        raise InvalidArgument([FieldViolation("name", "is required on the hello")])
    async with services.uow_factory() as uow:
        device = await authenticate_device(first.name, caller, uow)
    session = services.sessions.new_session(device.name, device.id, device.building_id)
    device = await _open(device, session.session_id, first.body, services)
    await services.sessions.register(session)
    settings = services.deps.settings
    yield Welcome(
        session_id=session.session_id,
        heartbeat_interval=settings.heartbeat_interval,
        offline_after=settings.offline_after,
        server_time=services.deps.clock(),
        max_readings_per_batch=MAX_READINGS_PER_BATCH,
    )
    reader = asyncio.create_task(
        _read(messages, session, device, services), name=f"device-session {device.name}"
    )
    try:
        while True:
            try:
                yield session.queue.get_nowait()
                continue
            except asyncio.QueueEmpty:
                pass
            if session.ended.is_set():
                break
            session.wakeup.clear()
            await session.wakeup.wait()
    finally:
        reader.cancel()
        # The device went away (the call was cancelled) unless something else ended it.
        session.end(SessionEnd.CLOSED)
        services.spawn(_after(session, services))
    if session.error is not None:
        raise session.error


async def _open(device: Device, session_id: str, hello: Hello, services: SessionServices) -> Device:
    now = services.deps.clock()
    async with services.uow_factory() as uow:
        current = await uow.devices.get(device.building_id, device.id, for_update=True)
        assert current is not None
        change = current.connect(
            session_id,
            now,
            firmware_version=hello.firmware_version,
            supported_commands=hello.supported_commands,
        )
        if change is not None:
            published = events.status_changed(change)
            current.state_event_id = published[0].id
            for event in published:
                await uow.outbox.add(event)
        await uow.devices.update(current)
        await uow.commit()
    return current


async def _read(
    messages: AsyncIterator[DeviceMessage],
    session: LiveSession,
    device: Device,
    services: SessionServices,
) -> None:
    settings = services.deps.settings
    bucket = TokenBucket(
        settings.max_messages_per_second, settings.message_burst, services.monotonic()
    )
    limit = settings.rate_exceeded_after.total_seconds()
    try:
        async for message in messages:
            delay = bucket.take(1, services.monotonic())
            if delay > 0:
                if bucket.throttled_for > limit:
                    raise ResourceExhausted(
                        "the device sends more messages than it may for too long",
                        reason="DEVICE_MESSAGE_RATE_EXCEEDED",
                        retry_after=timedelta(seconds=max(1.0, delay)),
                    )
                await asyncio.sleep(delay)
            if message.name and message.name != device.name:
                raise identity_mismatch()
            await services.sessions.touch(session)
            await _handle(message, device, services)
        session.end(SessionEnd.CLOSED)
    except asyncio.CancelledError:
        raise
    except DomainError as error:
        session.end(SessionEnd.FAILED, error)
    except Exception as error:
        # A bug or a failing dependency: the servicer reports it as INTERNAL (logged there).
        session.end(SessionEnd.FAILED, error)


async def _handle(message: DeviceMessage, device: Device, services: SessionServices) -> None:
    body = message.body
    now = services.deps.clock()
    if isinstance(body, Heartbeat):
        services.heartbeats.note(device.id, now)
    elif isinstance(body, ReadingsBatch):
        check_batch(body, "readings")
        outcome = await store_batch(device, body, services.uow_factory, services.deps)
        services.metrics.readings_accepted(outcome.accepted)
        if outcome.rejections:
            services.metrics.readings_rejected(len(outcome.rejections))
    elif isinstance(body, ObservedEvent):
        await record_device_event(device, message.message_id, body, services)
    elif isinstance(body, CommandAck):
        await acknowledge_command(
            device, message.message_id, body, services.uow_factory, services.deps
        )
    else:
        # A repeated hello on a live session changes nothing; the device may be confused
        # about its state, but the session is fine.
        log.info("%s sent another hello on a live session", device.name)


async def record_device_event(
    device: Device, message_id: str, observed: ObservedEvent, services: SessionServices
) -> None:
    """Publish what the event means (`motion.detected`) and raise the alert its rule calls
    for, once per message id."""
    now = services.deps.clock()
    event = replace(observed, observe_time=effective_observe_time(observed.observe_time, now))
    if event.door and names.building_of(event.door) != device.building_id:
        raise InvalidArgument(
            [FieldViolation("event.door", f"must be a door of {device.building}")]
        )
    if event.door and names.door_ids(event.door) is None:
        raise InvalidArgument(
            [FieldViolation("event.door", "must look like buildings/{id}/doors/{id}")]
        )
    async with services.uow_factory() as uow:
        if not await uow.device_messages.claim(device.id, message_id, now):
            return
        building = await building_or_404(uow, device.building_id)
        current = await uow.devices.get(device.building_id, device.id) or device
        trigger = message_id
        if event.kind is DeviceEventKind.MOTION:
            motion = events.motion_detected(
                current, event, not building.is_occupied(event.observe_time)
            )
            await uow.outbox.add(motion)
            trigger = motion.id
        candidate = evaluate_device_event(building, current, event, trigger)
        if candidate is not None:
            await raise_or_occur(candidate, RULE_ACTOR, building, uow, now)
        await uow.commit()


async def mark_offline(
    device_name: str,
    session_id: str | None,
    reason: StatusChangeReason,
    uow_factory: UnitOfWorkFactory,
    deps: MonitoringDependencies,
) -> bool:
    """Turn the device OFFLINE if `session_id` is still its session (None: whichever)."""
    ids = names.device_ids(device_name)
    assert ids is not None
    async with uow_factory() as uow:
        device = await uow.devices.get(*ids, for_update=True)
        if device is None:
            return False
        change = device.go_offline(session_id, deps.clock(), reason)
        if change is None:
            return False
        published = events.status_changed(change)
        device.state_event_id = published[0].id
        await uow.devices.update(device)
        for event in published:
            await uow.outbox.add(event)
        await uow.commit()
    return True


async def _after(session: LiveSession, services: SessionServices) -> None:
    try:
        await services.sessions.unregister(session)
        if session.end_reason in (SessionEnd.CLOSED, SessionEnd.FAILED):
            await mark_offline(
                session.device,
                session.session_id,
                StatusChangeReason.DISCONNECTED,
                services.uow_factory,
                services.deps,
            )
    except Exception:
        # The offline sweep catches what this missed (the device stays silent).
        log.exception("cleaning up after the session of %s failed", session.device)
