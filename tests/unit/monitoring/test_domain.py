"""The monitoring domain: occupied hours, lockdown policy, device state, alert rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gatehouse.monitoring.domain.alerts import (
    Actor,
    Alert,
    ObservedEvent,
    effective_observe_time,
    evaluate_device_event,
    evaluate_offline,
    rule_dedup_key,
)
from gatehouse.monitoring.domain.buildings import (
    AlertRuleSettings,
    Building,
    LockdownPolicy,
    WeeklyWindow,
    is_time_zone,
)
from gatehouse.monitoring.domain.devices import Device, label_problems
from gatehouse.monitoring.domain.enums import (
    AlertRule,
    AlertState,
    CommandKind,
    CredentialType,
    DeviceEventKind,
    DeviceKind,
    DeviceState,
    Severity,
    StatusChangeReason,
)
from gatehouse.monitoring.domain.names import (
    building_of,
    device_ids,
    device_of_spiffe_id,
)
from gatehouse.runtime.errors import FailedPrecondition

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)  # a Monday


def building(**settings: object) -> Building:
    return Building(
        id="b1",
        display_name="HQ",
        time_zone="Europe/Madrid",
        create_time=NOW,
        alert_rule_settings=AlertRuleSettings(**settings),  # type: ignore[arg-type]
    )


def device(kind: DeviceKind = DeviceKind.CAMERA, **fields: object) -> Device:
    return Device(
        id="d1",
        building_id="b1",
        kind=kind,
        credential_type=CredentialType.CERTIFICATE,
        create_time=NOW,
        **fields,  # type: ignore[arg-type]
    )


def hours(day: int, start: int, end: int) -> WeeklyWindow:
    return WeeklyWindow(day, start * 3600, end * 3600)


def test_time_zones() -> None:
    assert is_time_zone("Europe/Madrid")
    assert is_time_zone("UTC")
    for bad in ("", "Mars/Olympus", "/etc/passwd", "../x", "Europe/../UTC"):
        assert not is_time_zone(bad)


def test_occupied_hours_in_the_buildings_own_time_zone() -> None:
    office = building(occupied_hours=(hours(1, 9, 17),))
    # 12:00 UTC on a Monday in March is 13:00 in Madrid.
    assert office.is_occupied(NOW)
    # 16:30 UTC is 17:30 in Madrid: closed, although 16:30 < 17:00.
    assert not office.is_occupied(NOW.replace(hour=16, minute=30))
    assert not office.is_occupied(NOW + timedelta(days=1))


def test_overnight_and_whole_day_windows() -> None:
    night = building(occupied_hours=(hours(5, 22, 6),))  # Friday 22:00 -> Saturday 06:00
    friday = datetime(2026, 3, 6, 22, 30, tzinfo=UTC)  # 23:30 in Madrid
    assert night.is_occupied(friday)
    assert night.is_occupied(friday + timedelta(hours=6))  # Saturday 05:30 local
    assert not night.is_occupied(friday + timedelta(hours=8))
    whole = building(occupied_hours=(WeeklyWindow(7, 0, 24 * 3600),))
    assert whole.is_occupied(datetime(2026, 3, 8, 23, 0, tzinfo=UTC) - timedelta(hours=1))
    never = building()
    assert not never.is_occupied(NOW)


def test_lockdown_policy() -> None:
    off = LockdownPolicy()
    assert not off.matches(Severity.CRITICAL, AlertRule.MANUAL)
    default = LockdownPolicy(enabled=True)
    assert default.matches(Severity.CRITICAL, AlertRule.TAMPER)
    assert not default.matches(Severity.HIGH, AlertRule.TAMPER)
    narrow = LockdownPolicy(
        enabled=True, min_severity=Severity.HIGH, rules=(AlertRule.DOOR_FORCED,)
    )
    assert narrow.matches(Severity.HIGH, AlertRule.DOOR_FORCED)
    assert not narrow.matches(Severity.CRITICAL, AlertRule.MANUAL)


def test_device_connect_and_disconnect() -> None:
    camera = device()
    change = camera.connect("s1", NOW, firmware_version="2.0", supported_commands=())
    assert change is not None
    assert (change.previous, change.state) == (DeviceState.UNKNOWN, DeviceState.ONLINE)
    assert change.reason is StatusChangeReason.CONNECTED
    assert camera.firmware_version == "2.0"
    # A replacing session keeps it ONLINE: no change to report.
    assert camera.connect("s2", NOW, firmware_version="", supported_commands=()) is None
    # The replaced session ending does not take the device offline...
    assert camera.go_offline("s1", NOW, StatusChangeReason.DISCONNECTED) is None
    # ...the current one does.
    gone = camera.go_offline("s2", NOW, StatusChangeReason.DISCONNECTED)
    assert gone is not None
    assert camera.state is DeviceState.OFFLINE
    assert camera.session_id is None
    assert camera.go_offline(None, NOW, StatusChangeReason.HEARTBEATS_MISSED) is None


def test_supported_commands() -> None:
    controller = device(DeviceKind.DOOR_CONTROLLER, door="buildings/b1/doors/a")
    assert controller.supports(CommandKind.OPEN_DOOR)
    assert not controller.supports(CommandKind.REQUEST_SNAPSHOT)
    controller.connect("s", NOW, firmware_version="", supported_commands=(CommandKind.REBOOT,))
    assert not controller.supports(CommandKind.OPEN_DOOR)
    assert controller.supports(CommandKind.REBOOT)
    assert not device().supports(CommandKind.OPEN_DOOR)


def test_labels() -> None:
    assert label_problems({"zone": "lobby", "floor-3": "x"}) == []
    assert label_problems({"Zone": "x"})
    assert label_problems({"a": "x" * 300})


def test_names() -> None:
    assert device_ids("buildings/b1/devices/d1") == ("b1", "d1")
    assert device_ids("buildings/b1/devices/d1/x") is None
    assert building_of("buildings/b1/doors/main") == "b1"
    assert building_of("buildings/b1") == "b1"
    assert building_of("payments/p1") is None
    assert (
        device_of_spiffe_id("spiffe://gatehouse/buildings/b/devices/d") == "buildings/b/devices/d"
    )
    assert device_of_spiffe_id("spiffe://gatehouse/access") is None
    assert device_of_spiffe_id(None) is None


def event(kind: DeviceEventKind, **fields: object) -> ObservedEvent:
    return ObservedEvent(kind=kind, observe_time=NOW, **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kind", "rule", "severity"),
    [
        (DeviceEventKind.DOOR_FORCED, AlertRule.DOOR_FORCED, Severity.HIGH),
        (DeviceEventKind.TAMPER, AlertRule.TAMPER, Severity.HIGH),
        (DeviceEventKind.MOTION, AlertRule.MOTION_OUTSIDE_HOURS, Severity.HIGH),
    ],
)
def test_event_rules(kind: DeviceEventKind, rule: AlertRule, severity: Severity) -> None:
    candidate = evaluate_device_event(building(), device(), event(kind), "e1")
    assert candidate is not None
    assert (candidate.rule, candidate.severity) == (rule, severity)
    assert candidate.dedup_key == rule_dedup_key(rule, "buildings/b1/devices/d1")
    assert candidate.trigger_event_id == "e1"


def test_door_held_open_threshold() -> None:
    site = building(door_held_open_threshold=timedelta(seconds=30))
    controller = device(DeviceKind.DOOR_CONTROLLER, door="buildings/b1/doors/a")
    short = event(DeviceEventKind.DOOR_HELD_OPEN, held_open=timedelta(seconds=30))
    assert evaluate_device_event(site, controller, short) is None
    held = evaluate_device_event(
        site, controller, event(DeviceEventKind.DOOR_HELD_OPEN, held_open=timedelta(seconds=31))
    )
    assert held is not None
    assert (held.rule, held.severity, held.door) == (
        AlertRule.DOOR_HELD_OPEN,
        Severity.MEDIUM,
        "buildings/b1/doors/a",
    )
    # Default threshold: 60 s.
    default = building()
    assert (
        evaluate_device_event(
            default,
            controller,
            event(DeviceEventKind.DOOR_HELD_OPEN, held_open=timedelta(seconds=59)),
        )
        is None
    )


def test_motion_respects_hours_and_zones() -> None:
    site = building(occupied_hours=(hours(1, 9, 17),), motion_alert_zones=("lobby",))
    lobby = device(labels={"zone": "lobby"})
    assert evaluate_device_event(site, lobby, event(DeviceEventKind.MOTION)) is None  # occupied
    night = ObservedEvent(DeviceEventKind.MOTION, NOW.replace(hour=23))
    assert evaluate_device_event(site, lobby, night) is not None
    garden = device(labels={"zone": "garden"})
    assert evaluate_device_event(site, garden, night) is None
    # The event's own zone wins over the label.
    in_lobby = ObservedEvent(DeviceEventKind.MOTION, NOW.replace(hour=23), zone="lobby")
    assert evaluate_device_event(site, garden, in_lobby) is not None


def test_offline_rule() -> None:
    site = building(device_offline_threshold=timedelta(minutes=5))
    camera = device(state=DeviceState.OFFLINE, state_change_time=NOW)
    assert evaluate_offline(site, camera, NOW + timedelta(minutes=5)) is None
    late = evaluate_offline(site, camera, NOW + timedelta(minutes=6), "e9")
    assert late is not None
    assert (late.severity, late.trigger_event_id) == (Severity.HIGH, "e9")
    sensor = device(DeviceKind.SENSOR, state=DeviceState.OFFLINE, state_change_time=NOW)
    sensor_alert = evaluate_offline(site, sensor, NOW + timedelta(minutes=6))
    assert sensor_alert is not None
    assert sensor_alert.severity is Severity.MEDIUM
    camera.offline_alerted = True
    assert evaluate_offline(site, camera, NOW + timedelta(hours=1)) is None
    online = device(state=DeviceState.ONLINE, state_change_time=NOW)
    assert evaluate_offline(site, online, NOW + timedelta(hours=1)) is None


def test_future_observations_take_the_receive_time() -> None:
    assert effective_observe_time(NOW + timedelta(minutes=4), NOW) == NOW + timedelta(minutes=4)
    assert effective_observe_time(NOW + timedelta(minutes=6), NOW) == NOW
    assert effective_observe_time(NOW - timedelta(days=3), NOW) == NOW - timedelta(days=3)


def test_alert_lifecycle() -> None:
    candidate = evaluate_device_event(building(), device(), event(DeviceEventKind.TAMPER))
    assert candidate is not None
    alert = Alert.raise_from("a1", candidate, Actor(service="spiffe://gatehouse/monitoring"), NOW)
    assert alert.name == "buildings/b1/alerts/a1"
    alert.occur(NOW + timedelta(seconds=1))
    alert.occur(NOW - timedelta(seconds=1))  # late news does not move the last occurrence back
    assert alert.occurrence_count == 3
    assert alert.last_occurrence_time == NOW + timedelta(seconds=1)
    guard = Actor(user="users/g")
    alert.acknowledge(guard, NOW, "on it")
    with pytest.raises(FailedPrecondition) as twice:
        alert.acknowledge(guard, NOW, "")
    assert twice.value.reason == "ALERT_ALREADY_ACKNOWLEDGED"
    assert twice.value.metadata["acknowledged_by"] == "users/g"
    took = alert.resolve(guard, NOW + timedelta(minutes=3), "done")
    assert took == timedelta(minutes=3)
    assert alert.state is AlertState.RESOLVED
    for action in (alert.acknowledge, alert.resolve):
        with pytest.raises(FailedPrecondition) as closed:
            action(guard, NOW, "")
        assert closed.value.reason == "ALERT_ALREADY_RESOLVED"
