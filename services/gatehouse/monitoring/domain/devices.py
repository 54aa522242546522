"""Devices: what they are, which commands they take, and their connection state as their
sessions and heartbeats make it."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime

from gatehouse.monitoring.domain.enums import (
    CommandKind,
    CredentialType,
    DeviceKind,
    DeviceState,
    StatusChangeReason,
)
from gatehouse.monitoring.domain.names import building_name, device_name

LABEL_KEY = re.compile(r"[a-z0-9_-]{1,63}")
MAX_LABEL_VALUE = 256
MAX_LABELS = 64
MAX_FIRMWARE = 64
ZONE_LABEL = "zone"

KIND_COMMANDS: Mapping[DeviceKind, frozenset[CommandKind]] = {
    DeviceKind.DOOR_CONTROLLER: frozenset(
        {
            CommandKind.OPEN_DOOR,
            CommandKind.LOCK_DOWN,
            CommandKind.RELEASE_LOCKDOWN,
            CommandKind.REBOOT,
            CommandKind.HOLD_UNLOCKED,
            CommandKind.RELOCK,
        }
    ),
    DeviceKind.CAMERA: frozenset({CommandKind.REBOOT, CommandKind.REQUEST_SNAPSHOT}),
    DeviceKind.SENSOR: frozenset({CommandKind.REBOOT}),
}


def label_problems(labels: Mapping[str, str]) -> list[str]:
    problems = []
    if len(labels) > MAX_LABELS:
        problems.append(f"at most {MAX_LABELS} labels")
    for key, value in labels.items():
        if LABEL_KEY.fullmatch(key) is None:
            problems.append(
                f"key {key[:70]!r}: lower-case letters, digits, '_' and '-', at most 63"
            )
        if len(value) > MAX_LABEL_VALUE:
            problems.append(f"value of {key[:70]!r}: at most {MAX_LABEL_VALUE} characters")
    return problems


@dataclass(frozen=True, slots=True)
class StatusChange:
    """One change of a device's state: what `device.status_changed` reports."""

    device: Device
    previous: DeviceState
    state: DeviceState
    reason: StatusChangeReason
    last_heartbeat_time: datetime | None


@dataclass(slots=True)
class Device:
    id: str
    building_id: str
    kind: DeviceKind
    credential_type: CredentialType
    create_time: datetime
    display_name: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    firmware_version: str = ""
    door: str = ""
    state: DeviceState = DeviceState.UNKNOWN
    state_change_time: datetime | None = None
    last_heartbeat_time: datetime | None = None
    # The live session the state belongs to; a stale session (replaced, or on a replica that
    # died) must not turn the device offline behind the back of its newer session.
    session_id: str | None = None
    # What the device's latest hello said it can do; None: everything its kind supports.
    supported_commands: frozenset[CommandKind] | None = None
    # Whether the current offline period has raised its DEVICE_OFFLINE alert already.
    offline_alerted: bool = False
    # The `device.status_changed` event that began the current state ("" if none).
    state_event_id: str = ""

    @property
    def name(self) -> str:
        return device_name(self.building_id, self.id)

    @property
    def building(self) -> str:
        return building_name(self.building_id)

    @property
    def zone(self) -> str:
        return self.labels.get(ZONE_LABEL, "")

    def supports_kind(self, command: CommandKind) -> bool:
        return command in KIND_COMMANDS.get(self.kind, frozenset())

    def supports(self, command: CommandKind) -> bool:
        if not self.supports_kind(command):
            return False
        return self.supported_commands is None or command in self.supported_commands

    def connect(
        self,
        session_id: str,
        now: datetime,
        *,
        firmware_version: str,
        supported_commands: Collection[CommandKind],
    ) -> StatusChange | None:
        """A hello was accepted: this session owns the device now. A change only when the
        device was not ONLINE already (a replacing session keeps it ONLINE)."""
        previous = self.state
        self.session_id = session_id
        if firmware_version:
            self.firmware_version = firmware_version[:MAX_FIRMWARE]
        self.supported_commands = frozenset(supported_commands) or None
        self.last_heartbeat_time = now
        if previous is DeviceState.ONLINE:
            return None
        self.state = DeviceState.ONLINE
        self.state_change_time = now
        self.offline_alerted = False
        return StatusChange(
            replace(self), previous, DeviceState.ONLINE, StatusChangeReason.CONNECTED, now
        )

    def go_offline(
        self, session_id: str | None, now: datetime, reason: StatusChangeReason
    ) -> StatusChange | None:
        """The session ended or went silent. Ignored unless `session_id` is the device's
        current session (None: whatever session, for a device nobody holds) and it is ONLINE."""
        if self.state is not DeviceState.ONLINE:
            return None
        if session_id is not None and session_id != self.session_id:
            return None
        self.state = DeviceState.OFFLINE
        self.state_change_time = now
        self.session_id = None
        self.offline_alerted = False
        return StatusChange(
            replace(self), DeviceState.ONLINE, DeviceState.OFFLINE, reason, self.last_heartbeat_time
        )
