"""What access consumes from monitoring.

- `alert.triggered` with `lockdown_requested` (the building's policy asks for it): access locks
  the building down by itself. An emergency already in force is left as it is: an operator
  decided it, and a second alert must not change its mode.
- `device.status_changed` of a door controller coming ONLINE while its building is in an
  emergency: the controller gets the emergency's command (it was offline when it began).

Each runs in the consumer's transaction (processed once with effect); door commands go out
after that transaction commits.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

from gatehouse.access.adapters.unit_of_work import SqlAlchemyAccessUnitOfWork
from gatehouse.access.domain import names
from gatehouse.access.domain.emergency import EmergencyMode
from gatehouse.access.domain.grants import Actor
from gatehouse.access.handlers.common import AccessDeps
from gatehouse.access.handlers.emergency import command_all_doors, start_emergency
from gatehouse.access.handlers.ports import CommandKind
from gatehouse.events.v1.envelope_pb2 import Event
from gatehouse.monitoring.v1 import events_pb2 as monitoring_events
from gatehouse.monitoring.v1 import monitoring_pb2
from gatehouse.runtime.consumers import Consumer

log = logging.getLogger("gatehouse.access")

CONSUMER = "access"
ACCESS_SPIFFE_ID = "spiffe://gatehouse/access"
_REASON_CHARS = 200


def alert_consumer(
    unit_of_work: Callable[[], SqlAlchemyAccessUnitOfWork], deps: Callable[[], AccessDeps]
) -> Consumer[SqlAlchemyAccessUnitOfWork]:
    consumer: Consumer[SqlAlchemyAccessUnitOfWork] = Consumer(CONSUMER, unit_of_work)

    async def lock_down(
        event: Event, payload: monitoring_events.AlertTriggered, uow: SqlAlchemyAccessUnitOfWork
    ) -> None:
        if not payload.lockdown_requested:
            return
        building_id = names.building_id(payload.building)
        if building_id is None:
            log.warning("alert.triggered %s names no building; ignored", event.id)
            return
        current = await uow.emergencies.get(building_id)
        if current is not None and current.active:
            log.info("building %s already in emergency; alert %s noted", building_id, event.id)
            return
        summary = payload.alert.summary or "alert"
        await start_emergency(
            uow,
            deps(),
            building_id,
            EmergencyMode.LOCKDOWN,
            f"lockdown on alert: {summary}"[:_REASON_CHARS],
            Actor(service=ACCESS_SPIFFE_ID),
            source_alert=payload.alert.name,
        )
        request_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"alert-lockdown/{event.id}"))

        async def command_doors() -> None:
            unacknowledged = await command_all_doors(
                deps(), building_id, CommandKind.LOCK_DOWN, request_id
            )
            if unacknowledged:
                log.warning(
                    "lockdown of building %s: %d doors did not acknowledge",
                    building_id,
                    len(unacknowledged),
                )

        uow.after_commit(command_doors)

    async def recommand(
        event: Event,
        payload: monitoring_events.DeviceStatusChanged,
        uow: SqlAlchemyAccessUnitOfWork,
    ) -> None:
        # A controller that was offline when an emergency began gets its command now.
        if (
            payload.kind != monitoring_pb2.DEVICE_KIND_DOOR_CONTROLLER
            or payload.state != monitoring_pb2.DEVICE_STATE_ONLINE
        ):
            return
        building_id = names.building_id(payload.building)
        if building_id is None:
            return
        current = await uow.emergencies.get(building_id)
        if current is None or not current.active:
            return
        kind = (
            CommandKind.LOCK_DOWN
            if current.mode is EmergencyMode.LOCKDOWN
            else CommandKind.HOLD_UNLOCKED
        )
        controller = payload.device
        request_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"emergency-recommand/{event.id}"))

        async def command() -> None:
            commands = deps().doors
            if commands is None:
                return
            try:
                await commands.send(controller, kind, request_id=request_id)
            except Exception as error:
                log.warning(
                    "could not command %s back into the emergency: %s",
                    controller,
                    type(error).__name__,
                )

        uow.after_commit(command)

    consumer.add_handler("alert.triggered", monitoring_events.AlertTriggered, lock_down)
    consumer.add_handler("device.status_changed", monitoring_events.DeviceStatusChanged, recommand)
    return consumer
