"""Monitoring over gRPC, with access's own identity: buildings and doors (`Directory`) and
door commands (`DoorCommands`).

ValidatePin is the hot path, so what monitoring says about a building or a door is cached for
a short while (`ttl`; unknown doors for `miss_ttl`). Acknowledgements of commands come back
as `device.command_acknowledged` events on the bus: `execute` subscribes to the device's
events before sending, so an acknowledgement can never arrive unseen.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Generic, TypeVar

import grpc
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2

from gatehouse.access import mapping
from gatehouse.access.domain.grants import Actor
from gatehouse.access.handlers.ports import (
    AckTimeoutError,
    BuildingInfo,
    CommandAck,
    CommandKind,
    CommandOutcome,
    CommandRefusedError,
    DeviceOfflineError,
    DirectoryUnavailableError,
    DoorInfo,
)
from gatehouse.events.v1.envelope_pb2 import Event
from gatehouse.monitoring.v1 import events_pb2 as monitoring_events
from gatehouse.monitoring.v1 import monitoring_pb2, monitoring_pb2_grpc
from gatehouse.runtime.events import stream_for
from gatehouse.runtime.live import LiveItem, LiveSource

if TYPE_CHECKING:
    from gatehouse.monitoring.v1.monitoring_pb2_grpc import MonitoringServiceAsyncStub

ACK_EVENT = "device.command_acknowledged"
_CALL_TIMEOUT = 5.0
_OUTCOMES = {
    monitoring_pb2.DEVICE_COMMAND_RESULT_SUCCEEDED: CommandOutcome.SUCCEEDED,
    monitoring_pb2.DEVICE_COMMAND_RESULT_FAILED: CommandOutcome.FAILED,
    monitoring_pb2.DEVICE_COMMAND_RESULT_REJECTED: CommandOutcome.REJECTED,
    monitoring_pb2.DEVICE_COMMAND_RESULT_EXPIRED: CommandOutcome.EXPIRED,
}

K = TypeVar("K")
V = TypeVar("V")


@dataclass(slots=True)
class _Cached(Generic[V]):
    value: V
    until: float


class _TtlCache(Generic[K, V]):
    def __init__(self, monotonic: Callable[[], float]) -> None:
        self._entries: dict[K, _Cached[V]] = {}
        self._monotonic = monotonic

    def get(self, key: K) -> _Cached[V] | None:
        found = self._entries.get(key)
        if found is None or found.until <= self._monotonic():
            return None
        return found

    def put(self, key: K, value: V, ttl: timedelta) -> None:
        if len(self._entries) > 10_000:
            self._entries.clear()  # bounded: a flood of unknown names cannot grow it
        self._entries[key] = _Cached(value, self._monotonic() + ttl.total_seconds())


def _reason(error: grpc.aio.AioRpcError) -> str:
    """The ErrorInfo reason of a rich error status, if it carries one."""
    for key, value in error.trailing_metadata() or ():
        if key != "grpc-status-details-bin" or not isinstance(value, bytes):
            continue
        status = status_pb2.Status.FromString(value)
        for detail in status.details:
            info = error_details_pb2.ErrorInfo()
            if detail.Unpack(info):
                return info.reason
    return ""


def _unavailable(error: grpc.aio.AioRpcError) -> DirectoryUnavailableError:
    return DirectoryUnavailableError(f"monitoring answered {error.code().name}")


class MonitoringClient:
    """Implements `Directory` and `DoorCommands` on one channel to monitoring."""

    def __init__(
        self,
        channel: Callable[[], grpc.aio.Channel],
        live: LiveSource,
        *,
        ttl: timedelta = timedelta(seconds=30),
        miss_ttl: timedelta = timedelta(seconds=2),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._make_channel = channel
        self._channel: grpc.aio.Channel | None = None
        self._live = live
        self._ttl = ttl
        self._miss_ttl = miss_ttl
        self._buildings: _TtlCache[str, BuildingInfo | None] = _TtlCache(monotonic)
        self._doors: _TtlCache[tuple[str, str], DoorInfo | None] = _TtlCache(monotonic)

    @property
    def _stub(self) -> MonitoringServiceAsyncStub:
        if self._channel is None:
            self._channel = self._make_channel()
        # On an aio channel the generated stub is the async one (what the .pyi's __new__ says).
        return monitoring_pb2_grpc.MonitoringServiceStub(self._channel)

    async def close(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None:
            await channel.close()

    # -- Directory --

    async def building(self, building_id: str) -> BuildingInfo | None:
        cached = self._buildings.get(building_id)
        if cached is not None:
            return cached.value
        try:
            response: monitoring_pb2.GetBuildingResponse = await self._stub.GetBuilding(
                monitoring_pb2.GetBuildingRequest(name=f"buildings/{building_id}"),
                timeout=_CALL_TIMEOUT,
            )
        except grpc.aio.AioRpcError as error:
            if error.code() is grpc.StatusCode.NOT_FOUND:
                self._buildings.put(building_id, None, self._miss_ttl)
                return None
            raise _unavailable(error) from None
        info = BuildingInfo(building_id, response.building.time_zone)
        self._buildings.put(building_id, info, self._ttl)
        return info

    async def door(self, building_id: str, door_id: str) -> DoorInfo | None:
        cached = self._doors.get((building_id, door_id))
        if cached is not None:
            return cached.value
        try:
            response: monitoring_pb2.ListDevicesResponse = await self._stub.ListDevices(
                monitoring_pb2.ListDevicesRequest(
                    parent=f"buildings/{building_id}",
                    kind=monitoring_pb2.DEVICE_KIND_DOOR_CONTROLLER,
                    door=f"buildings/{building_id}/doors/{door_id}",
                    page_size=1,
                ),
                timeout=_CALL_TIMEOUT,
            )
        except grpc.aio.AioRpcError as error:
            if error.code() is grpc.StatusCode.NOT_FOUND:
                self._doors.put((building_id, door_id), None, self._miss_ttl)
                return None
            raise _unavailable(error) from None
        info = (
            DoorInfo(building_id, door_id, response.devices[0].name) if response.devices else None
        )
        self._doors.put((building_id, door_id), info, self._ttl if info else self._miss_ttl)
        return info

    async def doors(self, building_id: str) -> list[DoorInfo]:
        found: list[DoorInfo] = []
        token = ""
        while True:
            try:
                response: monitoring_pb2.ListDevicesResponse = await self._stub.ListDevices(
                    monitoring_pb2.ListDevicesRequest(
                        parent=f"buildings/{building_id}",
                        kind=monitoring_pb2.DEVICE_KIND_DOOR_CONTROLLER,
                        page_size=500,
                        page_token=token,
                    ),
                    timeout=_CALL_TIMEOUT,
                )
            except grpc.aio.AioRpcError as error:
                if error.code() is grpc.StatusCode.NOT_FOUND:
                    return []
                raise _unavailable(error) from None
            prefix = f"buildings/{building_id}/doors/"
            for device in response.devices:
                if device.door.startswith(prefix):
                    door_id = device.door[len(prefix) :]
                    info = DoorInfo(building_id, door_id, device.name)
                    self._doors.put((building_id, door_id), info, self._ttl)
                    found.append(info)
            token = response.next_page_token
            if not token:
                return found

    # -- DoorCommands --

    async def send(self, controller: str, kind: CommandKind, *, request_id: str) -> str:
        response = await self._send(controller, kind, request_id, None, None)
        return response.command_id

    async def _send(
        self,
        controller: str,
        kind: CommandKind,
        request_id: str,
        unlock_duration: timedelta | None,
        deadline: datetime | None,
    ) -> monitoring_pb2.SendDeviceCommandResponse:
        request = monitoring_pb2.SendDeviceCommandRequest(
            name=controller,
            kind=int(kind),  # type: ignore[arg-type]
            request_id=request_id,
            deadline=mapping.timestamp(deadline),
        )
        if kind is CommandKind.OPEN_DOOR:
            duration = duration_pb2.Duration()
            duration.FromTimedelta(unlock_duration or timedelta(seconds=5))
            request.open_door.unlock_duration.CopyFrom(duration)
        try:
            response: monitoring_pb2.SendDeviceCommandResponse = await self._stub.SendDeviceCommand(
                request, timeout=_CALL_TIMEOUT
            )
        except grpc.aio.AioRpcError as error:
            if error.code() is grpc.StatusCode.UNAVAILABLE and _reason(error) == "DEVICE_OFFLINE":
                raise DeviceOfflineError(controller) from None
            if error.code() in (
                grpc.StatusCode.NOT_FOUND,
                grpc.StatusCode.FAILED_PRECONDITION,
                grpc.StatusCode.INVALID_ARGUMENT,
            ):
                raise CommandRefusedError(_reason(error) or error.code().name) from None
            raise _unavailable(error) from None
        return response

    async def execute(
        self,
        controller: str,
        kind: CommandKind,
        *,
        request_id: str,
        timeout: timedelta,
        unlock_duration: timedelta | None = None,
        requested_by: Actor | None = None,
    ) -> CommandAck:
        del requested_by  # monitoring records the calling service itself
        subscription = await self._live.subscribe(
            [stream_for(ACK_EVENT)],
            filter=lambda event: event.type == ACK_EVENT and event.subject == controller,
            heartbeat_interval=timeout,
        )
        try:
            deadline = datetime.now(UTC) + timeout
            sent = await self._send(controller, kind, request_id, unlock_duration, deadline)
            try:
                async with asyncio.timeout(timeout.total_seconds()):
                    async for message in subscription:
                        if not isinstance(message, LiveItem):
                            continue
                        ack = _ack_of(message.event)
                        if ack is not None and ack.command_id == sent.command_id:
                            return ack
            except TimeoutError:
                pass
            raise AckTimeoutError(sent.command_id)
        finally:
            await subscription.aclose()


def _ack_of(event: Event) -> CommandAck | None:
    payload = monitoring_events.DeviceCommandAcknowledged()
    if not event.data.Unpack(payload):
        return None
    return CommandAck(
        command_id=payload.command_id,
        outcome=_OUTCOMES.get(payload.result, CommandOutcome.FAILED),
        message=payload.message,
        complete_time=mapping.from_timestamp(payload.complete_time)
        if payload.HasField("complete_time")
        else None,
    )
