"""OpenDoor against a real monitoring service: the command travels over the door controller's
ConnectDevice session (a simulated controller) and the controller's acknowledgement comes back
as `device.command_acknowledged`; offline controllers are UNAVAILABLE, and an alert whose
building policy asks for it locks the building down."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from google.protobuf import duration_pb2
from google.type import dayofweek_pb2, timeofday_pb2

from gatehouse.access.v1 import access_pb2
from gatehouse.access.v1 import events_pb2 as access_events
from gatehouse.common.v1 import common_pb2
from gatehouse.monitoring.simulator import SimulatedDevice
from gatehouse.monitoring.v1 import monitoring_pb2
from gatehouse.runtime.config import Settings
from gatehouse.runtime.db import sqlite_url
from tests.integration.access.harness import AccessHarness, eventually, request_id, running_access
from tests.integration.monitoring.harness import (
    FAST as MONITORING_FAST,
)
from tests.integration.monitoring.harness import (
    MonitoringHarness,
    Shared,
    start_replica,
)
from tests.support.grpc_calls import error_info, rich_status
from tests.support.mesh import channel_to
from tests.support.tokens import TestIssuer

DOOR_CONTROLLER = monitoring_pb2.DEVICE_KIND_DOOR_CONTROLLER


@dataclass
class Site:
    access: AccessHarness
    monitoring: MonitoringHarness
    building: str
    door: str
    controller: monitoring_pb2.Device


@pytest.fixture
async def site(
    settings: Settings,
    certs_dir: Path,
    database_url: str,
    tmp_path: Path,
) -> AsyncIterator[Site]:
    shared = Shared()
    issuer = TestIssuer()
    async with AsyncExitStack() as stack:
        replica = await start_replica(
            settings,
            certs_dir,
            sqlite_url(tmp_path / "monitoring" / "monitoring.db"),
            issuer,
            shared,
            MONITORING_FAST,
            stack,
        )
        monitoring = MonitoringHarness(certs_dir, issuer, shared, [replica], stack)
        building = await monitoring.building(
            lockdown_policy=monitoring_pb2.LockdownPolicy(enabled=True)
        )
        door = f"{building.name}/doors/main-entrance"
        device, _ = await monitoring.register(building.name, DOOR_CONTROLLER, door=door)
        access = await stack.enter_async_context(
            running_access(
                settings,
                certs_dir,
                database_url,
                bus=shared.bus,
                monitoring_channel=lambda: channel_to(certs_dir, "access")(replica.port),
            )
        )
        yield Site(access, monitoring, building.name, door, device)


def open_request(door: str, **fields: object) -> access_pb2.OpenDoorRequest:
    fields.setdefault("reason", "courier at the loading bay")
    return access_pb2.OpenDoorRequest(door=door, request_id=request_id(), **fields)  # type: ignore[arg-type]


async def test_open_door_reaches_the_controller_and_logs_its_ack(site: Site) -> None:
    simulated: SimulatedDevice = await site.monitoring.device(site.controller)
    stub = await site.access.operator("access.open")
    request = open_request(site.door)
    request.unlock_duration.CopyFrom(duration_pb2.Duration(seconds=7))
    opened = await stub.OpenDoor(request)
    assert opened.device == site.controller.name
    assert opened.relock_time.ToDatetime() - opened.ack_time.ToDatetime() == timedelta(seconds=7)
    assert simulated.name == site.controller.name
    stub_all = await site.access.operator()
    logged = await stub_all.ListAccessLogs(access_pb2.ListAccessLogsRequest(parent=site.building))
    assert [e.name for e in logged.access_logs] == [opened.access_log_entry]
    assert logged.access_logs[0].kind == access_pb2.ACCESS_LOG_ENTRY_KIND_REMOTE_OPEN
    assert logged.access_logs[0].reason == "courier at the loading bay"
    published = await site.access.events("events.door", wait_for=1)
    payload = access_events.DoorOpened()
    assert published[0].data.Unpack(payload)
    assert (payload.device, payload.door) == (site.controller.name, site.door)
    # A retry with the same request id replays the first answer: no second opening.
    replay = await stub.OpenDoor(request)
    assert replay == opened
    assert (
        len(
            (
                await stub_all.ListAccessLogs(
                    access_pb2.ListAccessLogsRequest(parent=site.building)
                )
            ).access_logs
        )
        == 1
    )


async def test_an_offline_controller_is_unavailable_and_nothing_is_logged(site: Site) -> None:
    stub = await site.access.operator("access.open")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.OpenDoor(open_request(site.door))
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_info(rich_status(raised.value)).reason == "DEVICE_OFFLINE"
    stub_all = await site.access.operator()
    logged = await stub_all.ListAccessLogs(access_pb2.ListAccessLogsRequest(parent=site.building))
    assert list(logged.access_logs) == []


async def test_a_refused_command_is_door_command_failed(site: Site) -> None:
    await site.monitoring.device(
        site.controller, ack_result=monitoring_pb2.DEVICE_COMMAND_RESULT_FAILED
    )
    stub = await site.access.operator("access.open")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.OpenDoor(open_request(site.door))
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(rich_status(raised.value)).reason == "DOOR_COMMAND_FAILED"


async def test_lockdown_needs_override_and_override_needs_the_emergency_permission(
    site: Site,
) -> None:
    await site.monitoring.device(site.controller)
    admin = await site.access.operator()
    await admin.TriggerEmergency(
        access_pb2.TriggerEmergencyRequest(
            name=f"{site.building}/emergency",
            mode=access_pb2.EMERGENCY_MODE_LOCKDOWN,
            reason="threat",
            request_id=request_id(),
        )
    )
    opener = await site.access.operator("access.open")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await opener.OpenDoor(open_request(site.door))
    assert error_info(rich_status(raised.value)).reason == "EMERGENCY_ACTIVE"
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await opener.OpenDoor(open_request(site.door, override_lockdown=True))
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_info(rich_status(raised.value)).metadata["permission"] == "access.emergency"
    opened = await admin.OpenDoor(open_request(site.door, override_lockdown=True))
    assert opened.device == site.controller.name
    published = await site.access.events("events.door", wait_for=1)
    payload = access_events.DoorOpened()
    assert published[0].data.Unpack(payload)
    assert payload.lockdown_overridden


async def test_an_alert_with_lockdown_requested_locks_the_building_down(site: Site) -> None:
    stub = await site.monitoring.stub()
    await stub.RaiseAlert(
        monitoring_pb2.RaiseAlertRequest(
            parent=site.building,
            severity=common_pb2.SEVERITY_CRITICAL,
            summary="armed intruder",
            request_id=request_id(),
        )
    )
    admin = await site.access.operator()

    async def locked_down() -> list[access_pb2.AccessLogEntry] | None:
        logged = await admin.ListAccessLogs(access_pb2.ListAccessLogsRequest(parent=site.building))
        return list(logged.access_logs) or None

    entries = await eventually(locked_down)
    assert entries[0].kind == access_pb2.ACCESS_LOG_ENTRY_KIND_EMERGENCY_TRIGGERED
    assert entries[0].emergency_mode == access_pb2.EMERGENCY_MODE_LOCKDOWN
    assert entries[0].actor.service == "spiffe://gatehouse/access"
    published = await site.access.events("events.emergency", wait_for=1)
    payload = access_events.EmergencyTriggered()
    assert published[0].data.Unpack(payload)
    assert payload.source_alert.startswith(f"{site.building}/alerts/")


async def test_the_emergency_reaches_controllers_online_now_and_later(site: Site) -> None:
    admin = await site.access.operator()
    triggered = await admin.TriggerEmergency(
        access_pb2.TriggerEmergencyRequest(
            name=f"{site.building}/emergency",
            mode=access_pb2.EMERGENCY_MODE_LOCKDOWN,
            reason="threat",
            request_id=request_id(),
        )
    )
    # The controller is offline: the door is reported, and it gets the command on connecting.
    assert list(triggered.unacknowledged_doors) == [site.door]
    simulated = await site.monitoring.device(site.controller)
    command = await simulated.next_command(timeout=15)
    assert command.kind == monitoring_pb2.DEVICE_COMMAND_KIND_LOCK_DOWN
    await admin.ClearEmergency(
        access_pb2.ClearEmergencyRequest(
            name=f"{site.building}/emergency", reason="all clear", request_id=request_id()
        )
    )
    released = await simulated.next_command(timeout=15)
    assert released.kind == monitoring_pb2.DEVICE_COMMAND_KIND_RELEASE_LOCKDOWN


async def test_business_hours_hold_the_door_unlocked_inside_the_windows(site: Site) -> None:
    simulated = await site.monitoring.device(site.controller)
    admin = await site.access.operator()
    await admin.SetDoorSchedule(
        access_pb2.SetDoorScheduleRequest(
            schedule=access_pb2.DoorSchedule(
                name=f"{site.door}/schedule",
                mode=access_pb2.DOOR_SCHEDULE_MODE_UNLOCKED_DURING_WINDOWS,
                weekly_schedule=access_pb2.WeeklySchedule(
                    windows=[
                        access_pb2.WeeklyWindow(
                            day=dayofweek_pb2.MONDAY,
                            start_time=timeofday_pb2.TimeOfDay(hours=8),
                            end_time=timeofday_pb2.TimeOfDay(hours=18),
                        )
                    ]
                ),
            ),
            request_id=request_id(),
        )
    )
    site.access.clock.set(datetime(2026, 11, 30, 9, 0, tzinfo=UTC))  # Monday 10:00 Madrid
    report = await site.access.app.check_door_hours()
    assert (report.held, report.relocked, report.failed) == (1, 0, 0)
    assert (await simulated.next_command()).kind == monitoring_pb2.DEVICE_COMMAND_KIND_HOLD_UNLOCKED
    again = await site.access.app.check_door_hours()
    assert (again.held, again.relocked) == (0, 0)
    site.access.clock.set(datetime(2026, 11, 30, 17, 0, tzinfo=UTC))  # 18:00 Madrid
    evening = await site.access.app.check_door_hours()
    assert (evening.held, evening.relocked) == (0, 1)
    assert (await simulated.next_command()).kind == monitoring_pb2.DEVICE_COMMAND_KIND_RELOCK


async def test_a_twin_of_a_running_open_is_request_in_progress(site: Site) -> None:
    simulated = await site.monitoring.device(site.controller, auto_ack=False)
    stub = await site.access.operator("access.open")
    request = open_request(site.door)
    first = asyncio.ensure_future(stub.OpenDoor(request))
    command = await simulated.next_command()
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.OpenDoor(request)
    assert raised.value.code() == grpc.StatusCode.ABORTED
    assert error_info(rich_status(raised.value)).reason == "REQUEST_IN_PROGRESS"
    await simulated.ack(command.command_id, monitoring_pb2.DEVICE_COMMAND_RESULT_SUCCEEDED)
    opened = await first
    assert await stub.OpenDoor(request) == opened
