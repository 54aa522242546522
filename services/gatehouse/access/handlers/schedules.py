"""Door schedules: GetDoorSchedule and SetDoorSchedule (with etags, AIP-154)."""

from __future__ import annotations

import secrets

from gatehouse.access import mapping
from gatehouse.access.domain import names
from gatehouse.access.domain.schedules import (
    DoorSchedule,
    DoorScheduleMode,
    door_schedule_problems,
)
from gatehouse.access.handlers.common import (
    AccessDeps,
    Reply,
    building_or_404,
    door_or_404,
    idempotency_key,
    in_transaction,
)
from gatehouse.access.handlers.ports import AccessUnitOfWork, UnitOfWorkFactory
from gatehouse.access.v1 import access_pb2
from gatehouse.runtime.errors import Aborted
from gatehouse.runtime.identity import Caller

_MODES = {int(mode) for mode in DoorScheduleMode}


async def get_door_schedule(
    request: access_pb2.GetDoorScheduleRequest, uow_factory: UnitOfWorkFactory, deps: AccessDeps
) -> access_pb2.GetDoorScheduleResponse:
    building_id, door_id = names.schedule_door_ids(request.name) or ("", "")
    await door_or_404(deps, building_id, door_id)
    zone = (await building_or_404(deps, building_id)).time_zone
    async with uow_factory() as uow:
        stored = await uow.schedules.get(building_id, door_id)
    schedule = stored or DoorSchedule(building_id, door_id)
    return access_pb2.GetDoorScheduleResponse(schedule=mapping.door_schedule_proto(schedule, zone))


async def set_door_schedule(
    request: access_pb2.SetDoorScheduleRequest,
    caller: Caller,
    uow_factory: UnitOfWorkFactory,
    deps: AccessDeps,
) -> access_pb2.SetDoorScheduleResponse:
    key = idempotency_key("SetDoorSchedule", caller, request)
    building_id, door_id = names.schedule_door_ids(request.schedule.name) or ("", "")
    problems = mapping.Problems()
    given = request.schedule
    mode = DoorScheduleMode(given.mode) if given.mode in _MODES else None
    weekly = mapping.parse_schedule(given.weekly_schedule, "schedule.weekly_schedule", problems)
    problems.extend(door_schedule_problems(mode, weekly, "schedule"), "INVALID_SCHEDULE")
    problems.raise_if_any()
    assert mode is not None  # refused above otherwise
    await door_or_404(deps, building_id, door_id)
    zone = (await building_or_404(deps, building_id)).time_zone

    async def work(uow: AccessUnitOfWork) -> Reply:
        now = deps.clock()
        current = await uow.schedules.get(building_id, door_id)
        if given.etag and given.etag != (current.etag if current is not None else ""):
            raise Aborted(
                f"{given.name} changed since it was read; read it again", reason="ETAG_MISMATCH"
            )
        schedule = DoorSchedule(
            building_id=building_id,
            door_id=door_id,
            mode=mode,
            schedule=weekly,
            etag=secrets.token_hex(8),
            update_time=now,
            updated_by=mapping.actor_json(mapping.actor_of(caller)) or "",
        )
        expected = given.etag or (current.etag if current is not None else None)
        if not await uow.schedules.put(schedule, expected):
            raise Aborted(
                f"{given.name} changed since it was read; read it again", reason="ETAG_MISMATCH"
            )
        return Reply(
            access_pb2.SetDoorScheduleResponse(schedule=mapping.door_schedule_proto(schedule, zone))
        )

    return await in_transaction(
        uow_factory, deps, key, access_pb2.SetDoorScheduleResponse.FromString, work
    )
