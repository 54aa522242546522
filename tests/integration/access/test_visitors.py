"""A visitor's full day: registered, checked in by invitation code (one-day PIN, host told),
through the doors, checked out (PIN revoked at once)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf import timestamp_pb2

from gatehouse.access.v1 import access_pb2
from gatehouse.access.v1 import events_pb2 as events
from tests.integration.access.harness import AccessHarness, door, request_id
from tests.support.grpc_calls import error_info, rich_status


def at(when: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(when)
    return stamp


async def register(
    access: AccessHarness, doors: list[str], arrival: datetime
) -> access_pb2.RegisterVisitorResponse:
    stub = await access.operator()
    response: access_pb2.RegisterVisitorResponse = await stub.RegisterVisitor(
        access_pb2.RegisterVisitorRequest(
            parent="buildings/b1",
            visitor=access_pb2.Visitor(
                display_name="Dora Explorer",
                company="Maps Ltd",
                host="users/ana",
                expected_arrival_time=at(arrival),
                doors=doors,
            ),
            request_id=request_id(),
        )
    )
    return response


async def test_a_visitors_full_day(access: AccessHarness) -> None:
    access.clock.set(datetime(2026, 11, 30, 7, 0, tzinfo=UTC))
    registered = await register(access, [door("main")], datetime(2026, 11, 30, 9, 0, tzinfo=UTC))
    visitor = registered.visitor
    assert visitor.state == access_pb2.VISITOR_STATE_EXPECTED
    assert len(registered.invitation_code) == 8
    # End of the Madrid day of arrival: 2026-12-01 00:00 CET.
    assert visitor.invitation_expire_time.ToDatetime(tzinfo=UTC) == datetime(
        2026, 11, 30, 23, 0, tzinfo=UTC
    )
    kiosk = await access.operator("access.visitors.check_in", subject="users/kiosk")
    access.clock.set(datetime(2026, 11, 30, 9, 5, tzinfo=UTC))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await kiosk.CheckInVisitor(
            access_pb2.CheckInVisitorRequest(
                parent="buildings/b1", invitation_code="ZZZZZZZZ", request_id=request_id()
            )
        )
    assert error_info(rich_status(raised.value)).reason == "INVITATION_NOT_FOUND"
    inside = await kiosk.CheckInVisitor(
        access_pb2.CheckInVisitorRequest(
            parent="buildings/b1",
            invitation_code=registered.invitation_code.lower(),
            request_id=request_id(),
        )
    )
    assert inside.visitor.state == access_pb2.VISITOR_STATE_CHECKED_IN
    assert len(inside.pin) == 6
    assert inside.grant.holder == visitor.name
    assert inside.grant.validity.end_time == visitor.invitation_expire_time
    checked_in = await access.events("events.visitor", wait_for=1)
    payload = events.VisitorCheckedIn()
    assert checked_in[0].data.Unpack(payload)
    assert (payload.host, payload.method, payload.grant) == (
        "users/ana",
        access_pb2.CHECK_IN_METHOD_INVITATION_CODE,
        inside.grant.name,
    )
    assert registered.invitation_code not in checked_in[0].SerializeToString().decode("latin-1")
    # Through the main door, not the side one.
    assert (await access.validate("main", inside.pin)).decision == (
        access_pb2.ACCESS_DECISION_GRANTED
    )
    assert (await access.validate("side", inside.pin)).deny_reason == (
        access_pb2.DENY_REASON_WRONG_DOOR
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await kiosk.CheckInVisitor(
            access_pb2.CheckInVisitorRequest(name=visitor.name, request_id=request_id())
        )
    assert error_info(rich_status(raised.value)).reason == "VISITOR_ALREADY_CHECKED_IN"
    reception = await access.operator()
    out = await reception.CheckOutVisitor(
        access_pb2.CheckOutVisitorRequest(name=visitor.name, request_id=request_id())
    )
    assert out.visitor.state == access_pb2.VISITOR_STATE_CHECKED_OUT
    assert (await access.validate("main", inside.pin)).deny_reason == (
        access_pb2.DENY_REASON_REVOKED
    )
    visitor_events = await access.events("events.visitor", wait_for=2)
    assert [event.type for event in visitor_events] == [
        "visitor.checked_in",
        "visitor.checked_out",
    ]
    revoked = await access.events("events.pin", wait_for=1)
    assert [event.subject for event in revoked] == [inside.grant.name]
    listed = await reception.ListVisitors(access_pb2.ListVisitorsRequest(parent="buildings/b1"))
    assert [v.state for v in listed.visitors] == [access_pb2.VISITOR_STATE_CHECKED_OUT]


async def test_escorted_visitors_get_no_pin_and_expired_invitations_fail(
    access: AccessHarness,
) -> None:
    access.clock.set(datetime(2026, 11, 30, 7, 0, tzinfo=UTC))
    escorted = await register(access, [], datetime(2026, 11, 30, 9, 0, tzinfo=UTC))
    stub = await access.operator()
    inside = await stub.CheckInVisitor(
        access_pb2.CheckInVisitorRequest(name=escorted.visitor.name, request_id=request_id())
    )
    assert inside.pin == ""
    assert not inside.HasField("grant")
    late = await register(access, [door("main")], datetime(2026, 11, 30, 10, 0, tzinfo=UTC))
    access.clock.advance(timedelta(days=1))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.CheckInVisitor(
            access_pb2.CheckInVisitorRequest(
                parent="buildings/b1", invitation_code=late.invitation_code, request_id=request_id()
            )
        )
    assert error_info(rich_status(raised.value)).reason == "INVITATION_EXPIRED"


async def test_visitor_input_is_checked(access: AccessHarness) -> None:
    stub = await access.operator()
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await register(access, [door("nope")], access.clock() - timedelta(days=1))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(rich_status(raised.value)).reason in ("INVALID_VISIT_WINDOW", "UNKNOWN_DOOR")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.CheckInVisitor(access_pb2.CheckInVisitorRequest(request_id=request_id()))
    assert error_info(rich_status(raised.value)).reason == "VISITOR_REFERENCE_REQUIRED"
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.CheckInVisitor(
            access_pb2.CheckInVisitorRequest(
                parent="buildings/b1", invitation_code="!!", request_id=request_id()
            )
        )
    assert error_info(rich_status(raised.value)).reason == "INVALID_INVITATION_CODE_FORMAT"


async def test_wrong_invitation_codes_are_limited_per_caller(access: AccessHarness) -> None:
    kiosk = await access.operator("access.visitors.check_in", subject="users/kiosk")
    reasons = []
    for _ in range(11):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await kiosk.CheckInVisitor(
                access_pb2.CheckInVisitorRequest(
                    parent="buildings/b1", invitation_code="ZZZZZZZZ", request_id=request_id()
                )
            )
        reasons.append(error_info(rich_status(raised.value)).reason)
    assert reasons == ["INVITATION_NOT_FOUND"] * 10 + ["TOO_MANY_ATTEMPTS"]
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_no_pin_for_a_visitor_who_has_left(access: AccessHarness) -> None:
    access.clock.set(datetime(2026, 11, 30, 7, 0, tzinfo=UTC))
    registered = await register(access, [], datetime(2026, 11, 30, 9, 0, tzinfo=UTC))
    stub = await access.operator()
    await stub.CheckInVisitor(
        access_pb2.CheckInVisitorRequest(name=registered.visitor.name, request_id=request_id())
    )
    await stub.CheckOutVisitor(
        access_pb2.CheckOutVisitorRequest(name=registered.visitor.name, request_id=request_id())
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await access.issue(holder=registered.visitor.name)
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(rich_status(raised.value)).reason == "VISITOR_CHECKED_OUT"
