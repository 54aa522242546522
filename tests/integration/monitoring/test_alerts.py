"""Alert rules from device events (each rule and its dedup), device offline alerts, manual
alerts with acknowledge/resolve, and listing."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2

from gatehouse.common.v1 import common_pb2
from gatehouse.monitoring.simulator import now_stamp
from gatehouse.monitoring.v1 import events_pb2, monitoring_pb2
from gatehouse.runtime.config import Settings
from gatehouse.runtime.db import sqlite_url
from tests.integration.monitoring.feed_helpers import FeedWatcher, watch
from tests.integration.monitoring.harness import (
    MonitoringHarness,
    eventually,
    request_id,
    running_monitoring,
)
from tests.support.grpc_calls import error_info, rich_status

HIGH = common_pb2.SEVERITY_HIGH
MEDIUM = common_pb2.SEVERITY_MEDIUM
CRITICAL = common_pb2.SEVERITY_CRITICAL


def triggered(item: monitoring_pb2.FeedItem) -> events_pb2.AlertTriggered:
    payload = events_pb2.AlertTriggered()
    assert item.data.Unpack(payload)
    return payload


def seconds(value: float) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromTimedelta(timedelta(seconds=value))
    return duration


async def _rules_building(m: MonitoringHarness, **settings: Any) -> monitoring_pb2.Building:
    return await m.building(
        alert_rule_settings=monitoring_pb2.AlertRuleSettings(**settings),
        lockdown_policy=monitoring_pb2.LockdownPolicy(
            enabled=True, min_severity=HIGH, rules=[monitoring_pb2.ALERT_RULE_DOOR_FORCED]
        ),
    )


async def _one_alert(
    m: MonitoringHarness, building: str, count: int = 1
) -> list[monitoring_pb2.Alert]:
    async def listed() -> list[monitoring_pb2.Alert] | None:
        alerts = await m.alerts(building)
        return alerts if len(alerts) >= count else None

    return await eventually(listed)


async def test_door_forced_raises_one_alert_per_device(monitoring: MonitoringHarness) -> None:
    building = await _rules_building(monitoring)
    door = f"{building.name}/doors/back"
    controller, _ = await monitoring.register(
        building.name, monitoring_pb2.DEVICE_KIND_DOOR_CONTROLLER, door=door, display_name="Back"
    )
    feed = await watch(monitoring, building.name, event_types=["alert.*"])
    sim = await monitoring.device(controller)
    first_id = await sim.event(monitoring_pb2.DEVICE_EVENT_KIND_DOOR_FORCED)
    (item,) = await feed.wait_type("alert.triggered")
    payload = triggered(item)
    assert payload.alert.rule == monitoring_pb2.ALERT_RULE_DOOR_FORCED
    assert payload.alert.severity == HIGH
    assert payload.alert.dedup_key == f"ALERT_RULE_DOOR_FORCED:{controller.name}"
    assert payload.alert.trigger_event_id == first_id
    assert payload.door == door
    assert payload.lockdown_requested  # HIGH >= HIGH and the rule is listed
    assert item.severity == HIGH
    # Again, and the first message resent after a "reconnect": one more occurrence only.
    await sim.event(monitoring_pb2.DEVICE_EVENT_KIND_DOOR_FORCED)
    await sim.event(monitoring_pb2.DEVICE_EVENT_KIND_DOOR_FORCED, message_id=first_id)

    async def counted() -> monitoring_pb2.Alert | None:
        (alert,) = await monitoring.alerts(building.name)
        return alert if alert.occurrence_count == 2 else None

    alert = await eventually(counted)
    assert alert.state == monitoring_pb2.ALERT_STATE_OPEN
    await sim.heartbeat()
    assert feed.types() == ["alert.triggered"]


async def test_door_held_open_over_the_threshold(monitoring: MonitoringHarness) -> None:
    building = await _rules_building(monitoring, door_held_open_threshold=seconds(30))
    controller, _ = await monitoring.register(
        building.name, monitoring_pb2.DEVICE_KIND_DOOR_CONTROLLER, door=f"{building.name}/doors/a"
    )
    feed = await watch(monitoring, building.name, event_types=["alert.triggered"])
    sim = await monitoring.device(controller)
    await sim.event(
        monitoring_pb2.DEVICE_EVENT_KIND_DOOR_HELD_OPEN, held_open=timedelta(seconds=20)
    )
    await sim.event(
        monitoring_pb2.DEVICE_EVENT_KIND_DOOR_HELD_OPEN, held_open=timedelta(seconds=45)
    )
    await sim.event(
        monitoring_pb2.DEVICE_EVENT_KIND_DOOR_HELD_OPEN, held_open=timedelta(seconds=90)
    )
    (item,) = await feed.wait_type("alert.triggered")
    payload = triggered(item)
    assert (payload.alert.rule, payload.alert.severity) == (
        monitoring_pb2.ALERT_RULE_DOOR_HELD_OPEN,
        MEDIUM,
    )
    assert "45 s" in payload.alert.description
    assert not payload.lockdown_requested  # MEDIUM, and not a listed rule
    (alert,) = await _one_alert(monitoring, building.name)
    assert (await eventually(lambda: _occurrences(monitoring, building.name, 2))) == 2
    del alert


async def _occurrences(m: MonitoringHarness, building: str, wanted: int) -> int | None:
    (alert,) = await m.alerts(building)
    return alert.occurrence_count if alert.occurrence_count == wanted else None


async def test_motion_outside_occupied_hours(monitoring: MonitoringHarness) -> None:
    # Occupied Monday 08:00 - 18:00 only, Madrid time; watched zones: lobby.
    window = monitoring_pb2.WeeklyWindow(day=1)
    window.start_time.hours = 8
    window.end_time.hours = 18
    building = await _rules_building(
        monitoring, occupied_hours=[window], motion_alert_zones=["lobby"]
    )
    lobby, _ = await monitoring.register(building.name, labels={"zone": "lobby"})
    garden, _ = await monitoring.register(building.name, labels={"zone": "garden"})
    feed = await watch(monitoring, building.name, event_types=["motion.*", "alert.triggered"])
    lobby_sim = await monitoring.device(lobby)
    garden_sim = await monitoring.device(garden)
    from datetime import UTC, datetime  # noqa: PLC0415

    from google.protobuf import timestamp_pb2  # noqa: PLC0415

    # A Monday at 10:00 in Madrid (occupied), then a Sunday at 03:00 (not), both recent
    # enough to be believed: out-of-order times are fine.
    today = datetime.now(UTC)
    monday = today - timedelta(days=today.weekday())
    occupied = monday.replace(hour=9, minute=0, second=0, microsecond=0)  # 10:00/11:00 local
    if occupied > today:
        occupied -= timedelta(days=7)
    sunday_night = occupied - timedelta(days=1) - timedelta(hours=7)  # Sunday ~02:00 UTC
    stamps = []
    for when in (occupied, sunday_night):
        stamp = timestamp_pb2.Timestamp()
        stamp.FromDatetime(when)
        stamps.append(stamp)
    await lobby_sim.event(
        monitoring_pb2.DEVICE_EVENT_KIND_MOTION, observe_time=stamps[0], confidence=0.9
    )
    await lobby_sim.event(monitoring_pb2.DEVICE_EVENT_KIND_MOTION, observe_time=stamps[1])
    await garden_sim.event(monitoring_pb2.DEVICE_EVENT_KIND_MOTION, observe_time=stamps[1])
    motions = await feed.wait_type("motion.detected", 3)
    outside = []
    for item in motions:
        payload = events_pb2.MotionDetected()
        assert item.data.Unpack(payload)
        outside.append((payload.zone, payload.outside_occupied_hours))
    # Two devices, two sessions: their events interleave as they come.
    assert sorted(outside) == [("garden", True), ("lobby", False), ("lobby", True)]
    (alert_item,) = await feed.wait_type("alert.triggered")
    alert = triggered(alert_item).alert
    assert alert.rule == monitoring_pb2.ALERT_RULE_MOTION_OUTSIDE_HOURS
    assert alert.device == lobby.name  # the garden is not a watched zone
    night = [
        item.id
        for item, (zone, out) in zip(motions, outside, strict=True)
        if (zone, out) == ("lobby", True)
    ]
    assert alert.trigger_event_id == night[0]


async def test_tamper(monitoring: MonitoringHarness) -> None:
    building = await monitoring.building()
    sensor, _ = await monitoring.register(building.name, monitoring_pb2.DEVICE_KIND_SENSOR)
    sim = await monitoring.device(sensor)
    await sim.event(monitoring_pb2.DEVICE_EVENT_KIND_TAMPER, attributes={"casing": "open"})
    await sim.event(monitoring_pb2.DEVICE_EVENT_KIND_TAMPER)
    (alert,) = await _one_alert(monitoring, building.name)
    assert (alert.rule, alert.severity) == (monitoring_pb2.ALERT_RULE_TAMPER, HIGH)
    assert "casing=open" in alert.description
    assert await eventually(lambda: _occurrences(monitoring, building.name, 2)) == 2


async def test_future_event_time_is_replaced_by_the_receive_time(
    monitoring: MonitoringHarness,
) -> None:
    building = await monitoring.building()
    camera, _ = await monitoring.register(building.name)
    feed = await watch(monitoring, building.name, event_types=["motion.detected"])
    sim = await monitoring.device(camera)
    await sim.event(
        monitoring_pb2.DEVICE_EVENT_KIND_MOTION, observe_time=now_stamp(timedelta(days=2))
    )
    (item,) = await feed.wait_type("motion.detected")
    payload = events_pb2.MotionDetected()
    assert item.data.Unpack(payload)
    from datetime import UTC, datetime  # noqa: PLC0415

    assert abs(payload.observe_time.ToDatetime(tzinfo=UTC) - datetime.now(UTC)) < timedelta(
        minutes=1
    )


async def test_device_offline_too_long_raises_one_alert(
    settings: Settings, certs_dir: Path, tmp_path: Path
) -> None:
    async with running_monitoring(settings, certs_dir, sqlite_url(tmp_path / "m.db")) as m:
        building = await m.building(
            alert_rule_settings=monitoring_pb2.AlertRuleSettings(
                device_offline_threshold=seconds(0.3)
            )
        )
        camera, _ = await m.register(building.name, display_name="Yard cam")
        sensor, _ = await m.register(building.name, monitoring_pb2.DEVICE_KIND_SENSOR)
        feed = await watch(m, building.name)
        for device in (camera, sensor):
            sim = await m.device(device)
            await sim.close()
        alerts = await _one_alert(m, building.name, 2)
        by_device = {alert.device: alert for alert in alerts}
        assert by_device[camera.name].severity == HIGH
        assert by_device[sensor.name].severity == MEDIUM
        assert by_device[camera.name].rule == monitoring_pb2.ALERT_RULE_DEVICE_OFFLINE
        offline_events = {
            item.subject: item.id
            for item in feed.items
            if item.type == "device.status_changed"
            and events_pb2.DeviceStatusChanged.FromString(item.data.value).state
            == monitoring_pb2.DEVICE_STATE_OFFLINE
        }
        assert by_device[camera.name].trigger_event_id == offline_events[camera.name]
        # The checker keeps running: still one alert each, one occurrence.
        import asyncio  # noqa: PLC0415

        await asyncio.sleep(0.5)
        assert sorted(a.occurrence_count for a in await m.alerts(building.name)) == [1, 1]
        assert feed.types().count("alert.triggered") == 2


async def test_manual_alert_lifecycle(monitoring: MonitoringHarness) -> None:
    building = await monitoring.building(
        lockdown_policy=monitoring_pb2.LockdownPolicy(enabled=True)
    )
    camera, _ = await monitoring.register(building.name)
    feed: FeedWatcher = await watch(monitoring, building.name, event_types=["alert.*"])
    stub = await monitoring.stub()
    raise_request = monitoring_pb2.RaiseAlertRequest(
        parent=building.name,
        severity=CRITICAL,
        summary="Smoke on floor 3",
        device=camera.name,
        dedup_key="smoke-3",
        request_id=request_id(),
    )
    raised = await stub.RaiseAlert(raise_request)
    assert not raised.deduplicated
    assert raised.alert.rule == monitoring_pb2.ALERT_RULE_MANUAL
    assert raised.alert.raised_by.user == "users/u1"
    assert (await stub.RaiseAlert(raise_request)) == raised  # a retry, not a second raise
    again = await stub.RaiseAlert(
        monitoring_pb2.RaiseAlertRequest(
            parent=building.name, severity=CRITICAL, summary="Smoke again", dedup_key="smoke-3"
        )
    )
    assert again.deduplicated
    assert again.alert.name == raised.alert.name
    assert again.alert.occurrence_count == 2
    (item,) = await feed.wait_type("alert.triggered")
    assert triggered(item).lockdown_requested  # CRITICAL, any rule

    acknowledge = monitoring_pb2.AcknowledgeAlertRequest(
        name=raised.alert.name, note="on my way", request_id=request_id()
    )
    acked = (await stub.AcknowledgeAlert(acknowledge)).alert
    assert acked.state == monitoring_pb2.ALERT_STATE_ACKNOWLEDGED
    assert (acked.acknowledged_by.user, acked.acknowledge_note) == ("users/u1", "on my way")
    assert (await stub.AcknowledgeAlert(acknowledge)).alert == acked  # replay
    with pytest.raises(grpc.aio.AioRpcError) as twice:
        await stub.AcknowledgeAlert(monitoring_pb2.AcknowledgeAlertRequest(name=acked.name))
    info = error_info(rich_status(twice.value))
    assert (twice.value.code(), info.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "ALERT_ALREADY_ACKNOWLEDGED",
    )
    assert info.metadata["acknowledged_by"] == "users/u1"

    resolved = (
        await stub.ResolveAlert(
            monitoring_pb2.ResolveAlertRequest(name=acked.name, note="burnt toast")
        )
    ).alert
    assert resolved.state == monitoring_pb2.ALERT_STATE_RESOLVED
    assert resolved.resolve_note == "burnt toast"
    for call in (stub.ResolveAlert, stub.AcknowledgeAlert):
        with pytest.raises(grpc.aio.AioRpcError) as closed:
            await call(
                monitoring_pb2.ResolveAlertRequest(name=acked.name)
                if call is stub.ResolveAlert
                else monitoring_pb2.AcknowledgeAlertRequest(name=acked.name)
            )
        assert error_info(rich_status(closed.value)).reason == "ALERT_ALREADY_RESOLVED"
    # Resolving freed the key: the next occurrence is a new alert.
    fresh = await stub.RaiseAlert(
        monitoring_pb2.RaiseAlertRequest(
            parent=building.name, severity=HIGH, summary="Smoke", dedup_key="smoke-3"
        )
    )
    assert not fresh.deduplicated
    assert fresh.alert.name != raised.alert.name
    await feed.wait_type("alert.triggered", 2)
    resolved_item = (await feed.wait_type("alert.resolved"))[0]
    payload = events_pb2.AlertResolved()
    assert resolved_item.data.Unpack(payload)
    assert payload.resolved_by.user == "users/u1"
    assert payload.HasField("time_to_resolve")
    assert feed.types().count("alert.acknowledged") == 1


async def test_raise_alert_errors(monitoring: MonitoringHarness) -> None:
    building = await monitoring.building()
    other = await monitoring.building(display_name="Other")
    foreign, _ = await monitoring.register(other.name)
    stub = await monitoring.stub()
    cases = [
        (monitoring_pb2.RaiseAlertRequest(parent=building.name, summary="x"), "INVALID_FIELD"),
        (monitoring_pb2.RaiseAlertRequest(parent=building.name, severity=HIGH), "INVALID_FIELD"),
        (
            monitoring_pb2.RaiseAlertRequest(
                parent=building.name, severity=HIGH, summary="x", device=foreign.name
            ),
            "DEVICE_NOT_IN_BUILDING",
        ),
        (
            monitoring_pb2.RaiseAlertRequest(
                parent=building.name,
                severity=HIGH,
                summary="x",
                device=f"{building.name}/devices/none",
            ),
            "DEVICE_NOT_FOUND",
        ),
        (
            monitoring_pb2.RaiseAlertRequest(parent="buildings/none", severity=HIGH, summary="x"),
            "BUILDING_NOT_FOUND",
        ),
    ]
    for request, expected in cases:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.RaiseAlert(request)
        assert error_info(rich_status(raised.value)).reason == expected, request
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.AcknowledgeAlert(
            monitoring_pb2.AcknowledgeAlertRequest(name=f"{building.name}/alerts/none")
        )
    assert error_info(rich_status(raised.value)).reason == "ALERT_NOT_FOUND"


async def test_list_alerts_filters_order_and_pages(monitoring: MonitoringHarness) -> None:
    building = await monitoring.building()
    stub = await monitoring.stub()
    names = []
    severities = [common_pb2.SEVERITY_LOW, CRITICAL, MEDIUM, CRITICAL, common_pb2.SEVERITY_INFO]
    for index, severity in enumerate(severities):
        response = await stub.RaiseAlert(
            monitoring_pb2.RaiseAlertRequest(
                parent=building.name, severity=severity, summary=f"alert {index}"
            )
        )
        names.append(response.alert.name)
    await stub.ResolveAlert(monitoring_pb2.ResolveAlertRequest(name=names[0]))

    async def pages(**filters: Any) -> list[str]:
        seen: list[str] = []
        token = ""
        while True:
            response = await stub.ListAlerts(
                monitoring_pb2.ListAlertsRequest(
                    parent=building.name, page_size=2, page_token=token, **filters
                )
            )
            seen.extend(alert.name for alert in response.alerts)
            token = response.next_page_token
            if not token:
                return seen

    assert await pages() == list(reversed(names))
    assert await pages(order_by="raise_time") == names
    assert await pages(order_by="severity desc") == [
        names[3],
        names[1],
        names[2],
        names[0],
        names[4],
    ]
    assert await pages(min_severity=CRITICAL) == [names[3], names[1]]
    open_only = await pages(states=[monitoring_pb2.ALERT_STATE_OPEN])
    assert names[0] not in open_only
    assert len(open_only) == 4
    everywhere = await stub.ListAlerts(monitoring_pb2.ListAlertsRequest(parent="buildings/-"))
    assert {a.name for a in everywhere.alerts} >= set(names)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ListAlerts(
            monitoring_pb2.ListAlertsRequest(parent=building.name, order_by="summary")
        )
    assert error_info(rich_status(raised.value)).reason == "INVALID_ORDER_BY"
    first = await stub.ListAlerts(
        monitoring_pb2.ListAlertsRequest(parent=building.name, page_size=2)
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ListAlerts(
            monitoring_pb2.ListAlertsRequest(
                parent=building.name,
                page_size=2,
                page_token=first.next_page_token,
                min_severity=MEDIUM,
            )
        )
    assert error_info(rich_status(raised.value)).reason == "INVALID_PAGE_TOKEN"
