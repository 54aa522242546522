"""The background checker: what no request triggers. Each replica runs it every
`check_interval`:

- flush the heartbeats collected since the last round (one statement);
- end its own sessions that went silent for `offline_after` (OFFLINE, HEARTBEATS_MISSED,
  the stream ends with HEARTBEAT_TIMEOUT), pinging those silent for over an interval;
- turn OFFLINE the devices the database thinks ONLINE whose session lives nowhere (a replica
  died with it) once their last heartbeat is older than `offline_after`;
- raise DEVICE_OFFLINE for devices offline longer than their building's threshold;
- publish EXPIRED for commands nobody acknowledged by their deadline;
- forget device message ids and batch ids past the dedup retention.

All of it is idempotent across replicas: state changes are conditional (the session id, the
state, the alerted flag) and alerts deduplicate.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from gatehouse.monitoring.domain.alerts import evaluate_offline
from gatehouse.monitoring.domain.enums import DeviceState, StatusChangeReason
from gatehouse.monitoring.domain.sessions import Ping, SessionEnd
from gatehouse.monitoring.handlers.alerts import raise_or_occur
from gatehouse.monitoring.handlers.commands import expire_overdue
from gatehouse.monitoring.handlers.device_session import (
    RULE_ACTOR,
    SessionServices,
    heartbeat_timeout,
    mark_offline,
)
from gatehouse.runtime.ids import new_ulid

log = logging.getLogger("gatehouse.monitoring.checker")

_SWEEP_BATCH = 200
_PURGE_EVERY = timedelta(minutes=5)


@dataclass
class CheckerState:
    last_purge: float = float("-inf")


async def check_once(services: SessionServices, state: CheckerState) -> None:
    for step in (_flush_heartbeats, _silent_sessions, _orphaned_devices, _offline_alerts, _expire):
        try:
            await step(services)
        except Exception:
            log.exception("checker step %s failed; next round tries again", step.__name__)
    now = services.monotonic()
    if now - state.last_purge >= _PURGE_EVERY.total_seconds():
        state.last_purge = now
        try:
            await _purge(services)
        except Exception:
            log.exception("purging old dedup records failed")


async def _flush_heartbeats(services: SessionServices) -> None:
    times = services.heartbeats.drain()
    if not times:
        return
    try:
        async with services.uow_factory() as uow:
            await uow.devices.record_heartbeats(times)
            await uow.commit()
    except BaseException:
        services.heartbeats.restore(times)
        raise


async def _silent_sessions(services: SessionServices) -> None:
    settings = services.deps.settings
    now = services.monotonic()
    offline_after = settings.offline_after.total_seconds()
    interval = settings.heartbeat_interval.total_seconds()
    for session in services.sessions.local_sessions():
        if session.ended.is_set():
            continue
        silent = now - session.last_seen
        if silent >= offline_after:
            await mark_offline(
                session.device,
                session.session_id,
                StatusChangeReason.HEARTBEATS_MISSED,
                services.uow_factory,
                services.deps,
            )
            session.end(SessionEnd.HEARTBEAT_TIMEOUT, heartbeat_timeout())
        elif silent >= interval * 1.5 and now - session.last_ping >= interval:
            session.last_ping = now
            session.offer(Ping(ping_id=new_ulid(), server_time=services.deps.clock()))


async def _orphaned_devices(services: SessionServices) -> None:
    settings = services.deps.settings
    # Heartbeats reach the database up to a flush interval late: allow for it.
    cutoff = services.deps.clock() - settings.offline_after - 2 * settings.heartbeat_flush_interval
    async with services.uow_factory() as uow:
        candidates = await uow.devices.silent_online(cutoff, _SWEEP_BATCH)
    for device in candidates:
        if await services.sessions.is_live(device.name):
            continue
        await mark_offline(
            device.name,
            device.session_id,
            StatusChangeReason.HEARTBEATS_MISSED,
            services.uow_factory,
            services.deps,
        )


async def _offline_alerts(services: SessionServices) -> None:
    now = services.deps.clock()
    async with services.uow_factory() as uow:
        candidates = await uow.devices.offline_unalerted(_SWEEP_BATCH)
    for candidate in candidates:
        async with services.uow_factory() as uow:
            device = await uow.devices.get(candidate.building_id, candidate.id, for_update=True)
            building = await uow.buildings.get(candidate.building_id)
            if device is None or building is None or device.state is not DeviceState.OFFLINE:
                continue
            alert = evaluate_offline(building, device, now, device.state_event_id)
            if alert is None:
                continue
            await raise_or_occur(alert, RULE_ACTOR, building, uow, now)
            device.offline_alerted = True
            await uow.devices.update(device)
            await uow.commit()


async def _expire(services: SessionServices) -> None:
    await expire_overdue(services.uow_factory, services.deps.clock())


async def _purge(services: SessionServices) -> None:
    before = services.deps.clock() - services.deps.settings.dedup_retention
    async with services.uow_factory() as uow:
        await uow.device_messages.purge(before)
        await uow.readings.purge_batches(before)
        await uow.idempotency.delete_expired(services.deps.clock())
        await uow.commit()
