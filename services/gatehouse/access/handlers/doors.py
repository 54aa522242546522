"""OpenDoor: a remote open through monitoring's device session, acknowledged by the door's
controller, then logged (REMOTE_OPEN) with its `door.opened` event.

Nothing is written before the controller acknowledged: a refused, offline or unanswered open
leaves no trace but the audit of the call. The command's request id derives from the
caller's request id, so a retry asks monitoring for the same command (never a second open).
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from google.protobuf.message import Message

from gatehouse.access import mapping
from gatehouse.access.domain import names
from gatehouse.access.domain.chain import Decision, EntryKind, LogEntry
from gatehouse.access.domain.grants import Actor
from gatehouse.access.handlers.common import (
    AccessDeps,
    IdempotencyKey,
    Reply,
    append_entry,
    door_or_404,
    idempotency_key,
    in_transaction,
    replayed,
)
from gatehouse.access.handlers.ports import (
    AccessUnitOfWork,
    AckTimeoutError,
    CommandAck,
    CommandKind,
    CommandOutcome,
    CommandRefusedError,
    DeviceOfflineError,
    DirectoryUnavailableError,
    DoorInfo,
    UnitOfWorkFactory,
)
from gatehouse.access.v1 import access_pb2
from gatehouse.access.v1 import events_pb2 as events
from gatehouse.runtime.authorization import grants
from gatehouse.runtime.errors import (
    AccessRefused,
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    RequestInProgress,
    Unavailable,
)
from gatehouse.runtime.identity import Caller

EMERGENCY_PERMISSION = "access.emergency"
DEFAULT_UNLOCK = timedelta(seconds=5)
MAX_UNLOCK = timedelta(seconds=60)
MAX_REASON_CHARS = 500


def _may_override(caller: Caller) -> bool:
    return caller.claims is not None and grants(caller.claims.permissions, EMERGENCY_PERMISSION)


def _missing_emergency() -> AccessRefused:
    return AccessRefused(
        f"missing permission {EMERGENCY_PERMISSION} (override_lockdown)",
        reason="PERMISSION_MISSING",
        metadata={"permission": EMERGENCY_PERMISSION},
    )


def _unlock_duration(request: access_pb2.OpenDoorRequest) -> timedelta:
    problems: list[FieldViolation] = []
    if not request.reason.strip():
        problems.append(FieldViolation("reason", "is required: why the door is opened"))
    elif len(request.reason) > MAX_REASON_CHARS:
        problems.append(FieldViolation("reason", f"must be at most {MAX_REASON_CHARS} characters"))
    unlock = DEFAULT_UNLOCK
    if request.HasField("unlock_duration"):
        given = request.unlock_duration.ToTimedelta()
        if given < timedelta(0) or given > MAX_UNLOCK:
            problems.append(FieldViolation("unlock_duration", "must be between 0 and 60 s"))
        elif given > timedelta(0):
            unlock = given
    if problems:
        raise InvalidArgument(problems)
    return unlock


async def _command(
    deps: AccessDeps,
    controller: str,
    door: str,
    command_request: str,
    timeout: timedelta,
    unlock: timedelta,
    actor: Actor,
) -> CommandAck:
    """The controller's successful acknowledgement; the contract's error otherwise."""
    if deps.doors is None:
        raise Unavailable(
            "door commands are not available on this replica",
            reason="DEVICE_OFFLINE",
            retry_after=timedelta(seconds=5),
        )
    try:
        ack = await deps.doors.execute(
            controller,
            CommandKind.OPEN_DOOR,
            request_id=command_request,
            timeout=timeout,
            unlock_duration=unlock,
            requested_by=actor,
        )
    except DeviceOfflineError:
        raise Unavailable(
            f"the controller of {door} is offline; nothing was sent. Retry with the same "
            "request_id.",
            reason="DEVICE_OFFLINE",
            retry_after=timedelta(seconds=5),
        ) from None
    except AckTimeoutError:
        raise DeadlineExceeded(
            f"the controller of {door} did not acknowledge in time; the door's state is unknown",
            reason="DEVICE_ACK_TIMEOUT",
        ) from None
    except CommandRefusedError as refused:
        raise FailedPrecondition(
            f"monitoring refused the command: {refused}", reason="DOOR_COMMAND_FAILED"
        ) from None
    except DirectoryUnavailableError:
        raise Unavailable(
            "monitoring cannot be reached; nothing was sent", retry_after=timedelta(seconds=2)
        ) from None
    if ack.outcome is CommandOutcome.EXPIRED:
        raise DeadlineExceeded(
            f"the command to {door} expired before the controller acted",
            reason="DEVICE_ACK_TIMEOUT",
        )
    if ack.outcome is not CommandOutcome.SUCCEEDED:
        raise FailedPrecondition(
            f"the controller of {door} did not open it",
            reason="DOOR_COMMAND_FAILED",
            metadata={"detail": ack.message[:200]},
        )
    return ack


async def open_door(
    request: access_pb2.OpenDoorRequest,
    caller: Caller,
    uow_factory: UnitOfWorkFactory,
    deps: AccessDeps,
    *,
    time_remaining: float | None = None,
) -> access_pb2.OpenDoorResponse:
    key = idempotency_key("OpenDoor", caller, request)
    building_id, door_id = names.door_ids(request.door) or ("", "")
    unlock = _unlock_duration(request)
    # Permission before existence (AIP-211).
    if request.override_lockdown and not _may_override(caller):
        raise _missing_emergency()
    door = await door_or_404(deps, building_id, door_id)
    first = await replayed(uow_factory, deps, key, access_pb2.OpenDoorResponse.FromString)
    if first is not None:
        return first
    async with uow_factory() as uow:
        emergency = await uow.emergencies.get(building_id)
    lockdown = emergency is not None and emergency.lockdown
    if lockdown and not request.override_lockdown:
        raise FailedPrecondition(
            "the building is in emergency lockdown; override_lockdown opens it anyway",
            reason="EMERGENCY_ACTIVE",
        )
    timeout = deps.command_timeout
    if time_remaining is not None:
        # Leave a moment to write the log entry after the acknowledgement.
        timeout = min(timeout, timedelta(seconds=max(time_remaining - 0.5, 0.1)))
    actor = mapping.actor_of(caller)
    # A twin of this call arriving while the controller has not answered yet must not wait
    # for an acknowledgement that only the first call will see.
    in_flight = f"access:open-door:{key.scope}|{key.request_id}"
    if deps.kv is not None and not await deps.kv.set_if_absent(
        in_flight, b"1", ttl=timeout + timedelta(seconds=5)
    ):
        raise RequestInProgress(retry_after=timedelta(seconds=1))
    try:
        # The first call may have finished between the replay check and the claim.
        first = await replayed(uow_factory, deps, key, access_pb2.OpenDoorResponse.FromString)
        if first is not None:
            return first
        ack = await _command(
            deps,
            door.controller,
            request.door,
            str(uuid.uuid5(uuid.NAMESPACE_URL, f"{key.scope}/{key.request_id}")),
            timeout,
            unlock,
            actor,
        )
        return await _record(uow_factory, deps, key, request, door, ack, unlock, actor, lockdown)
    finally:
        if deps.kv is not None:
            await deps.kv.delete(in_flight)


async def _record(
    uow_factory: UnitOfWorkFactory,
    deps: AccessDeps,
    key: IdempotencyKey,
    request: access_pb2.OpenDoorRequest,
    door: DoorInfo,
    ack: CommandAck,
    unlock: timedelta,
    actor: Actor,
    lockdown: bool,
) -> access_pb2.OpenDoorResponse:
    """The acknowledged open, on record: its log entry, `door.opened` and the stored reply."""
    building_id, door_id = door.building_id, door.door_id
    ack_time = ack.complete_time or deps.clock()
    relock_time = ack_time + unlock
    door_name = names.door_name(building_id, door_id)

    async def work(uow: AccessUnitOfWork) -> Reply:
        entry = LogEntry(
            id=deps.new_id(),
            building_id=building_id,
            sequence=0,
            kind=EntryKind.REMOTE_OPEN,
            time=deps.clock(),
            event_id="",
            door_id=door_id,
            decision=Decision.GRANTED,
            actor=actor,
            reason=request.reason,
        )

        def payload(entry_name: str) -> Message:
            return events.DoorOpened(
                door=door_name,
                actor=mapping.actor_proto(actor),
                reason=request.reason,
                device=door.controller,
                relock_time=mapping.timestamp(relock_time),
                lockdown_overridden=lockdown and request.override_lockdown,
                access_log_entry=entry_name,
                building=names.building_name(building_id),
            )

        placed, _ = await append_entry(uow, entry, "door.opened", door_name, payload)
        return Reply(
            access_pb2.OpenDoorResponse(
                device=door.controller,
                ack_time=mapping.timestamp(ack_time),
                relock_time=mapping.timestamp(relock_time),
                access_log_entry=names.log_entry_name(building_id, placed.id),
            )
        )

    return await in_transaction(
        uow_factory, deps, key, access_pb2.OpenDoorResponse.FromString, work
    )
