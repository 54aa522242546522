"""Door schedules across a DST change, grant schedules, etags; emergencies overriding grants."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc
import pytest
from google.type import date_pb2, dayofweek_pb2, timeofday_pb2

from gatehouse.access.v1 import access_pb2
from gatehouse.access.v1 import events_pb2 as events
from tests.integration.access.harness import AccessHarness, door, request_id
from tests.support.grpc_calls import error_info, rich_status

GRANTED = access_pb2.ACCESS_DECISION_GRANTED
OUTSIDE = access_pb2.DENY_REASON_OUTSIDE_SCHEDULE


def window(day: int, start: int, end: int) -> access_pb2.WeeklyWindow:
    return access_pb2.WeeklyWindow(
        day=day,
        start_time=timeofday_pb2.TimeOfDay(hours=start),
        end_time=timeofday_pb2.TimeOfDay(hours=end),
    )


async def set_schedule(
    access: AccessHarness, mode: int, windows: list[access_pb2.WeeklyWindow], **extra: object
) -> access_pb2.SetDoorScheduleResponse:
    stub = await access.operator()
    response: access_pb2.SetDoorScheduleResponse = await stub.SetDoorSchedule(
        access_pb2.SetDoorScheduleRequest(
            schedule=access_pb2.DoorSchedule(
                name=f"{door('main')}/schedule",
                mode=mode,  # type: ignore[arg-type]
                weekly_schedule=access_pb2.WeeklySchedule(windows=windows, **extra),  # type: ignore[arg-type]
            ),
            request_id=request_id(),
        )
    )
    return response


async def test_door_hours_hold_across_the_spring_dst_change(access: AccessHarness) -> None:
    # Weekends 08:00-18:00 Madrid time; 2026-03-29 (Sunday) clocks go forward at 02:00.
    stored = await set_schedule(
        access,
        access_pb2.DOOR_SCHEDULE_MODE_PIN_DURING_WINDOWS,
        [window(dayofweek_pb2.SATURDAY, 8, 18), window(dayofweek_pb2.SUNDAY, 8, 18)],
    )
    assert stored.schedule.weekly_schedule.time_zone == "Europe/Madrid"
    assert stored.schedule.etag
    access.clock.set(datetime(2026, 3, 27, 12, 0, tzinfo=UTC))
    issued = await access.issue()
    checks = [
        (datetime(2026, 3, 28, 7, 0, tzinfo=UTC), True),  # Sat 08:00 CET
        (datetime(2026, 3, 28, 6, 59, tzinfo=UTC), False),  # Sat 07:59 CET
        (datetime(2026, 3, 29, 5, 59, tzinfo=UTC), False),  # Sun 07:59 CEST
        (datetime(2026, 3, 29, 6, 0, tzinfo=UTC), True),  # Sun 08:00 CEST
        (datetime(2026, 3, 29, 15, 59, tzinfo=UTC), True),  # Sun 17:59 CEST
        (datetime(2026, 3, 29, 16, 0, tzinfo=UTC), False),  # Sun 18:00 CEST
    ]
    for when, inside in checks:
        access.clock.set(when)
        result = await access.validate("main", issued.pin)
        assert (result.decision == GRANTED) is inside, when
        if not inside:
            assert result.deny_reason == OUTSIDE


async def test_a_holiday_closes_the_door_and_the_etag_guards_writes(
    access: AccessHarness,
) -> None:
    first = await set_schedule(
        access,
        access_pb2.DOOR_SCHEDULE_MODE_PIN_DURING_WINDOWS,
        [window(day, 8, 18) for day in range(1, 6)],
        holidays=[access_pb2.HolidayException(date=date_pb2.Date(year=2026, month=12, day=8))],
    )
    access.clock.set(datetime(2026, 12, 1, 6, 0, tzinfo=UTC))
    issued = await access.issue()
    access.clock.set(datetime(2026, 12, 8, 10, 0, tzinfo=UTC))  # Tuesday, a holiday
    assert (await access.validate("main", issued.pin)).deny_reason == OUTSIDE
    access.clock.set(datetime(2026, 12, 9, 10, 0, tzinfo=UTC))
    assert (await access.validate("main", issued.pin)).decision == GRANTED
    stub = await access.operator()
    got = await stub.GetDoorSchedule(
        access_pb2.GetDoorScheduleRequest(name=f"{door('main')}/schedule")
    )
    assert got.schedule == first.schedule
    stale = access_pb2.DoorSchedule()
    stale.CopyFrom(first.schedule)
    stale.mode = access_pb2.DOOR_SCHEDULE_MODE_PIN_ANYTIME
    stale.weekly_schedule.ClearField("windows")
    await stub.SetDoorSchedule(
        access_pb2.SetDoorScheduleRequest(schedule=stale, request_id=request_id())
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.SetDoorSchedule(
            access_pb2.SetDoorScheduleRequest(schedule=stale, request_id=request_id())
        )
    assert raised.value.code() == grpc.StatusCode.ABORTED
    assert error_info(rich_status(raised.value)).reason == "ETAG_MISMATCH"


async def test_default_schedule_and_bad_schedules(access: AccessHarness) -> None:
    stub = await access.operator()
    got = await stub.GetDoorSchedule(
        access_pb2.GetDoorScheduleRequest(name=f"{door('side')}/schedule")
    )
    assert got.schedule.mode == access_pb2.DOOR_SCHEDULE_MODE_PIN_ANYTIME
    assert got.schedule.weekly_schedule.time_zone == "Europe/Madrid"
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await set_schedule(access, access_pb2.DOOR_SCHEDULE_MODE_PIN_ANYTIME, [window(1, 8, 9)])
    assert error_info(rich_status(raised.value)).reason == "INVALID_SCHEDULE"
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await set_schedule(
            access,
            access_pb2.DOOR_SCHEDULE_MODE_PIN_DURING_WINDOWS,
            [window(1, 22, 6), window(2, 5, 7)],
        )
    assert error_info(rich_status(raised.value)).reason == "INVALID_SCHEDULE"
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.GetDoorSchedule(
            access_pb2.GetDoorScheduleRequest(name=f"{door('nope')}/schedule")
        )
    assert error_info(rich_status(raised.value)).reason == "DOOR_NOT_FOUND"


async def test_a_grant_schedule_limits_its_pin(access: AccessHarness) -> None:
    access.clock.set(datetime(2026, 11, 30, 6, 0, tzinfo=UTC))  # Monday 07:00 Madrid
    issued = await access.issue(
        schedule=access_pb2.WeeklySchedule(windows=[window(dayofweek_pb2.MONDAY, 8, 12)])
    )
    assert (await access.validate("main", issued.pin)).deny_reason == OUTSIDE
    access.clock.set(datetime(2026, 11, 30, 8, 0, tzinfo=UTC))  # 09:00 Madrid
    assert (await access.validate("main", issued.pin)).decision == GRANTED


async def test_lockdown_overrides_every_grant_until_cleared(access: AccessHarness) -> None:
    issued = await access.issue()
    stub = await access.operator()
    triggered = await stub.TriggerEmergency(
        access_pb2.TriggerEmergencyRequest(
            name="buildings/b1/emergency",
            mode=access_pb2.EMERGENCY_MODE_LOCKDOWN,
            reason="intruder on floor 3",
            request_id=request_id(),
        )
    )
    assert triggered.emergency.active
    # No door commands in this harness: every door is reported unacknowledged.
    assert sorted(triggered.unacknowledged_doors) == sorted(
        door(name) for name in ("garage", "main", "side")
    )
    result = await access.validate("main", issued.pin)
    assert result.deny_reason == access_pb2.DENY_REASON_EMERGENCY_LOCKDOWN
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.TriggerEmergency(
            access_pb2.TriggerEmergencyRequest(
                name="buildings/b1/emergency",
                mode=access_pb2.EMERGENCY_MODE_UNLOCK_ALL,
                reason="fire",
                request_id=request_id(),
            )
        )
    assert error_info(rich_status(raised.value)).reason == "EMERGENCY_ACTIVE"
    cleared = await stub.ClearEmergency(
        access_pb2.ClearEmergencyRequest(
            name="buildings/b1/emergency", reason="all clear", request_id=request_id()
        )
    )
    assert not cleared.emergency.active
    assert cleared.emergency.clear_reason == "all clear"
    assert (await access.validate("main", issued.pin)).decision == GRANTED
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ClearEmergency(
            access_pb2.ClearEmergencyRequest(
                name="buildings/b1/emergency", reason="again", request_id=request_id()
            )
        )
    assert error_info(rich_status(raised.value)).reason == "EMERGENCY_NOT_ACTIVE"
    kinds = [entry.kind for entry in await access.entries()]
    assert kinds == [
        access_pb2.ACCESS_LOG_ENTRY_KIND_EMERGENCY_TRIGGERED,
        access_pb2.ACCESS_LOG_ENTRY_KIND_PIN_ATTEMPT,
        access_pb2.ACCESS_LOG_ENTRY_KIND_EMERGENCY_CLEARED,
        access_pb2.ACCESS_LOG_ENTRY_KIND_PIN_ATTEMPT,
    ]
    published = await access.events("events.emergency", wait_for=2)
    assert [event.type for event in published] == ["emergency.triggered", "emergency.cleared"]
    payload = events.EmergencyTriggered()
    assert published[0].data.Unpack(payload)
    assert (payload.mode, payload.reason) == (
        access_pb2.EMERGENCY_MODE_LOCKDOWN,
        "intruder on floor 3",
    )
