"""Alerts: raised by the built-in rules from what devices report, or by people; one open
alert per device and rule (or per manual dedup key); acknowledged, then resolved."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from gatehouse.monitoring.domain.buildings import Building
from gatehouse.monitoring.domain.devices import Device
from gatehouse.monitoring.domain.enums import (
    AlertRule,
    AlertState,
    DeviceEventKind,
    DeviceKind,
    DeviceState,
    Severity,
)
from gatehouse.monitoring.domain.names import alert_name, building_name
from gatehouse.runtime.errors import FailedPrecondition

MAX_SUMMARY = 200
MAX_TEXT = 4000
MAX_DEDUP_KEY = 256
# Devices may report events a little ahead of our clock; further ahead is a wrong clock.
MAX_CLOCK_AHEAD = timedelta(minutes=5)

RULE_SEVERITY: Mapping[AlertRule, Severity] = {
    AlertRule.DOOR_FORCED: Severity.HIGH,
    AlertRule.DOOR_HELD_OPEN: Severity.MEDIUM,
    AlertRule.MOTION_OUTSIDE_HOURS: Severity.HIGH,
    AlertRule.DEVICE_OFFLINE: Severity.MEDIUM,
    AlertRule.TAMPER: Severity.HIGH,
}


@dataclass(frozen=True, slots=True)
class Actor:
    """Who did something: a user, a service or device (SPIFFE id), where from."""

    user: str = ""
    service: str = ""
    client_address: str = ""


@dataclass(frozen=True, slots=True)
class ObservedEvent:
    """Something a device reported on its session (`DeviceEvent`), times already checked."""

    kind: DeviceEventKind
    observe_time: datetime
    zone: str = ""
    door: str = ""
    held_open: timedelta | None = None
    confidence: float = 0.0
    attributes: Mapping[str, str] = field(default_factory=dict)


def effective_observe_time(reported: datetime, received: datetime) -> datetime:
    """The contract's rule: a time too far in the future is replaced by the receive time."""
    return received if reported - received > MAX_CLOCK_AHEAD else reported


def rule_dedup_key(rule: AlertRule, device: str) -> str:
    """One open alert per device and rule: `ALERT_RULE_DOOR_FORCED:buildings/b/devices/d`."""
    return f"ALERT_RULE_{rule.name}:{device}"


@dataclass(frozen=True, slots=True)
class AlertCandidate:
    """What a rule wants raised; becomes a new alert or an occurrence of an open one."""

    building_id: str
    rule: AlertRule
    severity: Severity
    summary: str
    description: str
    device: str = ""
    door: str = ""
    dedup_key: str = ""
    trigger_event_id: str = ""
    occurred_at: datetime | None = None


def _describe(event: ObservedEvent) -> str:
    if not event.attributes:
        return ""
    details = ", ".join(f"{key}={value}" for key, value in sorted(event.attributes.items()))
    return f" ({details})"


def _label(device: Device) -> str:
    return device.display_name or device.id


def evaluate_device_event(
    building: Building, device: Device, event: ObservedEvent, trigger_event_id: str = ""
) -> AlertCandidate | None:
    """The alert a device event calls for under the building's rules, if any."""
    settings = building.alert_rule_settings
    rule: AlertRule
    if event.kind is DeviceEventKind.TAMPER:
        rule = AlertRule.TAMPER
        summary = f"Tamper: {_label(device)}"
        description = f"{_label(device)} reported tampering{_describe(event)}"
    elif event.kind is DeviceEventKind.DOOR_FORCED:
        rule = AlertRule.DOOR_FORCED
        door = event.door or device.door
        summary = f"Door forced: {door.rsplit('/', 1)[-1] or _label(device)}"
        description = f"{_label(device)} reported its door forced open{_describe(event)}"
    elif event.kind is DeviceEventKind.DOOR_HELD_OPEN:
        held = event.held_open or timedelta(0)
        threshold = settings.held_open_threshold
        if held <= threshold:
            return None
        rule = AlertRule.DOOR_HELD_OPEN
        door = event.door or device.door
        summary = f"Door held open: {door.rsplit('/', 1)[-1] or _label(device)}"
        description = (
            f"{_label(device)} reported its door open for {int(held.total_seconds())} s "
            f"(threshold {int(threshold.total_seconds())} s){_describe(event)}"
        )
    elif event.kind is DeviceEventKind.MOTION:
        zone = event.zone or device.zone
        if building.is_occupied(event.observe_time) or not settings.watches_zone(zone):
            return None
        rule = AlertRule.MOTION_OUTSIDE_HOURS
        where = f"zone {zone}" if zone else _label(device)
        summary = f"Motion outside occupied hours: {where}"
        description = f"{_label(device)} saw motion in {where}{_describe(event)}"
    else:
        return None
    door_name = ""
    if event.kind in (DeviceEventKind.DOOR_FORCED, DeviceEventKind.DOOR_HELD_OPEN):
        door_name = event.door or device.door
    return AlertCandidate(
        building_id=building.id,
        rule=rule,
        severity=RULE_SEVERITY[rule],
        summary=summary[:MAX_SUMMARY],
        description=description[:MAX_TEXT],
        device=device.name,
        door=door_name or device.door,
        dedup_key=rule_dedup_key(rule, device.name),
        trigger_event_id=trigger_event_id,
        occurred_at=event.observe_time,
    )


def evaluate_offline(
    building: Building, device: Device, now: datetime, trigger_event_id: str = ""
) -> AlertCandidate | None:
    """DEVICE_OFFLINE once the device has been OFFLINE longer than the building's threshold
    (and this offline period has not alerted yet)."""
    if device.offline_alerted or device.state_change_time is None:
        return None
    if device.state is not DeviceState.OFFLINE:
        return None
    threshold = building.alert_rule_settings.offline_threshold
    if now - device.state_change_time <= threshold:
        return None
    severity = (
        Severity.HIGH
        if device.kind in (DeviceKind.CAMERA, DeviceKind.DOOR_CONTROLLER)
        else RULE_SEVERITY[AlertRule.DEVICE_OFFLINE]
    )
    minutes = int((now - device.state_change_time).total_seconds() // 60)
    return AlertCandidate(
        building_id=building.id,
        rule=AlertRule.DEVICE_OFFLINE,
        severity=severity,
        summary=f"Device offline: {_label(device)}"[:MAX_SUMMARY],
        description=(
            f"{_label(device)} has been offline for {minutes} min "
            f"(threshold {int(threshold.total_seconds() // 60)} min)"
        ),
        device=device.name,
        door=device.door,
        dedup_key=rule_dedup_key(AlertRule.DEVICE_OFFLINE, device.name),
        trigger_event_id=trigger_event_id,
        occurred_at=now,
    )


@dataclass(slots=True)
class Alert:
    id: str
    building_id: str
    rule: AlertRule
    severity: Severity
    summary: str
    raised_by: Actor
    raise_time: datetime
    state: AlertState = AlertState.OPEN
    device: str = ""
    door: str = ""
    description: str = ""
    dedup_key: str = ""
    occurrence_count: int = 1
    last_occurrence_time: datetime | None = None
    trigger_event_id: str = ""
    acknowledged_by: Actor | None = None
    acknowledge_time: datetime | None = None
    acknowledge_note: str = ""
    resolved_by: Actor | None = None
    resolve_time: datetime | None = None
    resolve_note: str = ""

    @classmethod
    def raise_from(
        cls, alert_id: str, candidate: AlertCandidate, raised_by: Actor, now: datetime
    ) -> Alert:
        return cls(
            id=alert_id,
            building_id=candidate.building_id,
            rule=candidate.rule,
            severity=candidate.severity,
            summary=candidate.summary,
            description=candidate.description,
            device=candidate.device,
            door=candidate.door,
            dedup_key=candidate.dedup_key,
            trigger_event_id=candidate.trigger_event_id,
            raised_by=raised_by,
            raise_time=now,
            last_occurrence_time=candidate.occurred_at or now,
        )

    @property
    def name(self) -> str:
        return alert_name(self.building_id, self.id)

    @property
    def building(self) -> str:
        return building_name(self.building_id)

    @property
    def unresolved(self) -> bool:
        return self.state is not AlertState.RESOLVED

    def occur(self, at: datetime) -> None:
        """The condition happened again while the alert is unresolved."""
        self.occurrence_count += 1
        if self.last_occurrence_time is None or at > self.last_occurrence_time:
            self.last_occurrence_time = at

    def acknowledge(self, actor: Actor, now: datetime, note: str) -> None:
        if self.state is AlertState.RESOLVED:
            raise FailedPrecondition(
                "the alert is already resolved", reason="ALERT_ALREADY_RESOLVED"
            )
        if self.state is AlertState.ACKNOWLEDGED:
            who = self.acknowledged_by
            raise FailedPrecondition(
                "the alert is already acknowledged",
                reason="ALERT_ALREADY_ACKNOWLEDGED",
                metadata={
                    "acknowledged_by": (who.user or who.service) if who else "",
                    "acknowledge_time": self.acknowledge_time.isoformat()
                    if self.acknowledge_time
                    else "",
                },
            )
        self.state = AlertState.ACKNOWLEDGED
        self.acknowledged_by = actor
        self.acknowledge_time = now
        self.acknowledge_note = note

    def resolve(self, actor: Actor, now: datetime, note: str) -> timedelta:
        """Close the alert; returns the time from raise to resolve."""
        if self.state is AlertState.RESOLVED:
            raise FailedPrecondition(
                "the alert is already resolved", reason="ALERT_ALREADY_RESOLVED"
            )
        self.state = AlertState.RESOLVED
        self.resolved_by = actor
        self.resolve_time = now
        self.resolve_note = note
        return max(now - self.raise_time, timedelta(0))
