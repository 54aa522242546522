"""SendDeviceCommand: delivered to the live session (any replica), acknowledged once,
refused at once for offline devices, expired on the device's behalf."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import grpc
import pytest

from gatehouse.monitoring.simulator import now_stamp
from gatehouse.monitoring.v1 import events_pb2, monitoring_pb2
from gatehouse.runtime.config import Settings
from gatehouse.runtime.db import sqlite_url
from tests.integration.monitoring.feed_helpers import watch
from tests.integration.monitoring.harness import (
    MonitoringHarness,
    request_id,
    running_monitoring,
)
from tests.support.grpc_calls import error_info, rich_status

DOOR_CONTROLLER = monitoring_pb2.DEVICE_KIND_DOOR_CONTROLLER
OPEN_DOOR = monitoring_pb2.DEVICE_COMMAND_KIND_OPEN_DOOR


def acknowledged(item: monitoring_pb2.FeedItem) -> events_pb2.DeviceCommandAcknowledged:
    payload = events_pb2.DeviceCommandAcknowledged()
    assert item.data.Unpack(payload)
    return payload


async def _controller(
    m: MonitoringHarness,
) -> tuple[monitoring_pb2.Building, monitoring_pb2.Device]:
    building = await m.building()
    device, _ = await m.register(
        building.name, DOOR_CONTROLLER, door=f"{building.name}/doors/main-entrance"
    )
    return building, device


async def test_command_reaches_the_device_and_its_ack_is_published(
    monitoring: MonitoringHarness,
) -> None:
    building, device = await _controller(monitoring)
    feed = await watch(monitoring, building.name)
    sim = await monitoring.device(device, auto_ack=False)
    stub = await monitoring.stub()
    unlock = timedelta(seconds=7)
    request = monitoring_pb2.SendDeviceCommandRequest(
        name=device.name,
        kind=OPEN_DOOR,
        open_door=monitoring_pb2.OpenDoorParameters(),
        request_id=request_id(),
    )
    request.open_door.unlock_duration.FromTimedelta(unlock)
    sent = await stub.SendDeviceCommand(
        request, metadata=(*monitoring.admin_metadata(), ("x-correlation-id", "corr-42"))
    )
    command = await sim.next_command()
    assert command.command_id == sent.command_id
    assert command.kind == OPEN_DOOR
    assert command.open_door.unlock_duration.ToTimedelta() == unlock
    assert command.deadline == sent.deadline
    assert command.requested_by.user == "users/u1"
    await sim.ack(command.command_id, monitoring_pb2.DEVICE_COMMAND_RESULT_SUCCEEDED, "opened")
    # A repeated acknowledgement (another message id) publishes nothing more.
    await sim.ack(command.command_id, monitoring_pb2.DEVICE_COMMAND_RESULT_FAILED)
    (item,) = await feed.wait_type("device.command_acknowledged")
    ack = acknowledged(item)
    assert (ack.command_id, ack.result, ack.message) == (
        sent.command_id,
        monitoring_pb2.DEVICE_COMMAND_RESULT_SUCCEEDED,
        "opened",
    )
    assert ack.door == f"{building.name}/doors/main-entrance"
    assert ack.requested_by.user == "users/u1"
    # Retrying the call returns the first command and sends nothing again.
    again = await stub.SendDeviceCommand(request)
    assert again.command_id == sent.command_id
    await asyncio.sleep(0.2)
    assert sim.commands.empty()
    await sim.close()
    await feed.wait_type("device.status_changed", 2)
    assert feed.types().count("device.command_acknowledged") == 1


async def test_command_to_an_offline_device_fails_at_once(monitoring: MonitoringHarness) -> None:
    _, device = await _controller(monitoring)
    stub = await monitoring.stub()
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.SendDeviceCommand(
            monitoring_pb2.SendDeviceCommandRequest(name=device.name, kind=OPEN_DOOR),
            timeout=5,
        )
    assert loop.time() - started < 1.0
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_info(rich_status(raised.value)).reason == "DEVICE_OFFLINE"


async def test_command_the_device_does_not_support(monitoring: MonitoringHarness) -> None:
    building = await monitoring.building()
    camera, _ = await monitoring.register(building.name)
    controller, _ = await monitoring.register(
        building.name, DOOR_CONTROLLER, door=f"{building.name}/doors/side"
    )
    await monitoring.device(camera)
    # This controller's hello says it can only reboot.
    await monitoring.device(
        controller, supported_commands=[monitoring_pb2.DEVICE_COMMAND_KIND_REBOOT]
    )
    stub = await monitoring.stub()
    for name in (camera.name, controller.name):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.SendDeviceCommand(
                monitoring_pb2.SendDeviceCommandRequest(name=name, kind=OPEN_DOOR)
            )
        assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error_info(rich_status(raised.value)).reason == "COMMAND_NOT_SUPPORTED"


async def test_command_validation(monitoring: MonitoringHarness) -> None:
    _, device = await _controller(monitoring)
    stub = await monitoring.stub()
    past = monitoring_pb2.SendDeviceCommandRequest(
        name=device.name, kind=OPEN_DOOR, deadline=now_stamp(-timedelta(seconds=1))
    )
    cases = [
        (past, "DEADLINE_IN_PAST"),
        (monitoring_pb2.SendDeviceCommandRequest(name=device.name), "INVALID_FIELD"),
        (
            monitoring_pb2.SendDeviceCommandRequest(
                name=device.name, kind=OPEN_DOOR, deadline=now_stamp(timedelta(minutes=11))
            ),
            "INVALID_FIELD",
        ),
    ]
    for request, expected in cases:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.SendDeviceCommand(request)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_info(rich_status(raised.value)).reason == expected
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.SendDeviceCommand(
            monitoring_pb2.SendDeviceCommandRequest(
                name=f"{device.name.rsplit('/', 1)[0]}/nope", kind=OPEN_DOOR
            )
        )
    assert error_info(rich_status(raised.value)).reason == "DEVICE_NOT_FOUND"


async def test_unacknowledged_command_expires_on_the_devices_behalf(
    monitoring: MonitoringHarness,
) -> None:
    building, device = await _controller(monitoring)
    feed = await watch(monitoring, building.name)
    sim = await monitoring.device(device, auto_ack=False)
    stub = await monitoring.stub()
    sent = await stub.SendDeviceCommand(
        monitoring_pb2.SendDeviceCommandRequest(
            name=device.name,
            kind=monitoring_pb2.DEVICE_COMMAND_KIND_LOCK_DOWN,
            deadline=now_stamp(timedelta(milliseconds=300)),
        )
    )
    command = await sim.next_command()
    (item,) = await feed.wait_type("device.command_acknowledged")
    ack = acknowledged(item)
    assert (ack.command_id, ack.result) == (
        sent.command_id,
        monitoring_pb2.DEVICE_COMMAND_RESULT_EXPIRED,
    )
    assert ack.complete_time == command.deadline
    # The device answering late changes nothing: one event per command.
    await sim.ack(command.command_id, monitoring_pb2.DEVICE_COMMAND_RESULT_SUCCEEDED)
    await sim.heartbeat()
    await asyncio.sleep(0.3)
    assert feed.types().count("device.command_acknowledged") == 1


async def test_command_reaches_a_session_on_another_replica(
    settings: Settings, certs_dir: Path, tmp_path: Path
) -> None:
    async with running_monitoring(
        settings, certs_dir, sqlite_url(tmp_path / "m.db"), replicas=2
    ) as m:
        building, device = await _controller(m)
        feed = await watch(m, building.name)
        sim = await m.device(device, replica=1)
        stub = await m.stub(replica=0)
        sent = await stub.SendDeviceCommand(
            monitoring_pb2.SendDeviceCommandRequest(name=device.name, kind=OPEN_DOOR)
        )
        assert (await sim.next_command()).command_id == sent.command_id
        (item,) = await feed.wait_type("device.command_acknowledged")
        assert acknowledged(item).command_id == sent.command_id
        # Once the session is gone everywhere, replica 0 says so at once.
        await sim.close()
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.SendDeviceCommand(
                monitoring_pb2.SendDeviceCommandRequest(name=device.name, kind=OPEN_DOOR)
            )
        assert error_info(rich_status(raised.value)).reason == "DEVICE_OFFLINE"


async def test_access_service_may_command_devices(monitoring: MonitoringHarness) -> None:
    from gatehouse.monitoring.v1 import monitoring_pb2_grpc  # noqa: PLC0415

    _, device = await _controller(monitoring)
    sim = await monitoring.device(device)
    channel = await monitoring.channel("access")
    sent = await monitoring_pb2_grpc.MonitoringServiceStub(channel).SendDeviceCommand(
        monitoring_pb2.SendDeviceCommandRequest(name=device.name, kind=OPEN_DOOR)
    )
    command = await sim.next_command()
    assert command.command_id == sent.command_id
    assert command.requested_by.service == "spiffe://gatehouse/access"
