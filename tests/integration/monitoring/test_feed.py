"""The live feed: several watchers, filters, resume without gap or duplicate, other
services' events, the status snapshot, and the limits."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from gatehouse.access.v1 import access_pb2
from gatehouse.access.v1 import events_pb2 as access_events
from gatehouse.common.v1 import common_pb2
from gatehouse.monitoring.handlers.feed import feed_stream
from gatehouse.monitoring.v1 import monitoring_pb2
from gatehouse.notifications.v1 import events_pb2 as notification_events
from gatehouse.runtime.config import Settings
from gatehouse.runtime.db import sqlite_url
from gatehouse.runtime.events import new_event, stream_for
from tests.integration.monitoring.feed_helpers import watch
from tests.integration.monitoring.harness import (
    MonitoringHarness,
    eventually,
    fast_settings,
    running_monitoring,
)
from tests.support.grpc_calls import error_info, rich_status

HIGH = common_pb2.SEVERITY_HIGH


async def _raise(
    m: MonitoringHarness,
    building: str,
    summary: str,
    severity: common_pb2.Severity.ValueType = HIGH,
) -> str:
    stub = await m.stub()
    response = await stub.RaiseAlert(
        monitoring_pb2.RaiseAlertRequest(parent=building, severity=severity, summary=summary)
    )
    return str(response.alert.name)


async def test_several_watchers_see_the_same_feed_in_order(monitoring: MonitoringHarness) -> None:
    building = await monitoring.building()
    other = await monitoring.building(display_name="Elsewhere")
    watchers = [await watch(monitoring, building.name) for _ in range(3)]
    elsewhere = await watch(monitoring, other.name)
    for index in range(5):
        await _raise(monitoring, building.name, f"alert {index}")
    await _raise(monitoring, other.name, "not yours")
    for watcher in watchers:
        await watcher.wait_type("alert.triggered", 5)
    orders = [[item.id for item in watcher.items] for watcher in watchers]
    assert orders[0] == orders[1] == orders[2]
    assert [item.summary for item in watchers[0].items] == [
        f"Alert: alert {index}" for index in range(5)
    ]
    assert all(item.severity == HIGH and item.source == "monitoring" for item in watchers[0].items)
    (item,) = await elsewhere.wait_type("alert.triggered")
    assert item.summary == "Alert: not yours"


async def test_resume_after_an_event_id_has_no_gap_and_no_duplicate(
    monitoring: MonitoringHarness,
) -> None:
    building = await monitoring.building()
    first = await watch(monitoring, building.name)
    for index in range(4):
        await _raise(monitoring, building.name, f"before {index}")
    items = await first.wait_type("alert.triggered", 4)
    first.close()
    # The client saw up to the second item, then lost its connection.
    resumed = await watch(monitoring, building.name, resume_after=items[1].id)
    await _raise(monitoring, building.name, "after")
    got = await resumed.wait_type("alert.triggered", 3)
    assert [item.summary for item in got] == [
        "Alert: before 2",
        "Alert: before 3",
        "Alert: after",
    ]
    await asyncio.sleep(0.2)
    assert len(resumed.items) == 3


async def test_resume_from_elsewhere_is_refused(monitoring: MonitoringHarness) -> None:
    building = await monitoring.building()
    other = await monitoring.building(display_name="Elsewhere")
    feed = await watch(monitoring, other.name)
    await _raise(monitoring, other.name, "there")
    (foreign,) = await feed.wait_type("alert.triggered")
    stub = await monitoring.stub()
    for resume_after in (foreign.id, "01ARZ3NDEKTSV4RRFFQ69G5FAV", "not an id"):
        call = stub.StreamEvents(
            monitoring_pb2.StreamEventsRequest(building=building.name, resume_after=resume_after)
        )
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            async for _ in call:
                pass
        assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error_info(rich_status(raised.value)).reason == "RESUME_POINT_UNAVAILABLE"


async def test_filters_by_type_and_severity(monitoring: MonitoringHarness) -> None:
    building = await monitoring.building()
    device, _ = await monitoring.register(building.name, monitoring_pb2.DEVICE_KIND_SENSOR)
    by_prefix = await watch(monitoring, building.name, event_types=["alert.*"])
    exact = await watch(monitoring, building.name, event_types=["device.status_changed"])
    severe = await watch(monitoring, building.name, min_severity=HIGH)
    sim = await monitoring.device(device)
    alert = await _raise(monitoring, building.name, "low one", severity=common_pb2.SEVERITY_LOW)
    await _raise(monitoring, building.name, "high one", severity=common_pb2.SEVERITY_CRITICAL)
    stub = await monitoring.stub()
    await stub.AcknowledgeAlert(monitoring_pb2.AcknowledgeAlertRequest(name=alert))
    await sim.close()
    await by_prefix.wait_type("alert.acknowledged")
    assert by_prefix.types() == ["alert.triggered", "alert.triggered", "alert.acknowledged"]
    await exact.wait_type("device.status_changed", 2)
    assert set(exact.types()) == {"device.status_changed"}
    (high,) = await severe.wait_type("alert.triggered")
    assert high.summary == "Alert: high one"
    await asyncio.sleep(0.2)
    assert severe.types() == ["alert.triggered"]


async def test_malformed_requests(monitoring: MonitoringHarness) -> None:
    building = await monitoring.building()
    stub = await monitoring.stub()
    cases = [
        (
            monitoring_pb2.StreamEventsRequest(building=building.name, event_types=["alert"]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_EVENT_TYPE",
        ),
        (
            monitoring_pb2.StreamEventsRequest(building=building.name, event_types=["*"]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_EVENT_TYPE",
        ),
        (
            monitoring_pb2.StreamEventsRequest(building="buildings/nope"),
            grpc.StatusCode.NOT_FOUND,
            "BUILDING_NOT_FOUND",
        ),
    ]
    for request, code, expected in cases:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            async for _ in stub.StreamEvents(request):
                pass
        assert (raised.value.code(), error_info(rich_status(raised.value)).reason) == (
            code,
            expected,
        )


async def test_other_services_events_reach_the_feed(monitoring: MonitoringHarness) -> None:
    building = await monitoring.building()
    feed = await watch(monitoring, building.name)
    door = f"{building.name}/doors/main"
    bus = monitoring.shared.bus
    denied = new_event(
        "access.denied",
        source="access",
        subject=door,
        data=access_events.AccessDenied(door=door, building=building.name),
    )
    emergency = new_event(
        "emergency.triggered",
        source="access",
        subject=f"{building.name}/emergency",
        data=access_events.EmergencyTriggered(
            building=building.name,
            mode=access_pb2.EMERGENCY_MODE_LOCKDOWN,
            reason="intruder",
        ),
    )
    failed = new_event(
        "notification.failed",
        source="notifications",
        subject="notifications/n1",
        data=notification_events.NotificationFailed(
            notification="notifications/n1",
            failure_code="SMTP_REJECTED",
            related_resource=f"{building.name}/alerts/a1",
        ),
    )
    for event in (denied, emergency, failed):
        await bus.publish(stream_for(event.type), event)
    # Three families, three source streams: the feed interleaves them as it gets them.
    items = await feed.wait_for(lambda items: len(items) >= 3)
    by_type = {item.type: item for item in items}
    assert {(i.id, i.type, i.source, i.severity) for i in items} == {
        (denied.id, "access.denied", "access", 2),
        (emergency.id, "emergency.triggered", "access", 5),
        (failed.id, "notification.failed", "notifications", 2),
    }
    assert by_type["emergency.triggered"].summary == "Emergency: intruder"
    assert by_type["access.denied"].subject == door
    stub = await monitoring.stub()
    status = (
        await stub.GetBuildingStatus(
            monitoring_pb2.GetBuildingStatusRequest(name=f"{building.name}/status")
        )
    ).status
    assert status.emergency.active
    assert status.emergency.kind == "EMERGENCY_MODE_LOCKDOWN"
    assert status.emergency.trigger_event_id == emergency.id


async def test_status_snapshot_then_resume_from_it(monitoring: MonitoringHarness) -> None:
    building = await monitoring.building()
    camera, _ = await monitoring.register(building.name)
    await monitoring.register(building.name)  # never connects: UNKNOWN
    sensor, _ = await monitoring.register(building.name, monitoring_pb2.DEVICE_KIND_SENSOR)
    feed = await watch(monitoring, building.name)
    await monitoring.device(camera)
    sensor_sim = await monitoring.device(sensor)
    await sensor_sim.close()
    alert = await _raise(monitoring, building.name, "one", severity=HIGH)
    await _raise(monitoring, building.name, "two", severity=HIGH)
    stub = await monitoring.stub()
    await stub.AcknowledgeAlert(monitoring_pb2.AcknowledgeAlertRequest(name=alert))
    # Everything so far is in the feed: 3 status changes, 2 alerts, 1 acknowledgement. (The
    # projection reads each family's stream on its own, so they may come in any order.)
    await feed.wait_for(lambda items: len(items) == 6)

    async def settled() -> monitoring_pb2.BuildingStatus | None:
        status = (
            await stub.GetBuildingStatus(
                monitoring_pb2.GetBuildingStatusRequest(name=f"{building.name}/status")
            )
        ).status
        return status if status.last_event_id == feed.items[-1].id else None

    status = await eventually(settled)
    assert status.name == f"{building.name}/status"
    counts = status.devices
    assert (counts.online_count, counts.offline_count, counts.unknown_count) == (1, 1, 1)
    by_kind = {entry.kind: entry.counts for entry in status.devices_by_kind}
    assert by_kind[monitoring_pb2.DEVICE_KIND_CAMERA].unknown_count == 1
    assert [(a.severity, a.open_count, a.acknowledged_count) for a in status.unresolved_alerts] == [
        (HIGH, 1, 1)
    ]
    assert not status.emergency.active
    resumed = await watch(monitoring, building.name, resume_after=status.last_event_id)
    await _raise(monitoring, building.name, "after the snapshot")
    (item,) = await resumed.wait_type("alert.triggered")
    assert item.summary == "Alert: after the snapshot"
    assert len(resumed.items) == 1


async def test_idle_feed_sends_heartbeats(monitoring: MonitoringHarness) -> None:
    building = await monitoring.building()
    feed = await watch(monitoring, building.name)
    await _raise(monitoring, building.name, "one")
    (item,) = await feed.wait_type("alert.triggered")

    async def beat() -> bool:
        return bool(feed.heartbeats)

    await eventually(beat, timeout=5)
    assert feed.heartbeats[-1].last_event_id == item.id


async def test_limits_streams_per_caller_and_slow_readers(
    settings: Settings, certs_dir: Path, tmp_path: Path
) -> None:
    tight = fast_settings(max_streams_per_caller=2, feed_buffer_size=10)
    async with running_monitoring(
        settings, certs_dir, sqlite_url(tmp_path / "m.db"), monitoring_settings=tight
    ) as m:
        building = await m.building()
        await watch(m, building.name)
        stalled = await m.stub()
        call = stalled.StreamEvents(monitoring_pb2.StreamEventsRequest(building=building.name))
        await call.initial_metadata()
        third = (await m.stub()).StreamEvents(
            monitoring_pb2.StreamEventsRequest(building=building.name)
        )
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            async for _ in third:
                pass
        assert error_info(rich_status(raised.value)).reason == "TOO_MANY_STREAMS"
        # `call` never reads: flood the feed until its bounded buffer overflows.
        # The same envelope over and over: watchers tell items apart by position only here.
        template = new_event(
            "access.denied",
            source="access",
            subject=f"{building.name}/doors/d",
            data=access_events.AccessDenied(building=building.name),
        )
        stream = feed_stream(building.name.split("/")[1])
        for index in range(8_000):
            await m.shared.bus.publish(stream, template)
            if index % 50 == 0:
                await asyncio.sleep(0)  # the in-process bus never suspends: let readers run
        received = 0

        async def read_all() -> None:
            nonlocal received
            async for _ in call:
                received += 1

        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await asyncio.wait_for(read_all(), 20)
        info = error_info(rich_status(raised.value))
        assert (raised.value.code(), info.reason) == (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "STREAM_BUFFER_OVERFLOW",
        )
        assert info.metadata["last_event_id"]
        assert received < 8_000
