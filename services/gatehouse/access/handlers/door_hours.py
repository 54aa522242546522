"""Business hours: doors in DOOR_SCHEDULE_MODE_UNLOCKED_DURING_WINDOWS are held unlocked inside
their windows and locked again at the end.

`check_door_hours` runs periodically (the app's background task). For every tracked door it
compares what the schedule wants now with what the controller was last told (`held`), sends
HOLD_UNLOCKED or RELOCK when they differ, and records the new state once the controller
acknowledged. A controller that is offline is tried again on the next round. While the
building is in an emergency the emergency governs the doors, so nothing is sent. Replicas may
run the check at once: the command's request id is derived from the door, the state and the
minute, so monitoring sends one command, and only one replica records the change.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import timedelta

from gatehouse.access.domain.schedules import DoorSchedule, DoorScheduleMode
from gatehouse.access.handlers.common import AccessDeps, zone_of
from gatehouse.access.handlers.ports import CommandKind, CommandOutcome, UnitOfWorkFactory

log = logging.getLogger("gatehouse.access")

_ACK_WAIT = timedelta(seconds=5)


@dataclass(frozen=True, slots=True)
class DoorHoursReport:
    held: int = 0
    relocked: int = 0
    failed: int = 0


async def check_door_hours(uow_factory: UnitOfWorkFactory, deps: AccessDeps) -> DoorHoursReport:
    async with uow_factory() as uow:
        tracked = await uow.schedules.tracked()
    held = relocked = failed = 0
    for schedule in tracked:
        outcome = await _check(uow_factory, deps, schedule)
        if outcome is None:
            continue
        if outcome == "failed":
            failed += 1
        elif outcome == "held":
            held += 1
        else:
            relocked += 1
    return DoorHoursReport(held, relocked, failed)


async def _check(
    uow_factory: UnitOfWorkFactory, deps: AccessDeps, schedule: DoorSchedule
) -> str | None:
    now = deps.clock()
    building = await deps.directory.building(schedule.building_id)
    door = await deps.directory.door(schedule.building_id, schedule.door_id)
    if building is None or door is None or deps.doors is None:
        return None
    async with uow_factory() as uow:
        emergency = await uow.emergencies.get(schedule.building_id)
    if emergency is not None and emergency.active:
        return None
    wanted = schedule.mode is DoorScheduleMode.UNLOCKED_DURING_WINDOWS and schedule.held_unlocked(
        now, zone_of(building)
    )
    if wanted == schedule.held:
        return None
    kind = CommandKind.HOLD_UNLOCKED if wanted else CommandKind.RELOCK
    minute = now.replace(second=0, microsecond=0).isoformat()
    request_id = str(
        uuid.uuid5(
            uuid.NAMESPACE_URL,
            f"door-hours/{schedule.building_id}/{schedule.door_id}/{kind.name}/{minute}",
        )
    )
    try:
        ack = await deps.doors.execute(
            door.controller, kind, request_id=request_id, timeout=_ACK_WAIT
        )
    except Exception as error:
        log.warning(
            "door %s/%s did not take %s: %s",
            schedule.building_id,
            schedule.door_id,
            kind.name,
            type(error).__name__,
        )
        return "failed"
    if ack.outcome is not CommandOutcome.SUCCEEDED:
        return "failed"
    async with uow_factory() as uow:
        await uow.schedules.mark_held(schedule.building_id, schedule.door_id, wanted)
        await uow.commit()
    return "held" if wanted else "relocked"
