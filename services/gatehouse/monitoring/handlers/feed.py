"""The live feed of a building: which events belong to it, how each shows (severity and a
line for people), and the StreamEvents use case over the feed stream.

Each building has ONE bus stream, `monitoring.feed.<building id>`, written by the feed
projection (adapters/feed.py) with the original envelopes of every family that concerns the
building. A single stream makes resuming from a plain event id exact (runtime/live.py):
the contract's `resume_after` is an event id, and the feed is the only order there is.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from google.protobuf.message import Message

from gatehouse.access.v1 import events_pb2 as access_events
from gatehouse.common.v1 import common_pb2
from gatehouse.events.v1.envelope_pb2 import Event
from gatehouse.monitoring.domain import names
from gatehouse.monitoring.domain.enums import Severity
from gatehouse.monitoring.handlers.common import building_or_404
from gatehouse.monitoring.handlers.ports import UnitOfWorkFactory
from gatehouse.monitoring.v1 import events_pb2, monitoring_pb2
from gatehouse.notifications.v1 import events_pb2 as notification_events
from gatehouse.runtime.errors import (
    DomainError,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
)
from gatehouse.runtime.live import (
    RESUME_POINT_UNAVAILABLE,
    STREAM_BUFFER_OVERFLOW,
    UNKNOWN_RESUME_POINT,
    EndReason,
    LiveHeartbeat,
    LiveSource,
)

FEED_PREFIX = "monitoring.feed."
_TYPE = re.compile(r"[a-z][a-z_]*(?:\.[a-z][a-z_]*)+")
_PREFIX = re.compile(r"(?:[a-z][a-z_]*\.)+\*")
MAX_EVENT_TYPES = 50


def feed_stream(building_id: str) -> str:
    return FEED_PREFIX + building_id


# Payload type per event type the feed shows. Other services' payloads are decoded with
# their own generated messages (decision 0002: payloads live with their producers).
FEED_PAYLOADS: Mapping[str, type[Message]] = {
    "device.status_changed": events_pb2.DeviceStatusChanged,
    "camera.offline": events_pb2.CameraOffline,
    "motion.detected": events_pb2.MotionDetected,
    "alert.triggered": events_pb2.AlertTriggered,
    "alert.acknowledged": events_pb2.AlertAcknowledged,
    "alert.resolved": events_pb2.AlertResolved,
    "device.command_acknowledged": events_pb2.DeviceCommandAcknowledged,
    "access.granted": access_events.AccessGranted,
    "access.denied": access_events.AccessDenied,
    "door.opened": access_events.DoorOpened,
    "keypad.locked_out": access_events.KeypadLockedOut,
    "visitor.checked_in": access_events.VisitorCheckedIn,
    "visitor.checked_out": access_events.VisitorCheckedOut,
    "emergency.triggered": access_events.EmergencyTriggered,
    "emergency.cleared": access_events.EmergencyCleared,
    "notification.failed": notification_events.NotificationFailed,
}


def building_of_payload(event: Event, payload: Message) -> str | None:
    """The building id an event concerns, from its payload (or else its subject)."""
    building = getattr(payload, "building", "")
    if not building and isinstance(payload, notification_events.NotificationFailed):
        building = payload.related_resource
    return names.building_of(building or event.subject)


def _tail(name: str) -> str:
    return name.rsplit("/", 1)[-1]


Presentation = tuple[Severity, str]


def _alert_triggered(payload: events_pb2.AlertTriggered) -> Presentation:
    return Severity(payload.alert.severity), f"Alert: {payload.alert.summary}"


def _alert_acknowledged(payload: events_pb2.AlertAcknowledged) -> Presentation:
    who = payload.acknowledged_by.user or payload.acknowledged_by.service
    return Severity(payload.severity), f"Alert acknowledged by {who or 'someone'}"


def _alert_resolved(payload: events_pb2.AlertResolved) -> Presentation:
    note = f": {payload.note[:120]}" if payload.note else ""
    return Severity(payload.severity), f"Alert resolved{note}"


def _status_changed(payload: events_pb2.DeviceStatusChanged) -> Presentation:
    label = payload.display_name or _tail(payload.device)
    state = monitoring_pb2.DeviceState.Name(payload.state).removeprefix("DEVICE_STATE_")
    online = payload.state == monitoring_pb2.DEVICE_STATE_ONLINE
    return (Severity.INFO if online else Severity.LOW), f"Device '{label}' is {state.lower()}"


def _camera_offline(payload: events_pb2.CameraOffline) -> Presentation:
    return Severity.MEDIUM, f"Camera '{payload.display_name or _tail(payload.device)}' went offline"


def _motion(payload: events_pb2.MotionDetected) -> Presentation:
    where = f"zone {payload.zone}" if payload.zone else _tail(payload.device)
    if payload.outside_occupied_hours:
        return Severity.LOW, f"Motion in {where} outside occupied hours"
    return Severity.INFO, f"Motion in {where}"


def _command_acknowledged(payload: events_pb2.DeviceCommandAcknowledged) -> Presentation:
    kind = monitoring_pb2.DeviceCommandKind.Name(payload.kind).removeprefix("DEVICE_COMMAND_KIND_")
    result = monitoring_pb2.DeviceCommandResult.Name(payload.result).removeprefix(
        "DEVICE_COMMAND_RESULT_"
    )
    ok = payload.result == monitoring_pb2.DEVICE_COMMAND_RESULT_SUCCEEDED
    summary = f"{kind.lower()} on {_tail(payload.device)}: {result.lower()}"
    return (Severity.INFO if ok else Severity.LOW), summary


# Severity and one line for people, per payload type. Severities of other services' events
# are monitoring's call (FeedItem.severity): routine entries INFO, refusals LOW, lockouts
# MEDIUM, emergencies CRITICAL.
_PRESENTERS: Mapping[type[Message], Callable[[Any], Presentation]] = {
    events_pb2.AlertTriggered: _alert_triggered,
    events_pb2.AlertAcknowledged: _alert_acknowledged,
    events_pb2.AlertResolved: _alert_resolved,
    events_pb2.DeviceStatusChanged: _status_changed,
    events_pb2.CameraOffline: _camera_offline,
    events_pb2.MotionDetected: _motion,
    events_pb2.DeviceCommandAcknowledged: _command_acknowledged,
    access_events.AccessGranted: lambda p: (Severity.INFO, f"Access granted at {_tail(p.door)}"),
    access_events.AccessDenied: lambda p: (Severity.LOW, f"Access denied at {_tail(p.door)}"),
    access_events.DoorOpened: lambda p: (Severity.INFO, f"Door {_tail(p.door)} opened remotely"),
    access_events.KeypadLockedOut: lambda p: (
        Severity.MEDIUM,
        f"Keypad at {_tail(p.door)} locked out",
    ),
    access_events.VisitorCheckedIn: lambda p: (
        Severity.INFO,
        f"Visitor {p.display_name} checked in",
    ),
    access_events.VisitorCheckedOut: lambda p: (
        Severity.INFO,
        f"Visitor {p.display_name} checked out",
    ),
    access_events.EmergencyTriggered: lambda p: (Severity.CRITICAL, f"Emergency: {p.reason[:150]}"),
    access_events.EmergencyCleared: lambda p: (Severity.MEDIUM, "Emergency cleared"),
    notification_events.NotificationFailed: lambda p: (
        Severity.LOW,
        f"Notification not delivered ({p.failure_code})",
    ),
}


def present(event: Event, payload: Message) -> Presentation:
    """Severity and one line for people."""
    presenter = _PRESENTERS.get(type(payload))
    return (Severity.INFO, event.type) if presenter is None else presenter(payload)


def feed_item(event: Event) -> monitoring_pb2.FeedItem:
    payload_type = FEED_PAYLOADS.get(event.type)
    severity, summary = Severity.INFO, event.type
    if payload_type is not None:
        payload = payload_type()
        if event.data.Unpack(payload):
            severity, summary = present(event, payload)
    item = monitoring_pb2.FeedItem(
        id=event.id,
        type=event.type,
        source=event.source,
        time=event.time,
        subject=event.subject,
        severity=common_pb2.Severity.ValueType(severity),
        summary=summary,
    )
    item.data.CopyFrom(event.data)
    return item


class FeedItemCache:
    """Feed items by event id. Every watcher of a building sees the same events: decoding
    and presenting each once per process, not once per watcher, is what lets many watchers
    share a feed cheaply."""

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._items: OrderedDict[str, monitoring_pb2.StreamEventsResponse] = OrderedDict()

    def response(self, event: Event) -> monitoring_pb2.StreamEventsResponse:
        cached = self._items.get(event.id)
        if cached is not None:
            return cached
        response = monitoring_pb2.StreamEventsResponse(event=feed_item(event))
        self._items[event.id] = response
        if len(self._items) > self._size:
            self._items.popitem(last=False)
        return response


# --- StreamEvents ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TypeFilter:
    exact: frozenset[str]
    prefixes: tuple[str, ...]

    def matches(self, event_type: str) -> bool:
        if not self.exact and not self.prefixes:
            return True
        return event_type in self.exact or event_type.startswith(self.prefixes)


def parse_event_types(entries: Sequence[str]) -> TypeFilter:
    if len(entries) > MAX_EVENT_TYPES:
        raise InvalidArgument(
            [FieldViolation("event_types", f"at most {MAX_EVENT_TYPES} entries")],
            reason="INVALID_EVENT_TYPE",
        )
    exact, prefixes, problems = set(), [], []
    for index, entry in enumerate(entries):
        if _TYPE.fullmatch(entry):
            exact.add(entry)
        elif _PREFIX.fullmatch(entry):
            prefixes.append(entry[:-1])
        else:
            problems.append(
                FieldViolation(
                    f"event_types[{index}]",
                    "must be a type like `alert.triggered` or a prefix like `alert.*`",
                )
            )
    if problems:
        raise InvalidArgument(problems, reason="INVALID_EVENT_TYPE")
    return TypeFilter(frozenset(exact), tuple(prefixes))


class StreamCounter:
    """Feeds each caller holds open on this replica (TOO_MANY_STREAMS beyond the limit)."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._open: dict[str, int] = {}

    @contextmanager
    def hold(self, caller: str) -> Iterator[None]:
        if self._open.get(caller, 0) >= self._limit:
            raise ResourceExhausted(
                f"at most {self._limit} feeds may be open at once",
                reason="TOO_MANY_STREAMS",
                retry_after=timedelta(seconds=5),
            )
        self._open[caller] = self._open.get(caller, 0) + 1
        try:
            yield
        finally:
            remaining = self._open[caller] - 1
            if remaining:
                self._open[caller] = remaining
            else:
                del self._open[caller]


@dataclass(frozen=True)
class FeedServices:
    live: LiveSource
    uow_factory: UnitOfWorkFactory
    cache: FeedItemCache
    streams: StreamCounter
    heartbeat_interval: timedelta
    buffer_size: int
    stopping: Any  # asyncio.Event; Any keeps the dataclass free of event-loop types


async def stream_events(
    request: monitoring_pb2.StreamEventsRequest,
    principal: str,
    services: FeedServices,
    on_live: Callable[[], Awaitable[None]] | None = None,
) -> AsyncIterator[monitoring_pb2.StreamEventsResponse]:
    """The feed as StreamEvents delivers it. `on_live` runs once the subscription is in
    place (the servicer sends the response headers then, so a client knows that everything
    published from now on will reach it)."""
    types = parse_event_types(request.event_types)
    minimum = int(request.min_severity)
    if minimum not in {int(severity) for severity in Severity}:
        raise InvalidArgument([FieldViolation("min_severity", "is unknown")])
    building_id = names.building_id(request.building)
    assert building_id is not None
    async with services.uow_factory() as uow:
        await building_or_404(uow, building_id)
    cache = services.cache

    def wanted(event: Event) -> bool:
        if not types.matches(event.type):
            return False
        if not minimum:
            return True
        return int(cache.response(event).event.severity) >= minimum

    with services.streams.hold(principal):
        try:
            subscription = await services.live.subscribe(
                [feed_stream(building_id)],
                filter=wanted,
                resume_after=request.resume_after or None,
                buffer_size=services.buffer_size,
                stopping=services.stopping,
                heartbeat_interval=services.heartbeat_interval,
                overflow_reason=STREAM_BUFFER_OVERFLOW,
            )
        except DomainError as error:
            raise _resume_error(error) from None
        try:
            if on_live is not None:
                await on_live()
            async for message in subscription:
                if isinstance(message, LiveHeartbeat):
                    yield monitoring_pb2.StreamEventsResponse(heartbeat=message.to_proto())
                else:
                    yield cache.response(message.event)
        finally:
            await subscription.aclose()
        if subscription.ended_by is EndReason.STOPPING:
            draining = Unavailable(
                "the server is shutting down; reconnect with resume_after", reason="SHUTTING_DOWN"
            )
            draining.metadata.update(subscription.resume_metadata())
            raise draining


def _resume_error(error: DomainError) -> DomainError:
    """The hub tells "never existed" (INVALID_ARGUMENT) from "no longer retained"; the
    contract has one answer for both: refresh, then reconnect without `resume_after`."""
    if error.reason in (UNKNOWN_RESUME_POINT, RESUME_POINT_UNAVAILABLE):
        return FailedPrecondition(
            "resume_after is not in this building's feed or is older than its retention; "
            "refresh (GetBuildingStatus, ListAlerts) and reconnect without resume_after",
            reason=RESUME_POINT_UNAVAILABLE,
        )
    return error
