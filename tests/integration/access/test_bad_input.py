"""Bad input is INVALID_ARGUMENT with field violations and the contract's reason; nothing is
written. Unknown resources are NOT_FOUND; wrong callers PERMISSION_DENIED."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import grpc
import pytest
from google.protobuf import timestamp_pb2
from google.rpc import error_details_pb2
from google.type import dayofweek_pb2, timeofday_pb2

from gatehouse.access.v1 import access_pb2
from gatehouse.common.v1 import common_pb2
from tests.integration.access.harness import AccessHarness, door, request_id
from tests.support.grpc_calls import detail, error_info, rich_status


async def refused(call: Any) -> tuple[grpc.StatusCode, str, list[str]]:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    status = rich_status(raised.value)
    fields: list[str] = []
    if raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT:
        fields = [v.field for v in detail(status, error_details_pb2.BadRequest).field_violations]
    return raised.value.code(), error_info(status).reason, fields


def window(day: int, start: int, end: int) -> access_pb2.WeeklyWindow:
    return access_pb2.WeeklyWindow(
        day=day,
        start_time=timeofday_pb2.TimeOfDay(hours=start),
        end_time=timeofday_pb2.TimeOfDay(hours=end),
    )


def issue(**grant: Any) -> access_pb2.IssuePinRequest:
    pin_length = grant.pop("pin_length", 0)
    grant.setdefault("holder", "users/ana")
    grant.setdefault("doors", [door("main")])
    return access_pb2.IssuePinRequest(
        parent="buildings/b1",
        grant=access_pb2.Grant(**grant),
        pin_length=pin_length,
        request_id=request_id(),
    )


async def test_issue_pin_refusals_name_fields_and_reasons(access: AccessHarness) -> None:
    stub = await access.operator()
    past = timestamp_pb2.Timestamp()
    past.FromDatetime(access.clock() - timedelta(hours=1))
    cases: list[tuple[access_pb2.IssuePinRequest, str, list[str]]] = [
        (issue(doors=[door("nope")]), "UNKNOWN_DOOR", ["grant.doors[0]"]),
        (issue(doors=["buildings/b2/doors/main"]), "UNKNOWN_DOOR", ["grant.doors[0]"]),
        (issue(doors=[]), "INVALID_FIELD", ["grant.doors"]),
        (
            issue(validity=common_pb2.TimeRange(end_time=past)),
            "INVALID_VALIDITY_WINDOW",
            ["grant.validity.end_time"],
        ),
        (issue(pin_length=5), "INVALID_PIN_LENGTH", ["pin_length"]),
        (issue(max_uses=-1), "INVALID_FIELD", ["grant.max_uses"]),
        (issue(holder="someone"), "INVALID_FIELD", ["grant.holder"]),
        (
            issue(schedule=access_pb2.WeeklySchedule(time_zone="Mars/Olympus")),
            "UNKNOWN_TIME_ZONE",
            ["grant.schedule.time_zone"],
        ),
        (
            issue(
                schedule=access_pb2.WeeklySchedule(
                    windows=[
                        window(dayofweek_pb2.MONDAY, 8, 12),
                        window(dayofweek_pb2.MONDAY, 11, 13),
                        window(0, 8, 9),
                    ]
                )
            ),
            "INVALID_SCHEDULE",
            ["grant.schedule.windows[2].day", "grant.schedule.windows[1]"],
        ),
    ]
    for request, reason, fields in cases:
        assert await refused(stub.IssuePin(request)) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            reason,
            fields,
        ), request
    listed = await stub.ListGrants(access_pb2.ListGrantsRequest(parent="buildings/b1"))
    assert list(listed.grants) == []


async def test_unknown_building_and_grant_are_not_found(access: AccessHarness) -> None:
    stub = await access.operator()
    unknown_building = issue()
    unknown_building.parent = "buildings/b9"
    assert (await refused(stub.IssuePin(unknown_building)))[:2] == (
        grpc.StatusCode.NOT_FOUND,
        "BUILDING_NOT_FOUND",
    )
    assert (
        await refused(
            stub.RevokePin(
                access_pb2.RevokePinRequest(name="buildings/b1/grants/g0", request_id=request_id())
            )
        )
    )[:2] == (grpc.StatusCode.NOT_FOUND, "GRANT_NOT_FOUND")


async def test_validate_pin_format_door_and_caller(access: AccessHarness) -> None:
    controller = await access.controller("main")
    for pin in ("12345", "123456789", "12a456"):
        code, reason, fields = await refused(
            controller.ValidatePin(
                access_pb2.ValidatePinRequest(door=door("main"), pin=pin, request_id=request_id())
            )
        )
        assert (code, reason, fields) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_PIN_FORMAT",
            ["pin"],
        )
    # The main door's controller is not the side door's.
    assert (
        await refused(
            controller.ValidatePin(
                access_pb2.ValidatePinRequest(
                    door=door("side"), pin="123456", request_id=request_id()
                )
            )
        )
    )[:2] == (grpc.StatusCode.PERMISSION_DENIED, "DEVICE_NOT_BOUND_TO_DOOR")
    access.directory.doors.pop(("b1", "garage"))
    garage = await access.controller("garage")
    assert (
        await refused(
            garage.ValidatePin(
                access_pb2.ValidatePinRequest(
                    door=door("garage"), pin="123456", request_id=request_id()
                )
            )
        )
    )[:2] == (grpc.StatusCode.NOT_FOUND, "DOOR_NOT_FOUND")
    # An operator's token is not a device.
    operator = await access.operator()
    assert (
        await refused(
            operator.ValidatePin(
                access_pb2.ValidatePinRequest(
                    door=door("main"), pin="123456", request_id=request_id()
                )
            )
        )
    )[0] == grpc.StatusCode.UNAUTHENTICATED
    assert await access.entries() == []


async def test_permission_is_checked_before_existence(access: AccessHarness) -> None:
    reader = await access.operator("access.grants.read")
    code, reason, _ = await refused(reader.IssuePin(issue()))
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_MISSING")


async def test_directory_down_is_unavailable_not_internal(access: AccessHarness) -> None:
    stub = await access.operator()
    access.directory.down = True
    code, reason, _ = await refused(stub.IssuePin(issue()))
    assert (code, reason) == (grpc.StatusCode.UNAVAILABLE, "DIRECTORY_UNAVAILABLE")
