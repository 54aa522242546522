"""The events monitoring publishes (proto/gatehouse/monitoring/v1/events.proto), built from
domain objects and added to the unit of work's outbox with the change they report."""

from __future__ import annotations

from datetime import datetime, timedelta

from gatehouse.common.v1 import common_pb2
from gatehouse.events.v1.envelope_pb2 import Event
from gatehouse.monitoring import mapping
from gatehouse.monitoring.domain.alerts import Alert, ObservedEvent
from gatehouse.monitoring.domain.buildings import Building
from gatehouse.monitoring.domain.commands import Command
from gatehouse.monitoring.domain.devices import Device, StatusChange
from gatehouse.monitoring.domain.enums import DeviceKind, DeviceState
from gatehouse.monitoring.v1 import events_pb2, monitoring_pb2
from gatehouse.runtime.events import new_event

SOURCE = "monitoring"


def status_changed(change: StatusChange) -> list[Event]:
    """`device.status_changed`, plus `camera.offline` when a camera went OFFLINE."""
    device = change.device
    reason = events_pb2.DeviceStatusChangeReason.ValueType(change.reason)
    events = [
        new_event(
            "device.status_changed",
            source=SOURCE,
            subject=device.name,
            data=events_pb2.DeviceStatusChanged(
                device=device.name,
                building=device.building,
                kind=monitoring_pb2.DeviceKind.ValueType(device.kind),
                display_name=device.display_name,
                previous_state=monitoring_pb2.DeviceState.ValueType(change.previous),
                state=monitoring_pb2.DeviceState.ValueType(change.state),
                reason=reason,
                last_heartbeat_time=mapping.timestamp(change.last_heartbeat_time),
            ),
        )
    ]
    if device.kind is DeviceKind.CAMERA and change.state is DeviceState.OFFLINE:
        events.append(
            new_event(
                "camera.offline",
                source=SOURCE,
                subject=device.name,
                data=events_pb2.CameraOffline(
                    device=device.name,
                    building=device.building,
                    display_name=device.display_name,
                    zone=device.zone,
                    last_heartbeat_time=mapping.timestamp(change.last_heartbeat_time),
                    reason=reason,
                ),
            )
        )
    return events


def motion_detected(device: Device, event: ObservedEvent, outside_hours: bool) -> Event:
    return new_event(
        "motion.detected",
        source=SOURCE,
        subject=device.name,
        data=events_pb2.MotionDetected(
            device=device.name,
            building=device.building,
            zone=event.zone or device.zone,
            observe_time=mapping.timestamp(event.observe_time),
            confidence=event.confidence,
            outside_occupied_hours=outside_hours,
        ),
    )


def alert_triggered(alert: Alert, building: Building) -> Event:
    return new_event(
        "alert.triggered",
        source=SOURCE,
        subject=alert.name,
        data=events_pb2.AlertTriggered(
            alert=mapping.alert_to_proto(alert),
            building=alert.building,
            door=alert.door,
            lockdown_requested=building.lockdown_policy.matches(alert.severity, alert.rule),
        ),
    )


def alert_acknowledged(alert: Alert) -> Event:
    return new_event(
        "alert.acknowledged",
        source=SOURCE,
        subject=alert.name,
        data=events_pb2.AlertAcknowledged(
            alert=alert.name,
            building=alert.building,
            severity=common_pb2.Severity.ValueType(alert.severity),
            acknowledged_by=mapping.actor(alert.acknowledged_by),
            acknowledge_time=mapping.timestamp(alert.acknowledge_time),
            note=alert.acknowledge_note,
        ),
    )


def alert_resolved(alert: Alert, time_to_resolve: timedelta) -> Event:
    return new_event(
        "alert.resolved",
        source=SOURCE,
        subject=alert.name,
        data=events_pb2.AlertResolved(
            alert=alert.name,
            building=alert.building,
            severity=common_pb2.Severity.ValueType(alert.severity),
            rule=monitoring_pb2.AlertRule.ValueType(alert.rule),
            resolved_by=mapping.actor(alert.resolved_by),
            resolve_time=mapping.timestamp(alert.resolve_time),
            note=alert.resolve_note,
            time_to_resolve=mapping.duration(time_to_resolve),
        ),
    )


def command_acknowledged(
    command: Command, device_name: str, message: str, complete_time: datetime
) -> Event:
    """Exactly one per command; its correlation id is the SendDeviceCommand call's."""
    return new_event(
        "device.command_acknowledged",
        source=SOURCE,
        subject=device_name,
        correlation_id=command.correlation_id or None,
        data=events_pb2.DeviceCommandAcknowledged(
            device=device_name,
            building=f"buildings/{command.building_id}",
            door=command.door,
            command_id=command.id,
            kind=monitoring_pb2.DeviceCommandKind.ValueType(command.kind),
            result=monitoring_pb2.DeviceCommandResult.ValueType(command.result),
            message=message,
            complete_time=mapping.timestamp(complete_time),
            requested_by=mapping.actor(command.requested_by),
        ),
    )
