"""gRPC entrypoint of the access service: a thin servicer, proto -> handler -> proto.

No business rules and no status codes here: handlers raise domain errors, which the error
interceptor maps. Who is calling comes from the interceptors (`current_caller()`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import grpc
from typing_extensions import override

from gatehouse.access import mapping
from gatehouse.access.handlers import doors, emergency, logs, pins, schedules, visitors
from gatehouse.access.v1 import access_pb2, access_pb2_grpc
from gatehouse.common.v1 import common_pb2
from gatehouse.runtime.identity import current_caller

if TYPE_CHECKING:
    from gatehouse.access.app import AccessApp

Context = grpc.aio.ServicerContext[Any, Any]


class AccessServicer(access_pb2_grpc.AccessServiceServicer):
    """PINs, visitors, door schedules, remote opening, emergencies and the tamper-evident access
    log.
    """

    def __init__(self, app: AccessApp) -> None:
        self._app = app

    # -- grants --

    @override
    async def IssuePin(
        self, request: access_pb2.IssuePinRequest, context: Context
    ) -> access_pb2.IssuePinResponse:
        return await pins.issue_pin(request, current_caller(), self._app.uow, self._app.deps)

    @override
    async def RevokePin(
        self, request: access_pb2.RevokePinRequest, context: Context
    ) -> access_pb2.RevokePinResponse:
        return await pins.revoke_pin(request, current_caller(), self._app.uow, self._app.deps)

    @override
    async def ValidatePin(
        self, request: access_pb2.ValidatePinRequest, context: Context
    ) -> access_pb2.ValidatePinResponse:
        return await pins.validate_pin(request, current_caller(), self._app.uow, self._app.deps)

    @override
    async def ListGrants(
        self, request: access_pb2.ListGrantsRequest, context: Context
    ) -> access_pb2.ListGrantsResponse:
        return await pins.list_grants(request, self._app.uow, self._app.deps)

    # -- visitors --

    @override
    async def RegisterVisitor(
        self, request: access_pb2.RegisterVisitorRequest, context: Context
    ) -> access_pb2.RegisterVisitorResponse:
        return await visitors.register_visitor(
            request, current_caller(), self._app.uow, self._app.deps
        )

    @override
    async def CheckInVisitor(
        self, request: access_pb2.CheckInVisitorRequest, context: Context
    ) -> access_pb2.CheckInVisitorResponse:
        return await visitors.check_in_visitor(
            request, current_caller(), self._app.uow, self._app.deps
        )

    @override
    async def CheckOutVisitor(
        self, request: access_pb2.CheckOutVisitorRequest, context: Context
    ) -> access_pb2.CheckOutVisitorResponse:
        return await visitors.check_out_visitor(
            request, current_caller(), self._app.uow, self._app.deps
        )

    @override
    async def ListVisitors(
        self, request: access_pb2.ListVisitorsRequest, context: Context
    ) -> access_pb2.ListVisitorsResponse:
        return await visitors.list_visitors(request, self._app.uow, self._app.deps)

    # -- door schedules --

    @override
    async def SetDoorSchedule(
        self, request: access_pb2.SetDoorScheduleRequest, context: Context
    ) -> access_pb2.SetDoorScheduleResponse:
        return await schedules.set_door_schedule(
            request, current_caller(), self._app.uow, self._app.deps
        )

    @override
    async def GetDoorSchedule(
        self, request: access_pb2.GetDoorScheduleRequest, context: Context
    ) -> access_pb2.GetDoorScheduleResponse:
        return await schedules.get_door_schedule(request, self._app.uow, self._app.deps)

    # -- doors and emergencies --

    @override
    async def OpenDoor(
        self, request: access_pb2.OpenDoorRequest, context: Context
    ) -> access_pb2.OpenDoorResponse:
        return await doors.open_door(
            request,
            current_caller(),
            self._app.uow,
            self._app.deps,
            time_remaining=context.time_remaining(),
        )

    @override
    async def TriggerEmergency(
        self, request: access_pb2.TriggerEmergencyRequest, context: Context
    ) -> access_pb2.TriggerEmergencyResponse:
        return await emergency.trigger_emergency(
            request, current_caller(), self._app.uow, self._app.deps
        )

    @override
    async def ClearEmergency(
        self, request: access_pb2.ClearEmergencyRequest, context: Context
    ) -> access_pb2.ClearEmergencyResponse:
        return await emergency.clear_emergency(
            request, current_caller(), self._app.uow, self._app.deps
        )

    # -- the access log --

    @override
    async def ListAccessLogs(
        self, request: access_pb2.ListAccessLogsRequest, context: Context
    ) -> access_pb2.ListAccessLogsResponse:
        return await logs.list_access_logs(request, self._app.uow, self._app.deps)

    @override
    async def VerifyAuditLog(
        self, request: access_pb2.VerifyAuditLogRequest, context: Context
    ) -> access_pb2.VerifyAuditLogResponse:
        return await logs.verify_audit_log(request, self._app.uow, self._app.deps)

    @override
    async def WatchAccessLog(
        self, request: access_pb2.WatchAccessLogRequest, context: Context
    ) -> AsyncIterator[access_pb2.WatchAccessLogResponse]:
        query = logs.watch_query(request)
        settings = self._app.settings
        items = logs.watch_access_log(
            query,
            self._app.uow,
            self._app.context.live,
            self._app.deps,
            heartbeat_interval=settings.watch_heartbeat_interval,
            buffer_size=settings.watch_buffer_size,
            stopping=self._app.context.lifecycle.stopping,
            # Headers go out once the stream is live: nothing committed after is missed.
            on_live=lambda: context.send_initial_metadata(()),
        )
        async for item in items:
            if isinstance(item, logs.EntryItem):
                yield access_pb2.WatchAccessLogResponse(entry=mapping.entry_proto(item.entry))
            else:
                yield access_pb2.WatchAccessLogResponse(
                    heartbeat=common_pb2.Heartbeat(
                        time=mapping.timestamp(item.time), last_event_id=item.last_event_id
                    )
                )
