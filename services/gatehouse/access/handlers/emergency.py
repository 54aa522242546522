"""Emergencies: TriggerEmergency, ClearEmergency, and the lockdown an alert asks for.

The state is committed first (with its log entry and event), then commanded to every door
controller; a controller that does not acknowledge in time is reported back, never waited
for beyond a short bound.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import datetime, timedelta

from google.protobuf.message import Message

from gatehouse.access import mapping
from gatehouse.access.domain import names
from gatehouse.access.domain.chain import EntryKind, LogEntry
from gatehouse.access.domain.emergency import Emergency, EmergencyMode
from gatehouse.access.domain.grants import Actor
from gatehouse.access.handlers.common import (
    AccessDeps,
    Reply,
    append_entry,
    ask,
    building_or_404,
    idempotency_key,
    in_transaction,
)
from gatehouse.access.handlers.ports import (
    AccessUnitOfWork,
    CommandKind,
    CommandOutcome,
    UnitOfWorkFactory,
)
from gatehouse.access.v1 import access_pb2
from gatehouse.access.v1 import events_pb2 as events
from gatehouse.runtime.errors import FailedPrecondition, FieldViolation, InvalidArgument
from gatehouse.runtime.identity import Caller

log = logging.getLogger("gatehouse.access")

MAX_REASON_CHARS = 500
# How long a trigger waits for the controllers' acknowledgements before answering.
_FAN_OUT_WAIT = timedelta(seconds=3)
_MODES = {int(mode) for mode in EmergencyMode}


def _reason_problems(reason: str) -> list[FieldViolation]:
    if not reason.strip():
        return [FieldViolation("reason", "is required")]
    if len(reason) > MAX_REASON_CHARS:
        return [FieldViolation("reason", f"must be at most {MAX_REASON_CHARS} characters")]
    return []


async def trigger_emergency(
    request: access_pb2.TriggerEmergencyRequest,
    caller: Caller,
    uow_factory: UnitOfWorkFactory,
    deps: AccessDeps,
) -> access_pb2.TriggerEmergencyResponse:
    key = idempotency_key("TriggerEmergency", caller, request)
    building_id = names.emergency_building_id(request.name) or ""
    problems = _reason_problems(request.reason)
    if request.mode not in _MODES:
        problems.insert(0, FieldViolation("mode", "is required: UNLOCK_ALL or LOCKDOWN"))
    if problems:
        raise InvalidArgument(problems)
    await building_or_404(deps, building_id)
    mode = EmergencyMode(request.mode)
    actor = mapping.actor_of(caller)

    async def work(uow: AccessUnitOfWork) -> Reply:
        emergency = await start_emergency(
            uow, deps, building_id, mode, request.reason, actor, source_alert=""
        )
        return Reply(
            access_pb2.TriggerEmergencyResponse(
                emergency=mapping.emergency_proto(emergency, building_id)
            )
        )

    response = await in_transaction(
        uow_factory, deps, key, access_pb2.TriggerEmergencyResponse.FromString, work
    )
    kind = CommandKind.LOCK_DOWN if mode is EmergencyMode.LOCKDOWN else CommandKind.HOLD_UNLOCKED
    unacknowledged = await command_all_doors(deps, building_id, kind, key.request_id)
    response.unacknowledged_doors.extend(unacknowledged)
    return response


async def start_emergency(
    uow: AccessUnitOfWork,
    deps: AccessDeps,
    building_id: str,
    mode: EmergencyMode,
    reason: str,
    actor: Actor,
    *,
    source_alert: str,
) -> Emergency:
    """Commit-ready: the emergency, its log entry and `emergency.triggered` in `uow`."""
    await uow.log.lock_head(building_id)
    now = deps.clock()
    current = await uow.emergencies.get(building_id)
    if current is not None and current.active:
        raise FailedPrecondition(
            f"{names.emergency_name(building_id)} is already active "
            f"({current.mode.name}); clear it first",
            reason="EMERGENCY_ACTIVE",
        )
    emergency = Emergency(
        building_id=building_id,
        active=True,
        mode=mode,
        reason=reason,
        triggered_by=actor,
        trigger_time=now,
        source_alert=source_alert,
    )
    await uow.emergencies.put(emergency)
    name = names.emergency_name(building_id)

    def payload(entry_name: str) -> Message:
        return events.EmergencyTriggered(
            emergency=name,
            mode=int(mode),  # type: ignore[arg-type]
            reason=reason,
            actor=mapping.actor_proto(actor),
            source_alert=source_alert,
            access_log_entry=entry_name,
            building=names.building_name(building_id),
        )

    await append_entry(
        uow,
        _entry(deps, building_id, EntryKind.EMERGENCY_TRIGGERED, now, actor, reason, mode),
        "emergency.triggered",
        name,
        payload,
    )
    return emergency


async def clear_emergency(
    request: access_pb2.ClearEmergencyRequest,
    caller: Caller,
    uow_factory: UnitOfWorkFactory,
    deps: AccessDeps,
) -> access_pb2.ClearEmergencyResponse:
    key = idempotency_key("ClearEmergency", caller, request)
    building_id = names.emergency_building_id(request.name) or ""
    problems = _reason_problems(request.reason)
    if problems:
        raise InvalidArgument(problems)
    await building_or_404(deps, building_id)
    actor = mapping.actor_of(caller)
    cleared_mode: list[EmergencyMode] = []

    async def work(uow: AccessUnitOfWork) -> Reply:
        await uow.log.lock_head(building_id)
        now = deps.clock()
        current = await uow.emergencies.get(building_id)
        if current is None or not current.active:
            raise FailedPrecondition(f"{request.name} is not active", reason="EMERGENCY_NOT_ACTIVE")
        cleared = current.cleared(now, actor, request.reason)
        await uow.emergencies.put(cleared)
        name = names.emergency_name(building_id)

        def payload(entry_name: str) -> Message:
            return events.EmergencyCleared(
                emergency=name,
                mode=int(current.mode),  # type: ignore[arg-type]
                reason=request.reason,
                actor=mapping.actor_proto(actor),
                trigger_time=mapping.timestamp(current.trigger_time),
                access_log_entry=entry_name,
                building=names.building_name(building_id),
            )

        await append_entry(
            uow,
            _entry(
                deps,
                building_id,
                EntryKind.EMERGENCY_CLEARED,
                now,
                actor,
                request.reason,
                current.mode,
            ),
            "emergency.cleared",
            name,
            payload,
        )
        cleared_mode.append(current.mode)
        return Reply(
            access_pb2.ClearEmergencyResponse(
                emergency=mapping.emergency_proto(cleared, building_id)
            )
        )

    response = await in_transaction(
        uow_factory, deps, key, access_pb2.ClearEmergencyResponse.FromString, work
    )
    if cleared_mode:
        kind = (
            CommandKind.RELEASE_LOCKDOWN
            if cleared_mode[0] is EmergencyMode.LOCKDOWN
            else CommandKind.RELOCK
        )
        await command_all_doors(deps, building_id, kind, key.request_id)
    return response


def _entry(
    deps: AccessDeps,
    building_id: str,
    kind: EntryKind,
    now: datetime,
    actor: Actor,
    reason: str,
    mode: EmergencyMode,
) -> LogEntry:
    return LogEntry(
        id=deps.new_id(),
        building_id=building_id,
        sequence=0,
        kind=kind,
        time=now,
        event_id="",
        actor=actor,
        reason=reason,
        emergency_mode=int(mode),
    )


async def command_all_doors(
    deps: AccessDeps, building_id: str, kind: CommandKind, request_id: str
) -> list[str]:
    """Send `kind` to every door controller of the building at once; the doors whose
    controller did not acknowledge success within a short wait."""
    try:
        doors = await ask(deps.directory.doors(building_id))
    except Exception:
        log.exception("could not list the doors of building %s to command them", building_id)
        return []
    commands = deps.doors
    if commands is None:
        return sorted(names.door_name(building_id, door.door_id) for door in doors)

    async def one(controller: str, door_id: str) -> str | None:
        # Derived, so a retried trigger re-sends the same command instead of a second one.
        command_request = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{request_id}/{kind}/{door_id}"))
        try:
            ack = await commands.execute(
                controller, kind, request_id=command_request, timeout=_FAN_OUT_WAIT
            )
        except Exception as error:
            log.warning("door %s did not take %s: %s", door_id, kind.name, type(error).__name__)
            return names.door_name(building_id, door_id)
        if ack.outcome is not CommandOutcome.SUCCEEDED:
            return names.door_name(building_id, door_id)
        return None

    results = await asyncio.gather(*(one(door.controller, door.door_id) for door in doors))
    return sorted(result for result in results if result is not None)
