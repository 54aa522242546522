"""gRPC entrypoint of the monitoring service: a thin servicer, proto -> handler -> proto.

No business rules and no status codes here: handlers raise domain errors, which the error
interceptor maps. Who is calling comes from the interceptors (`current_caller()`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import grpc
from opentelemetry import trace
from typing_extensions import override

from gatehouse.monitoring import mapping
from gatehouse.monitoring.domain import names
from gatehouse.monitoring.domain.sessions import DeviceMessage, ReadingsBatch
from gatehouse.monitoring.handlers import (
    alerts,
    buildings,
    commands,
    device_session,
    devices,
    feed,
    readings,
)
from gatehouse.monitoring.handlers.common import actor_of, idempotency_key, principal_of
from gatehouse.monitoring.v1 import monitoring_pb2, monitoring_pb2_grpc
from gatehouse.runtime.identity import current_caller
from gatehouse.runtime.ids import new_ulid

if TYPE_CHECKING:
    from gatehouse.monitoring.app import MonitoringApp

Context = grpc.aio.ServicerContext[Any, Any]
CORRELATION_HEADERS = ("x-correlation-id", "x-request-id")


def correlation_id(context: Context) -> str:
    """The caller's correlation id (metadata), else this call's trace id."""
    metadata = {
        key: value for key, value in context.invocation_metadata() or () if isinstance(value, str)
    }
    for header in CORRELATION_HEADERS:
        if metadata.get(header):
            return metadata[header][:64]
    span = trace.get_current_span().get_span_context()
    return f"{span.trace_id:032x}" if span.is_valid else ""


async def _device_messages(
    requests: AsyncIterator[monitoring_pb2.ConnectDeviceRequest],
) -> AsyncIterator[DeviceMessage]:
    async for request in requests:
        yield mapping.device_message(request)


async def _batches(
    requests: AsyncIterator[monitoring_pb2.ReportReadingsRequest],
) -> AsyncIterator[tuple[str, ReadingsBatch]]:
    async for request in requests:
        yield request.name, mapping.readings_batch(request.batch)


class MonitoringServicer(monitoring_pb2_grpc.MonitoringServiceServicer):
    """Buildings, devices and their live sessions, alerts and the live event feed."""

    def __init__(self, app: MonitoringApp) -> None:
        self._app = app

    # -- buildings --

    @override
    async def CreateBuilding(
        self, request: monitoring_pb2.CreateBuildingRequest, context: Context
    ) -> monitoring_pb2.CreateBuildingResponse:
        key = idempotency_key("CreateBuilding", current_caller(), request)
        return await buildings.create_building(request, key, self._app.uow, self._app.deps)

    @override
    async def GetBuilding(
        self, request: monitoring_pb2.GetBuildingRequest, context: Context
    ) -> monitoring_pb2.GetBuildingResponse:
        building_id = names.building_id(request.name) or ""
        building = await buildings.get_building(building_id, self._app.uow)
        return monitoring_pb2.GetBuildingResponse(building=building)

    @override
    async def ListBuildings(
        self, request: monitoring_pb2.ListBuildingsRequest, context: Context
    ) -> monitoring_pb2.ListBuildingsResponse:
        return await buildings.list_buildings(request, self._app.uow, self._app.deps)

    @override
    async def GetBuildingStatus(
        self, request: monitoring_pb2.GetBuildingStatusRequest, context: Context
    ) -> monitoring_pb2.GetBuildingStatusResponse:
        building_id = names.status_building_id(request.name) or ""
        status = await buildings.get_building_status(building_id, self._app.uow, self._app.deps)
        return monitoring_pb2.GetBuildingStatusResponse(status=status)

    # -- devices --

    @override
    async def RegisterDevice(
        self, request: monitoring_pb2.RegisterDeviceRequest, context: Context
    ) -> monitoring_pb2.RegisterDeviceResponse:
        secret = request.credential_type == monitoring_pb2.DEVICE_CREDENTIAL_TYPE_TOKEN
        key = idempotency_key("RegisterDevice", current_caller(), request, secret=secret)
        return await devices.register_device(request, key, self._app.uow, self._app.deps)

    @override
    async def GetDevice(
        self, request: monitoring_pb2.GetDeviceRequest, context: Context
    ) -> monitoring_pb2.GetDeviceResponse:
        device = await devices.get_device(request.name, self._app.uow)
        return monitoring_pb2.GetDeviceResponse(device=device)

    @override
    async def ListDevices(
        self, request: monitoring_pb2.ListDevicesRequest, context: Context
    ) -> monitoring_pb2.ListDevicesResponse:
        return await devices.list_devices(request, self._app.uow, self._app.deps)

    # -- device sessions, readings, commands --

    @override
    async def ConnectDevice(
        self,
        request_iterator: AsyncIterator[monitoring_pb2.ConnectDeviceRequest],
        context: Context,
    ) -> AsyncIterator[monitoring_pb2.ConnectDeviceResponse]:
        outbound = device_session.run_session(
            _device_messages(request_iterator), current_caller(), self._app.session_services
        )
        async for item in outbound:
            yield mapping.device_response(item, new_ulid())

    @override
    async def ReportReadings(
        self,
        request_iterator: AsyncIterator[monitoring_pb2.ReportReadingsRequest],
        context: Context,
    ) -> monitoring_pb2.ReportReadingsResponse:
        summary = await readings.upload(
            _batches(request_iterator),
            current_caller(),
            self._app.uow,
            self._app.deps,
            self._app.monotonic,
        )
        return mapping.upload_summary(summary)

    @override
    async def SendDeviceCommand(
        self, request: monitoring_pb2.SendDeviceCommandRequest, context: Context
    ) -> monitoring_pb2.SendDeviceCommandResponse:
        caller = current_caller()
        return await commands.send_device_command(
            request,
            actor_of(caller),
            correlation_id(context),
            idempotency_key("SendDeviceCommand", caller, request),
            self._app.uow,
            self._app.deps,
            self._app.sessions,
        )

    # -- alerts --

    @override
    async def RaiseAlert(
        self, request: monitoring_pb2.RaiseAlertRequest, context: Context
    ) -> monitoring_pb2.RaiseAlertResponse:
        caller = current_caller()
        key = idempotency_key("RaiseAlert", caller, request)
        return await alerts.raise_alert(
            request, actor_of(caller), key, self._app.uow, self._app.deps
        )

    @override
    async def AcknowledgeAlert(
        self, request: monitoring_pb2.AcknowledgeAlertRequest, context: Context
    ) -> monitoring_pb2.AcknowledgeAlertResponse:
        caller = current_caller()
        key = idempotency_key("AcknowledgeAlert", caller, request)
        alert = await alerts.acknowledge_alert(
            request, actor_of(caller), key, self._app.uow, self._app.deps
        )
        return monitoring_pb2.AcknowledgeAlertResponse(alert=alert)

    @override
    async def ResolveAlert(
        self, request: monitoring_pb2.ResolveAlertRequest, context: Context
    ) -> monitoring_pb2.ResolveAlertResponse:
        caller = current_caller()
        key = idempotency_key("ResolveAlert", caller, request)
        alert = await alerts.resolve_alert(
            request, actor_of(caller), key, self._app.uow, self._app.deps
        )
        return monitoring_pb2.ResolveAlertResponse(alert=alert)

    @override
    async def ListAlerts(
        self, request: monitoring_pb2.ListAlertsRequest, context: Context
    ) -> monitoring_pb2.ListAlertsResponse:
        return await alerts.list_alerts(request, self._app.uow, self._app.deps)

    # -- the live feed --

    @override
    async def StreamEvents(
        self, request: monitoring_pb2.StreamEventsRequest, context: Context
    ) -> AsyncIterator[monitoring_pb2.StreamEventsResponse]:
        async def headers_now() -> None:
            await context.send_initial_metadata(())

        stream = feed.stream_events(
            request, principal_of(current_caller()), self._app.feed_services, headers_now
        )
        async for response in stream:
            yield response
