"""The feed projection: a consumer of every event family the live feed shows, republishing
each envelope unchanged (same id) to its building's feed stream, and keeping the building's
emergency state from access's events.

Delivery is at least once, like every consumer's: the runner marks the event processed in
the transaction it commits after the handler; a crash between the publish and that commit
publishes the envelope again, with the same id (watchers drop repeats by id, §7).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC

from google.protobuf.message import Message

from gatehouse.access.v1 import access_pb2
from gatehouse.access.v1 import events_pb2 as access_events
from gatehouse.events.v1.envelope_pb2 import Event
from gatehouse.monitoring.adapters.unit_of_work import SqlAlchemyMonitoringUnitOfWork
from gatehouse.monitoring.domain.buildings import EmergencyState
from gatehouse.monitoring.handlers.feed import (
    FEED_PAYLOADS,
    building_of_payload,
    feed_stream,
)
from gatehouse.monitoring.handlers.ports import FeedHead
from gatehouse.runtime.bus import GroupEventBus
from gatehouse.runtime.consumers import Consumer

log = logging.getLogger("gatehouse.monitoring.feed")

FEED_CONSUMER = "monitoring-feed"


def feed_consumer(
    bus: GroupEventBus, unit_of_work: Callable[[], SqlAlchemyMonitoringUnitOfWork]
) -> Consumer[SqlAlchemyMonitoringUnitOfWork]:
    consumer: Consumer[SqlAlchemyMonitoringUnitOfWork] = Consumer(FEED_CONSUMER, unit_of_work)

    async def project(event: Event, payload: Message, uow: SqlAlchemyMonitoringUnitOfWork) -> None:
        building_id = building_of_payload(event, payload)
        if building_id is None:
            return
        # Locked only when the event changes the building (emergencies): other events only
        # need to know it exists, and must not queue behind each other on its row.
        changes = isinstance(
            payload, (access_events.EmergencyTriggered, access_events.EmergencyCleared)
        )
        building = await uow.buildings.get(building_id, for_update=changes)
        if building is None:
            # Not a building monitoring knows (yet): nobody can watch its feed.
            return
        if isinstance(payload, access_events.EmergencyTriggered):
            building.emergency = EmergencyState(
                active=True,
                kind=access_pb2.EmergencyMode.Name(payload.mode) if payload.mode else "",
                start_time=event.time.ToDatetime(tzinfo=UTC),
                trigger_event_id=event.id,
            )
            await uow.buildings.update(building)
        elif isinstance(payload, access_events.EmergencyCleared):
            building.emergency = EmergencyState()
            await uow.buildings.update(building)
        await bus.publish(feed_stream(building_id), event)

    for event_type, payload_type in FEED_PAYLOADS.items():
        consumer.add_handler(event_type, payload_type, project)
    return consumer


class BusFeedHeads:
    """The newest item of a building's feed, read from its stream (implements `FeedHeads`)."""

    def __init__(self, bus: GroupEventBus) -> None:
        self._bus = bus

    async def head(self, building_id: str) -> FeedHead | None:
        stream = feed_stream(building_id)
        position = await self._bus.latest_position(stream)
        event = await self._bus.get(stream, position)
        if event is None:
            return None
        return FeedHead(event_id=event.id, time=event.time.ToDatetime(tzinfo=UTC))
