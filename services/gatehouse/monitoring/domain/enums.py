"""The contract's enumerations, by value, for code that must not import generated protobuf."""

from __future__ import annotations

from enum import IntEnum


class Severity(IntEnum):
    UNSPECIFIED = 0
    INFO = 1
    LOW = 2
    MEDIUM = 3
    HIGH = 4
    CRITICAL = 5


class DeviceKind(IntEnum):
    UNSPECIFIED = 0
    CAMERA = 1
    DOOR_CONTROLLER = 2
    SENSOR = 3


class DeviceState(IntEnum):
    UNSPECIFIED = 0
    UNKNOWN = 1
    ONLINE = 2
    OFFLINE = 3


class CredentialType(IntEnum):
    UNSPECIFIED = 0
    CERTIFICATE = 1
    TOKEN = 2


class StatusChangeReason(IntEnum):
    UNSPECIFIED = 0
    CONNECTED = 1
    DISCONNECTED = 2
    HEARTBEATS_MISSED = 3


class DeviceEventKind(IntEnum):
    UNSPECIFIED = 0
    MOTION = 1
    TAMPER = 2
    DOOR_FORCED = 3
    DOOR_HELD_OPEN = 4


class CommandKind(IntEnum):
    UNSPECIFIED = 0
    OPEN_DOOR = 1
    LOCK_DOWN = 2
    RELEASE_LOCKDOWN = 3
    REBOOT = 4
    REQUEST_SNAPSHOT = 5
    HOLD_UNLOCKED = 6
    RELOCK = 7


class CommandResult(IntEnum):
    UNSPECIFIED = 0
    SUCCEEDED = 1
    FAILED = 2
    REJECTED = 3
    EXPIRED = 4


class AlertRule(IntEnum):
    UNSPECIFIED = 0
    MANUAL = 1
    DOOR_FORCED = 2
    DOOR_HELD_OPEN = 3
    MOTION_OUTSIDE_HOURS = 4
    DEVICE_OFFLINE = 5
    TAMPER = 6


class AlertState(IntEnum):
    UNSPECIFIED = 0
    OPEN = 1
    ACKNOWLEDGED = 2
    RESOLVED = 3


class ReadingRejectionReason(IntEnum):
    UNSPECIFIED = 0
    TIME_IN_FUTURE = 1
    TIME_TOO_OLD = 2
    VALUE_NOT_FINITE = 3
    INVALID_METRIC = 4
    DUPLICATE = 5
