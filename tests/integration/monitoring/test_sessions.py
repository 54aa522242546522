"""Device sessions with simulated devices (real gRPC clients over mTLS): connect, replace,
close, offline detection, protocol errors, pacing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2

from gatehouse.monitoring.v1 import events_pb2, monitoring_pb2, monitoring_pb2_grpc
from gatehouse.runtime.config import Settings
from tests.integration.monitoring.feed_helpers import watch
from tests.integration.monitoring.harness import (
    MonitoringHarness,
    fast_settings,
    running_monitoring,
)
from tests.support.grpc_calls import detail, error_info, rich_status

ONLINE = monitoring_pb2.DEVICE_STATE_ONLINE
OFFLINE = monitoring_pb2.DEVICE_STATE_OFFLINE


def status_of(item: monitoring_pb2.FeedItem) -> events_pb2.DeviceStatusChanged:
    payload = events_pb2.DeviceStatusChanged()
    assert item.data.Unpack(payload)
    return payload


async def drain(call: Any) -> None:
    async for _ in call:
        pass


def reason(error: grpc.aio.AioRpcError | Exception | None) -> tuple[grpc.StatusCode, str]:
    assert isinstance(error, grpc.aio.AioRpcError), error
    return error.code(), error_info(rich_status(error)).reason


async def test_connect_marks_online_and_welcomes(sqlite_monitoring: MonitoringHarness) -> None:
    m = sqlite_monitoring
    building = await m.building()
    device, _ = await m.register(building.name, display_name="Lobby cam", labels={"zone": "lobby"})
    feed = await watch(m, building.name)
    sim = await m.device(device)
    assert sim.welcome is not None
    assert sim.welcome.heartbeat_interval.ToTimedelta() == timedelta(milliseconds=200)
    assert sim.welcome.offline_after.ToTimedelta() == timedelta(milliseconds=1600)
    assert sim.welcome.max_readings_per_batch == 1000
    assert sim.welcome.session_id
    (item,) = await feed.wait_type("device.status_changed")
    change = status_of(item)
    assert (change.state, change.previous_state) == (ONLINE, monitoring_pb2.DEVICE_STATE_UNKNOWN)
    assert change.reason == events_pb2.DEVICE_STATUS_CHANGE_REASON_CONNECTED
    stored = await m.get_device(device.name)
    assert stored.state == ONLINE
    assert stored.firmware_version == "sim-1.0"
    assert stored.HasField("last_heartbeat_time")


async def test_close_marks_offline_as_disconnected(sqlite_monitoring: MonitoringHarness) -> None:
    m = sqlite_monitoring
    building = await m.building()
    device, _ = await m.register(building.name, monitoring_pb2.DEVICE_KIND_SENSOR)
    feed = await watch(m, building.name)
    sim = await m.device(device)
    await sim.close()
    assert await sim.wait_ended() is None
    items = await feed.wait_type("device.status_changed", 2)
    change = status_of(items[1])
    assert change.state == OFFLINE
    assert change.reason == events_pb2.DEVICE_STATUS_CHANGE_REASON_DISCONNECTED
    assert "camera.offline" not in feed.types()  # a sensor, not a camera
    assert (await m.get_device(device.name)).state == OFFLINE


async def test_second_connection_replaces_the_first(sqlite_monitoring: MonitoringHarness) -> None:
    m = sqlite_monitoring
    building = await m.building()
    door = f"{building.name}/doors/main"
    device, _ = await m.register(
        building.name, monitoring_pb2.DEVICE_KIND_DOOR_CONTROLLER, door=door
    )
    feed = await watch(m, building.name)
    first = await m.device(device, auto_ack=False)
    second = await m.device(device, auto_ack=False)
    assert reason(await first.wait_ended()) == (grpc.StatusCode.ABORTED, "DEVICE_SESSION_REPLACED")
    assert first.welcome is not None
    assert second.welcome is not None
    assert first.welcome.session_id != second.welcome.session_id
    # Still ONLINE, and no OFFLINE blip for the replaced session.
    stub = await m.stub()
    sent = await stub.SendDeviceCommand(
        monitoring_pb2.SendDeviceCommandRequest(
            name=device.name, kind=monitoring_pb2.DEVICE_COMMAND_KIND_LOCK_DOWN
        )
    )
    assert (await second.next_command()).command_id == sent.command_id
    assert first.commands.empty()
    assert (await m.get_device(device.name)).state == ONLINE
    await feed.wait_type("device.status_changed")
    await asyncio.sleep(0.3)  # room for a wrong OFFLINE to show up
    assert [status_of(i).state for i in feed.items if i.type == "device.status_changed"] == [ONLINE]


async def test_replacement_across_replicas(
    settings: Settings, certs_dir: Path, tmp_path: Path
) -> None:
    from gatehouse.runtime.db import sqlite_url  # noqa: PLC0415

    url = sqlite_url(tmp_path / "m.db")
    async with running_monitoring(settings, certs_dir, url, replicas=2) as m:
        building = await m.building()
        device, _ = await m.register(building.name)
        first = await m.device(device, replica=0)
        second = await m.device(device, replica=1)
        error = await first.wait_ended()
        assert reason(error) == (grpc.StatusCode.ABORTED, "DEVICE_SESSION_REPLACED")
        assert second.ended is not None
        assert not second.ended.done()
        assert (await m.get_device(device.name)).state == ONLINE


async def test_vanished_device_is_detected_offline(sqlite_monitoring: MonitoringHarness) -> None:
    m = sqlite_monitoring
    building = await m.building()
    device, _ = await m.register(building.name, display_name="Gate cam", labels={"zone": "gate"})
    feed = await watch(m, building.name)
    sim = await m.device(device)
    sim.vanish()  # silent, but its connection stays open
    assert reason(await sim.wait_ended()) == (grpc.StatusCode.UNAVAILABLE, "HEARTBEAT_TIMEOUT")
    assert sim.pings, "the mesh probes a silent device before giving up on it"
    (offline,) = await feed.wait_type("camera.offline")
    camera = events_pb2.CameraOffline()
    assert offline.data.Unpack(camera)
    assert (camera.zone, camera.display_name) == ("gate", "Gate cam")
    assert camera.reason == events_pb2.DEVICE_STATUS_CHANGE_REASON_HEARTBEATS_MISSED
    assert offline.severity == monitoring_pb2.FeedItem().severity.__class__(3)  # MEDIUM
    changes = [status_of(i) for i in await feed.wait_type("device.status_changed", 2)]
    assert changes[-1].reason == events_pb2.DEVICE_STATUS_CHANGE_REASON_HEARTBEATS_MISSED
    assert (await m.get_device(device.name)).state == OFFLINE


async def test_heartbeating_device_stays_online(sqlite_monitoring: MonitoringHarness) -> None:
    m = sqlite_monitoring
    building = await m.building()
    device, _ = await m.register(building.name)
    sim = await m.device(device, heartbeat_every=timedelta(milliseconds=100), answer_pings=False)
    # Several offline thresholds (0.6 s each) pass while it heartbeats.
    await asyncio.sleep(2.0)
    assert sim.ended is not None
    assert not sim.ended.done()
    assert (await m.get_device(device.name)).state == ONLINE
    await sim.close()


async def test_device_orphaned_by_a_dead_replica_goes_offline(
    settings: Settings, certs_dir: Path, tmp_path: Path
) -> None:
    from gatehouse.runtime.db import sqlite_url  # noqa: PLC0415

    url = sqlite_url(tmp_path / "m.db")
    async with running_monitoring(settings, certs_dir, url, replicas=2) as m:
        building = await m.building()
        device, _ = await m.register(building.name)
        sim = await m.device(device, replica=1, heartbeat_every=timedelta(milliseconds=100))
        await m.wait_state(device.name, ONLINE)
        # Replica 1 goes away with the session: it never marks the device offline itself.
        await m.replicas[1].server.stop(0)
        await sim.wait_ended()
        await m.wait_state(device.name, OFFLINE)


async def test_first_message_must_be_hello(sqlite_monitoring: MonitoringHarness) -> None:
    m = sqlite_monitoring
    building = await m.building()
    device, _ = await m.register(building.name)
    channel = await m.device_channel(device.name)
    stub = monitoring_pb2.ConnectDeviceRequest
    call = monitoring_pb2_grpc.MonitoringServiceStub(channel).ConnectDevice()
    await call.write(
        stub(name=device.name, message_id="m1", heartbeat=monitoring_pb2.DeviceHeartbeat())
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call.read()
    assert reason(raised.value) == (grpc.StatusCode.FAILED_PRECONDITION, "HELLO_REQUIRED")


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (
            monitoring_pb2.ConnectDeviceRequest(heartbeat=monitoring_pb2.DeviceHeartbeat()),
            "message_id",
        ),
        (monitoring_pb2.ConnectDeviceRequest(message_id="m"), "message"),
        (
            monitoring_pb2.ConnectDeviceRequest(
                message_id="m",
                event=monitoring_pb2.DeviceEvent(kind=monitoring_pb2.DEVICE_EVENT_KIND_MOTION),
            ),
            "event.observe_time",
        ),
    ],
    ids=["no-message-id", "no-content", "event-without-time"],
)
async def test_garbage_after_hello_ends_the_session(
    sqlite_monitoring: MonitoringHarness,
    request_: monitoring_pb2.ConnectDeviceRequest,
    field: str,
) -> None:
    m = sqlite_monitoring
    building = await m.building()
    device, _ = await m.register(building.name)
    sim = await m.device(device)
    await sim._call.write(request_)
    error = await sim.wait_ended()
    assert reason(error) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD")
    assert field in (error.details() or "") if isinstance(error, grpc.aio.AioRpcError) else False
    await m.wait_state(device.name, OFFLINE)


async def test_oversized_readings_batch_on_a_session(sqlite_monitoring: MonitoringHarness) -> None:
    from gatehouse.monitoring.simulator import random_readings  # noqa: PLC0415

    m = sqlite_monitoring
    building = await m.building()
    device, _ = await m.register(building.name, monitoring_pb2.DEVICE_KIND_SENSOR)
    sim = await m.device(device)
    await sim.readings(random_readings(10))
    await sim.readings(random_readings(1001))
    error = await sim.wait_ended()
    assert reason(error) == (grpc.StatusCode.INVALID_ARGUMENT, "READINGS_BATCH_TOO_LARGE")


async def test_name_change_mid_session_is_refused(sqlite_monitoring: MonitoringHarness) -> None:
    m = sqlite_monitoring
    building = await m.building()
    device, _ = await m.register(building.name)
    other, _ = await m.register(building.name)
    sim = await m.device(device)
    await sim.send(
        monitoring_pb2.ConnectDeviceRequest(
            name=other.name, heartbeat=monitoring_pb2.DeviceHeartbeat()
        )
    )
    error = await sim.wait_ended()
    assert reason(error) == (grpc.StatusCode.PERMISSION_DENIED, "DEVICE_IDENTITY_MISMATCH")


async def test_flooding_device_is_slowed_then_cut_off(
    settings: Settings, certs_dir: Path, tmp_path: Path
) -> None:
    from gatehouse.runtime.db import sqlite_url  # noqa: PLC0415

    slow = fast_settings(
        max_messages_per_second=20.0,
        message_burst=5,
        rate_exceeded_after=timedelta(milliseconds=800),
        missed_heartbeats=50,
    )
    async with running_monitoring(
        settings, certs_dir, sqlite_url(tmp_path / "m.db"), monitoring_settings=slow
    ) as m:
        building = await m.building()
        device, _ = await m.register(building.name, monitoring_pb2.DEVICE_KIND_SENSOR)
        channel = await m.device_channel(device.name)
        produced = 0

        never = asyncio.Event()

        async def flood() -> AsyncIterator[monitoring_pb2.ConnectDeviceRequest]:
            # 500 small messages fit the stream's flow-control window: the device gets them
            # all out at once, then stays connected without writing (a write cut short by
            # the server's final status would be reported as a client-side INTERNAL error).
            nonlocal produced
            yield monitoring_pb2.ConnectDeviceRequest(
                name=device.name, message_id="hello", hello=monitoring_pb2.DeviceHello()
            )
            for _ in range(500):
                produced += 1
                yield monitoring_pb2.ConnectDeviceRequest(
                    message_id=f"m{produced}", heartbeat=monitoring_pb2.DeviceHeartbeat()
                )
            await never.wait()

        loop = asyncio.get_running_loop()
        started = loop.time()
        call = monitoring_pb2_grpc.MonitoringServiceStub(channel).ConnectDevice(flood())
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await asyncio.wait_for(drain(call), 15)
        elapsed = loop.time() - started
        error = raised.value
        assert reason(error) == (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "DEVICE_MESSAGE_RATE_EXCEEDED",
        )
        assert detail(rich_status(error), error_details_pb2.RetryInfo).retry_delay.seconds >= 1
        # Paced at the rate (plus the burst) until cut off: 500 messages at 20/s would take
        # 25 s; the server read for about `rate_exceeded_after`, then refused the rest.
        assert 0.8 <= elapsed < 10
