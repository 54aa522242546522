"""Protobuf <-> domain: the only module besides the servicer and the event builders that
knows the generated types. Request checks that the contract states per field live here too,
as field violations."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from google.protobuf import duration_pb2, json_format, timestamp_pb2
from google.protobuf.message import Message
from google.type import postal_address_pb2

from gatehouse.common.v1 import common_pb2
from gatehouse.monitoring.domain.alerts import Actor, Alert, ObservedEvent
from gatehouse.monitoring.domain.buildings import (
    AlertRuleSettings,
    Building,
    LockdownPolicy,
    WeeklyWindow,
)
from gatehouse.monitoring.domain.commands import Command
from gatehouse.monitoring.domain.devices import Device
from gatehouse.monitoring.domain.enums import (
    AlertRule,
    CommandKind,
    CommandResult,
    DeviceEventKind,
    Severity,
)
from gatehouse.monitoring.domain.readings import Reading, UploadSummary
from gatehouse.monitoring.domain.sessions import (
    Body,
    CommandAck,
    DeviceMessage,
    Heartbeat,
    Hello,
    Outbound,
    Ping,
    ReadingsBatch,
    Welcome,
)
from gatehouse.monitoring.v1 import monitoring_pb2
from gatehouse.runtime.errors import FieldViolation, InvalidArgument

MAX_MESSAGE_ID = 128
_EVENT_KINDS = frozenset(int(kind) for kind in DeviceEventKind if kind)
_COMMANDS = frozenset(int(kind) for kind in CommandKind if kind)
_RESULTS = frozenset(int(result) for result in CommandResult if result)


# --- scalars ---------------------------------------------------------------------------------


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value.astimezone(UTC))
    return stamp


def from_timestamp(message: Message, field: str, stamp: timestamp_pb2.Timestamp) -> datetime | None:
    """The time, or None when the field is unset. Out-of-range values become None too: they
    cannot be a real time, and the callers treat None as "missing"."""
    if not message.HasField(field):
        return None
    try:
        return stamp.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        return None


def duration(value: timedelta | None) -> duration_pb2.Duration | None:
    if value is None:
        return None
    message = duration_pb2.Duration()
    message.FromTimedelta(value)
    return message


def from_duration(message: Message, field: str, value: duration_pb2.Duration) -> timedelta | None:
    if not message.HasField(field):
        return None
    try:
        return value.ToTimedelta()
    except (ValueError, OverflowError):
        return None


def actor(value: Actor | None) -> common_pb2.Actor | None:
    if value is None:
        return None
    return common_pb2.Actor(
        user=value.user, service=value.service, client_address=value.client_address
    )


# --- buildings -------------------------------------------------------------------------------


def _seconds_of_day(value: object) -> int:
    hours = int(getattr(value, "hours", 0))
    minutes = int(getattr(value, "minutes", 0))
    seconds = int(getattr(value, "seconds", 0))
    if not (0 <= hours <= 24 and 0 <= minutes <= 59 and 0 <= seconds <= 59):
        return -1
    return hours * 3600 + minutes * 60 + seconds


def building_from_proto(
    message: monitoring_pb2.Building, building_id: str, now: datetime
) -> Building:
    settings = message.alert_rule_settings
    windows = tuple(
        WeeklyWindow(
            day=int(window.day),
            start_second=_seconds_of_day(window.start_time),
            end_second=_seconds_of_day(window.end_time),
        )
        for window in settings.occupied_hours
    )
    policy = message.lockdown_policy
    return Building(
        id=building_id,
        display_name=message.display_name.strip(),
        time_zone=message.time_zone,
        create_time=now,
        address=json_format.MessageToDict(message.address) if message.HasField("address") else {},
        lockdown_policy=LockdownPolicy(
            enabled=policy.enabled,
            min_severity=Severity(policy.min_severity),
            rules=tuple(AlertRule(rule) for rule in policy.rules),
        ),
        alert_rule_settings=AlertRuleSettings(
            door_held_open_threshold=from_duration(
                settings, "door_held_open_threshold", settings.door_held_open_threshold
            ),
            device_offline_threshold=from_duration(
                settings, "device_offline_threshold", settings.device_offline_threshold
            ),
            occupied_hours=windows,
            motion_alert_zones=tuple(settings.motion_alert_zones),
        ),
    )


def _time_of_day(seconds: int) -> dict[str, int]:
    return {"hours": seconds // 3600, "minutes": seconds % 3600 // 60, "seconds": seconds % 60}


def building_to_proto(building: Building) -> monitoring_pb2.Building:
    settings = building.alert_rule_settings
    message = monitoring_pb2.Building(
        name=building.name,
        display_name=building.display_name,
        time_zone=building.time_zone,
        create_time=timestamp(building.create_time),
        lockdown_policy=monitoring_pb2.LockdownPolicy(
            enabled=building.lockdown_policy.enabled,
            min_severity=common_pb2.Severity.ValueType(building.lockdown_policy.min_severity),
            rules=[monitoring_pb2.AlertRule.ValueType(r) for r in building.lockdown_policy.rules],
        ),
        alert_rule_settings=monitoring_pb2.AlertRuleSettings(
            door_held_open_threshold=duration(settings.door_held_open_threshold),
            device_offline_threshold=duration(settings.device_offline_threshold),
            motion_alert_zones=list(settings.motion_alert_zones),
        ),
    )
    for window in settings.occupied_hours:
        proto_window = message.alert_rule_settings.occupied_hours.add()
        proto_window.day = window.day
        json_format.ParseDict(_time_of_day(window.start_second), proto_window.start_time)
        json_format.ParseDict(_time_of_day(window.end_second), proto_window.end_time)
    if building.address:
        address = postal_address_pb2.PostalAddress()
        json_format.ParseDict(dict(building.address), address, ignore_unknown_fields=True)
        message.address.CopyFrom(address)
    return message


# --- devices ---------------------------------------------------------------------------------


def device_to_proto(device: Device) -> monitoring_pb2.Device:
    return monitoring_pb2.Device(
        name=device.name,
        display_name=device.display_name,
        kind=monitoring_pb2.DeviceKind.ValueType(device.kind),
        state=monitoring_pb2.DeviceState.ValueType(device.state),
        last_heartbeat_time=timestamp(device.last_heartbeat_time),
        labels=device.labels,
        firmware_version=device.firmware_version,
        door=device.door,
        credential_type=monitoring_pb2.DeviceCredentialType.ValueType(device.credential_type),
        state_change_time=timestamp(device.state_change_time),
        create_time=timestamp(device.create_time),
    )


# --- alerts ----------------------------------------------------------------------------------


def alert_to_proto(alert: Alert) -> monitoring_pb2.Alert:
    return monitoring_pb2.Alert(
        name=alert.name,
        rule=monitoring_pb2.AlertRule.ValueType(alert.rule),
        severity=common_pb2.Severity.ValueType(alert.severity),
        state=monitoring_pb2.AlertState.ValueType(alert.state),
        device=alert.device,
        summary=alert.summary,
        description=alert.description,
        dedup_key=alert.dedup_key,
        occurrence_count=alert.occurrence_count,
        last_occurrence_time=timestamp(alert.last_occurrence_time),
        trigger_event_id=alert.trigger_event_id,
        raised_by=actor(alert.raised_by),
        raise_time=timestamp(alert.raise_time),
        acknowledged_by=actor(alert.acknowledged_by),
        acknowledge_time=timestamp(alert.acknowledge_time),
        acknowledge_note=alert.acknowledge_note,
        resolved_by=actor(alert.resolved_by),
        resolve_time=timestamp(alert.resolve_time),
        resolve_note=alert.resolve_note,
    )


# --- commands --------------------------------------------------------------------------------


def command_to_proto(command: Command) -> monitoring_pb2.DeviceCommand:
    message = monitoring_pb2.DeviceCommand(
        command_id=command.id,
        kind=monitoring_pb2.DeviceCommandKind.ValueType(command.kind),
        deadline=timestamp(command.deadline),
        requested_by=actor(command.requested_by),
    )
    if command.kind is CommandKind.OPEN_DOOR:
        message.open_door.CopyFrom(
            monitoring_pb2.OpenDoorParameters(unlock_duration=duration(command.unlock_duration))
        )
    return message


# --- device sessions -------------------------------------------------------------------------


def _readings(batch: monitoring_pb2.ReadingBatch) -> tuple[Reading, ...]:
    return tuple(
        Reading(
            metric=reading.metric,
            value=reading.value,
            time=from_timestamp(reading, "time", reading.time),
        )
        for reading in batch.readings
    )


def readings_batch(batch: monitoring_pb2.ReadingBatch) -> ReadingsBatch:
    return ReadingsBatch(batch_id=batch.batch_id, readings=_readings(batch))


def _invalid(field: str, problem: str) -> InvalidArgument:
    return InvalidArgument([FieldViolation(field, problem)])


def _event(event: monitoring_pb2.DeviceEvent) -> ObservedEvent:
    problems = []
    if int(event.kind) not in _EVENT_KINDS:
        problems.append(FieldViolation("event.kind", "is required"))
    observed = from_timestamp(event, "observe_time", event.observe_time)
    if observed is None:
        problems.append(FieldViolation("event.observe_time", "is required"))
    confidence = float(event.confidence)
    if not math.isfinite(confidence) or not 0.0 <= confidence <= 1.0:
        problems.append(FieldViolation("event.confidence", "must be within [0, 1]"))
    held = from_duration(event, "held_open_duration", event.held_open_duration)
    if held is not None and held < timedelta(0):
        problems.append(FieldViolation("event.held_open_duration", "must not be negative"))
    if problems:
        raise InvalidArgument(problems)
    assert observed is not None
    return ObservedEvent(
        kind=DeviceEventKind(event.kind),
        observe_time=observed,
        zone=event.zone[:63],
        door=event.door,
        held_open=held,
        confidence=confidence,
        attributes={key[:63]: value[:256] for key, value in list(event.attributes.items())[:32]},
    )


def device_message(request: monitoring_pb2.ConnectDeviceRequest) -> DeviceMessage:
    """One ConnectDevice message in domain terms; INVALID_ARGUMENT for one with no content
    or no `message_id` (the contract's rule)."""
    if not request.message_id:
        raise _invalid("message_id", "is required")
    if len(request.message_id) > MAX_MESSAGE_ID:
        raise _invalid("message_id", f"at most {MAX_MESSAGE_ID} characters")
    kind = request.WhichOneof("message")
    body: Body
    if kind == "hello":
        hello = request.hello
        body = Hello(
            firmware_version=hello.firmware_version,
            device_time=from_timestamp(hello, "device_time", hello.device_time),
            boot_time=from_timestamp(hello, "boot_time", hello.boot_time),
            supported_commands=tuple(
                CommandKind(kind) for kind in hello.supported_commands if int(kind) in _COMMANDS
            ),
        )
    elif kind == "heartbeat":
        beat = request.heartbeat
        body = Heartbeat(
            device_time=from_timestamp(beat, "device_time", beat.device_time),
            ping_id=beat.ping_id[:MAX_MESSAGE_ID],
        )
    elif kind == "readings":
        body = readings_batch(request.readings)
    elif kind == "event":
        body = _event(request.event)
    elif kind == "command_ack":
        ack = request.command_ack
        if not ack.command_id:
            raise _invalid("command_ack.command_id", "is required")
        result = (
            CommandResult(ack.result) if int(ack.result) in _RESULTS else CommandResult.UNSPECIFIED
        )
        if result is CommandResult.UNSPECIFIED:
            raise _invalid("command_ack.result", "is required")
        body = CommandAck(
            command_id=ack.command_id[:MAX_MESSAGE_ID],
            result=result,
            message=ack.message[:1000],
            complete_time=from_timestamp(ack, "complete_time", ack.complete_time),
        )
    else:
        raise _invalid("message", "exactly one of hello, heartbeat, readings, event, command_ack")
    return DeviceMessage(name=request.name, message_id=request.message_id, body=body)


def device_response(outbound: Outbound, message_id: str) -> monitoring_pb2.ConnectDeviceResponse:
    if isinstance(outbound, Welcome):
        return monitoring_pb2.ConnectDeviceResponse(
            message_id=message_id,
            welcome=monitoring_pb2.DeviceWelcome(
                session_id=outbound.session_id,
                heartbeat_interval=duration(outbound.heartbeat_interval),
                offline_after=duration(outbound.offline_after),
                server_time=timestamp(outbound.server_time),
                max_readings_per_batch=outbound.max_readings_per_batch,
            ),
        )
    if isinstance(outbound, Ping):
        return monitoring_pb2.ConnectDeviceResponse(
            message_id=message_id,
            ping=monitoring_pb2.DevicePing(
                ping_id=outbound.ping_id, server_time=timestamp(outbound.server_time)
            ),
        )
    return monitoring_pb2.ConnectDeviceResponse(
        message_id=message_id, command=command_to_proto(outbound)
    )


def upload_summary(summary: UploadSummary) -> monitoring_pb2.ReportReadingsResponse:
    response = monitoring_pb2.ReportReadingsResponse(
        batch_count=summary.batch_count,
        duplicate_batch_count=summary.duplicate_batch_count,
        accepted_count=summary.accepted_count,
        rejected_count=summary.rejected_count,
        rejections=[
            monitoring_pb2.ReadingRejection(
                batch_id=batch_id,
                index=rejection.index,
                reason=monitoring_pb2.ReadingRejectionReason.ValueType(rejection.reason),
            )
            for batch_id, rejection in summary.rejections
        ],
    )
    if summary.earliest is not None and summary.latest is not None:
        response.accepted_time_range.start_time.FromDatetime(summary.earliest)
        response.accepted_time_range.end_time.FromDatetime(summary.latest)
    return response
