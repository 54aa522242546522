"""Rows <-> domain objects, including the JSON documents some columns hold."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from gatehouse.monitoring.adapters.orm import AlertRow, BuildingRow, CommandRow, DeviceRow
from gatehouse.monitoring.domain.alerts import Actor, Alert
from gatehouse.monitoring.domain.buildings import (
    AlertRuleSettings,
    Building,
    EmergencyState,
    LockdownPolicy,
    WeeklyWindow,
)
from gatehouse.monitoring.domain.commands import Command, CommandState
from gatehouse.monitoring.domain.devices import Device
from gatehouse.monitoring.domain.enums import (
    AlertRule,
    AlertState,
    CommandKind,
    CommandResult,
    CredentialType,
    DeviceKind,
    DeviceState,
    Severity,
)


def _dumps(document: Any) -> str:
    return json.dumps(document, separators=(",", ":"), sort_keys=True)


def _ms(value: timedelta | None) -> int | None:
    return None if value is None else int(value.total_seconds() * 1000)


def _duration(ms: Any) -> timedelta | None:
    return None if ms is None else timedelta(milliseconds=int(ms))


# --- buildings -------------------------------------------------------------------------------


def lockdown_to_json(policy: LockdownPolicy) -> str:
    return _dumps(
        {
            "enabled": policy.enabled,
            "min_severity": int(policy.min_severity),
            "rules": [int(rule) for rule in policy.rules],
        }
    )


def lockdown_from_json(text: str) -> LockdownPolicy:
    data = json.loads(text)
    return LockdownPolicy(
        enabled=bool(data.get("enabled")),
        min_severity=Severity(int(data.get("min_severity", 0))),
        rules=tuple(AlertRule(int(rule)) for rule in data.get("rules", ())),
    )


def settings_to_json(settings: AlertRuleSettings) -> str:
    return _dumps(
        {
            "door_held_open_ms": _ms(settings.door_held_open_threshold),
            "device_offline_ms": _ms(settings.device_offline_threshold),
            "occupied_hours": [
                [window.day, window.start_second, window.end_second]
                for window in settings.occupied_hours
            ],
            "motion_alert_zones": list(settings.motion_alert_zones),
        }
    )


def settings_from_json(text: str) -> AlertRuleSettings:
    data = json.loads(text)
    return AlertRuleSettings(
        door_held_open_threshold=_duration(data.get("door_held_open_ms")),
        device_offline_threshold=_duration(data.get("device_offline_ms")),
        occupied_hours=tuple(
            WeeklyWindow(int(day), int(start), int(end))
            for day, start, end in data.get("occupied_hours", ())
        ),
        motion_alert_zones=tuple(str(zone) for zone in data.get("motion_alert_zones", ())),
    )


def building_row(building: Building) -> BuildingRow:
    row = BuildingRow(id=building.id)
    fill_building_row(row, building)
    return row


def fill_building_row(row: BuildingRow, building: Building) -> None:
    row.display_name = building.display_name
    row.time_zone = building.time_zone
    row.address = _dumps(dict(building.address))
    row.lockdown_policy = lockdown_to_json(building.lockdown_policy)
    row.alert_rule_settings = settings_to_json(building.alert_rule_settings)
    row.create_time = building.create_time
    row.emergency_active = building.emergency.active
    row.emergency_kind = building.emergency.kind
    row.emergency_start_time = building.emergency.start_time
    row.emergency_trigger_event_id = building.emergency.trigger_event_id


def building_from_row(row: BuildingRow) -> Building:
    return Building(
        id=row.id,
        display_name=row.display_name,
        time_zone=row.time_zone,
        create_time=row.create_time,
        address=json.loads(row.address),
        lockdown_policy=lockdown_from_json(row.lockdown_policy),
        alert_rule_settings=settings_from_json(row.alert_rule_settings),
        emergency=EmergencyState(
            active=row.emergency_active,
            kind=row.emergency_kind,
            start_time=row.emergency_start_time,
            trigger_event_id=row.emergency_trigger_event_id,
        ),
    )


# --- devices ---------------------------------------------------------------------------------


def fill_device_row(row: DeviceRow, device: Device) -> None:
    row.building_id = device.building_id
    row.display_name = device.display_name
    row.kind = int(device.kind)
    row.labels = _dumps(device.labels)
    row.firmware_version = device.firmware_version
    row.door = device.door or None
    row.credential_type = int(device.credential_type)
    row.state = int(device.state)
    row.state_change_time = device.state_change_time
    row.last_heartbeat_time = device.last_heartbeat_time
    row.session_id = device.session_id
    row.supported_commands = (
        None
        if device.supported_commands is None
        else _dumps(sorted(int(kind) for kind in device.supported_commands))
    )
    row.offline_alerted = device.offline_alerted
    row.state_event_id = device.state_event_id or None
    row.create_time = device.create_time


def device_from_row(row: DeviceRow) -> Device:
    supported = (
        None
        if row.supported_commands is None
        else frozenset(CommandKind(int(kind)) for kind in json.loads(row.supported_commands))
    )
    return Device(
        id=row.id,
        building_id=row.building_id,
        kind=DeviceKind(row.kind),
        credential_type=CredentialType(row.credential_type),
        create_time=row.create_time,
        display_name=row.display_name,
        labels=dict(json.loads(row.labels)),
        firmware_version=row.firmware_version,
        door=row.door or "",
        state=DeviceState(row.state),
        state_change_time=row.state_change_time,
        last_heartbeat_time=row.last_heartbeat_time,
        session_id=row.session_id,
        supported_commands=supported,
        offline_alerted=row.offline_alerted,
        state_event_id=row.state_event_id or "",
    )


# --- alerts ----------------------------------------------------------------------------------


def actor_to_json(actor: Actor | None) -> str | None:
    if actor is None:
        return None
    return _dumps(
        {"user": actor.user, "service": actor.service, "client_address": actor.client_address}
    )


def actor_from_json(text: str | None) -> Actor | None:
    if text is None:
        return None
    data = json.loads(text)
    return Actor(
        user=str(data.get("user", "")),
        service=str(data.get("service", "")),
        client_address=str(data.get("client_address", "")),
    )


def fill_alert_row(row: AlertRow, alert: Alert) -> None:
    row.building_id = alert.building_id
    row.rule = int(alert.rule)
    row.severity = int(alert.severity)
    row.state = int(alert.state)
    row.device = alert.device
    row.door = alert.door
    row.summary = alert.summary
    row.description = alert.description
    row.dedup_key = alert.dedup_key
    row.open_dedup_key = alert.dedup_key if alert.dedup_key and alert.unresolved else None
    row.occurrence_count = alert.occurrence_count
    row.last_occurrence_time = alert.last_occurrence_time
    row.trigger_event_id = alert.trigger_event_id
    row.raised_by = actor_to_json(alert.raised_by) or "{}"
    row.raise_time = alert.raise_time
    row.acknowledged_by = actor_to_json(alert.acknowledged_by)
    row.acknowledge_time = alert.acknowledge_time
    row.acknowledge_note = alert.acknowledge_note
    row.resolved_by = actor_to_json(alert.resolved_by)
    row.resolve_time = alert.resolve_time
    row.resolve_note = alert.resolve_note


def alert_from_row(row: AlertRow) -> Alert:
    return Alert(
        id=row.id,
        building_id=row.building_id,
        rule=AlertRule(row.rule),
        severity=Severity(row.severity),
        state=AlertState(row.state),
        summary=row.summary,
        raised_by=actor_from_json(row.raised_by) or Actor(),
        raise_time=row.raise_time,
        device=row.device,
        door=row.door,
        description=row.description,
        dedup_key=row.dedup_key,
        occurrence_count=row.occurrence_count,
        last_occurrence_time=row.last_occurrence_time,
        trigger_event_id=row.trigger_event_id,
        acknowledged_by=actor_from_json(row.acknowledged_by),
        acknowledge_time=row.acknowledge_time,
        acknowledge_note=row.acknowledge_note,
        resolved_by=actor_from_json(row.resolved_by),
        resolve_time=row.resolve_time,
        resolve_note=row.resolve_note,
    )


# --- commands --------------------------------------------------------------------------------


def fill_command_row(row: CommandRow, command: Command) -> None:
    row.building_id = command.building_id
    row.device_id = command.device_id
    row.kind = int(command.kind)
    row.deadline = command.deadline
    row.requested_by = actor_to_json(command.requested_by) or "{}"
    row.correlation_id = command.correlation_id
    row.door = command.door
    row.unlock_ms = _ms(command.unlock_duration)
    row.state = int(command.state)
    row.result = int(command.result)
    row.create_time = command.create_time


def command_from_row(row: CommandRow) -> Command:
    return Command(
        id=row.id,
        building_id=row.building_id,
        device_id=row.device_id,
        kind=CommandKind(row.kind),
        deadline=row.deadline,
        requested_by=actor_from_json(row.requested_by) or Actor(),
        create_time=row.create_time,
        correlation_id=row.correlation_id,
        door=row.door,
        unlock_duration=_duration(row.unlock_ms),
        state=CommandState(row.state),
        result=CommandResult(row.result),
    )
