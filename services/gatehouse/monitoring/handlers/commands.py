"""Device commands: sent to a live session at once or refused at once; one
`device.command_acknowledged` per command, from the device or, past its deadline, from us."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from gatehouse.monitoring import mapping
from gatehouse.monitoring.domain import names
from gatehouse.monitoring.domain.alerts import Actor
from gatehouse.monitoring.domain.commands import (
    DEFAULT_DEADLINE,
    Command,
    deadline_problem,
    unlock_problem,
)
from gatehouse.monitoring.domain.devices import Device
from gatehouse.monitoring.domain.enums import CommandKind, CommandResult
from gatehouse.monitoring.domain.sessions import CommandAck, Delivery
from gatehouse.monitoring.handlers import events
from gatehouse.monitoring.handlers.common import (
    IdempotencyKey,
    LostIdempotencyRaceError,
    MonitoringDependencies,
    device_or_404,
    remember,
    replay,
)
from gatehouse.monitoring.handlers.ports import SessionDirectory, UnitOfWorkFactory
from gatehouse.monitoring.v1 import monitoring_pb2
from gatehouse.runtime.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
)
from gatehouse.runtime.ids import new_ulid

log = logging.getLogger("gatehouse.monitoring.commands")

_KINDS = frozenset(int(kind) for kind in CommandKind if kind)
_OVERDUE_BATCH = 100


def _offline(name: str) -> Unavailable:
    # No RetryInfo: retrying at once is pointless; the caller waits for the device to
    # come back (device.status_changed) instead.
    return Unavailable(f"{name} has no live session", reason="DEVICE_OFFLINE", retry_after=None)


async def send_device_command(
    request: monitoring_pb2.SendDeviceCommandRequest,
    requested_by: Actor,
    correlation_id: str,
    key: IdempotencyKey | None,
    uow_factory: UnitOfWorkFactory,
    deps: MonitoringDependencies,
    sessions: SessionDirectory,
) -> monitoring_pb2.SendDeviceCommandResponse:
    now = deps.clock()
    if int(request.kind) not in _KINDS:
        raise InvalidArgument([FieldViolation("kind", "is required")])
    kind = CommandKind(request.kind)
    deadline = mapping.from_timestamp(request, "deadline", request.deadline)
    if request.HasField("deadline") and deadline is None:
        raise InvalidArgument([FieldViolation("deadline", "is not a valid time")])
    if (problem := deadline_problem(deadline, now)) is not None:
        raise InvalidArgument(
            [FieldViolation("deadline", problem)],
            reason="DEADLINE_IN_PAST" if deadline is not None and deadline <= now else None,
        )
    unlock: timedelta | None = None
    if request.HasField("open_door"):
        parameters = request.open_door
        unlock = mapping.from_duration(parameters, "unlock_duration", parameters.unlock_duration)
    if (problem := unlock_problem(kind, unlock)) is not None:
        raise InvalidArgument([FieldViolation("open_door.unlock_duration", problem)])
    ids = names.device_ids(request.name)
    assert ids is not None
    parse = monitoring_pb2.SendDeviceCommandResponse.FromString
    async with uow_factory() as uow:
        if (replayed := await replay(uow, deps, key, parse)) is not None:
            return replayed
        device = await device_or_404(uow, *ids)
    _check_supported(device, kind)
    if not await sessions.is_live(device.name):
        raise _offline(device.name)
    command = Command(
        id=new_ulid(),
        building_id=device.building_id,
        device_id=device.id,
        kind=kind,
        deadline=deadline or now + DEFAULT_DEADLINE,
        requested_by=requested_by,
        create_time=now,
        correlation_id=correlation_id,
        door=device.door,
        unlock_duration=unlock,
    )
    # Stored before it is sent, so that an acknowledgement racing back finds it.
    async with uow_factory() as uow:
        await uow.commands.add(command)
        await uow.commit()
    delivery = await sessions.deliver(device.name, command)
    if delivery is not Delivery.DELIVERED:
        async with uow_factory() as uow:
            await uow.commands.delete(command.id)
            await uow.commit()
        if delivery is Delivery.QUEUE_FULL:
            raise ResourceExhausted(
                f"{device.name} is not taking commands as fast as they come",
                reason="DEVICE_COMMAND_QUEUE_FULL",
                retry_after=timedelta(seconds=1),
            )
        raise _offline(device.name)
    response = monitoring_pb2.SendDeviceCommandResponse(
        command_id=command.id, deadline=mapping.timestamp(command.deadline)
    )
    try:
        async with uow_factory() as uow:
            await remember(uow, deps, key, response)
            await uow.commit()
    except LostIdempotencyRaceError:
        async with uow_factory() as uow:
            replayed = await replay(uow, deps, key, parse)
            assert replayed is not None
            return replayed
    return response


def _check_supported(device: Device, kind: CommandKind) -> None:
    if not device.supports(kind):
        raise FailedPrecondition(
            f"{device.name} does not support {kind.name}",
            reason="COMMAND_NOT_SUPPORTED",
            metadata={"command": f"DEVICE_COMMAND_KIND_{kind.name}"},
        )


async def acknowledge_command(
    device: Device,
    message_id: str,
    ack: CommandAck,
    uow_factory: UnitOfWorkFactory,
    deps: MonitoringDependencies,
) -> None:
    """A device answered a command: publish its outcome once (later answers are dropped)."""
    now = deps.clock()
    async with uow_factory() as uow:
        if not await uow.device_messages.claim(device.id, message_id, now):
            return
        command = await uow.commands.get(ack.command_id, for_update=True)
        if command is None or command.device_id != device.id:
            # Unknown, or another device's: never let one device answer for another.
            log.info("%s acknowledged unknown command %s", device.name, ack.command_id)
        elif command.acknowledge(ack.result):
            await uow.commands.update(command)
            complete = ack.complete_time or now
            await uow.outbox.add(
                events.command_acknowledged(command, device.name, ack.message, complete)
            )
        await uow.commit()


async def expire_overdue(uow_factory: UnitOfWorkFactory, now: datetime) -> int:
    """Publish EXPIRED for commands nobody acknowledged by their deadline."""
    async with uow_factory() as uow:
        overdue = await uow.commands.overdue(now, _OVERDUE_BATCH)
        count = 0
        for stale in overdue:
            command = await uow.commands.get(stale.id, for_update=True)
            if command is None or not command.acknowledge(CommandResult.EXPIRED):
                continue
            await uow.commands.update(command)
            device = f"buildings/{command.building_id}/devices/{command.device_id}"
            await uow.outbox.add(
                events.command_acknowledged(
                    command, device, "no acknowledgement by the deadline", command.deadline
                )
            )
            count += 1
        await uow.commit()
    return count
