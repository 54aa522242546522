"""The device session protocol (ConnectDevice) in domain terms: what a device sends, what the
mesh sends back, and why a session ends."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum

from gatehouse.monitoring.domain.alerts import ObservedEvent
from gatehouse.monitoring.domain.commands import Command
from gatehouse.monitoring.domain.enums import CommandKind, CommandResult
from gatehouse.monitoring.domain.readings import Reading

# --- device -> mesh --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hello:
    firmware_version: str = ""
    device_time: datetime | None = None
    boot_time: datetime | None = None
    supported_commands: tuple[CommandKind, ...] = ()


@dataclass(frozen=True, slots=True)
class Heartbeat:
    device_time: datetime | None = None
    ping_id: str = ""


@dataclass(frozen=True, slots=True)
class ReadingsBatch:
    batch_id: str
    readings: tuple[Reading, ...]


@dataclass(frozen=True, slots=True)
class CommandAck:
    command_id: str
    result: CommandResult
    message: str = ""
    complete_time: datetime | None = None


Body = Hello | Heartbeat | ReadingsBatch | ObservedEvent | CommandAck


@dataclass(frozen=True, slots=True)
class DeviceMessage:
    name: str  # "" on later messages that leave it out
    message_id: str
    body: Body


# --- mesh -> device --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Welcome:
    session_id: str
    heartbeat_interval: timedelta
    offline_after: timedelta
    server_time: datetime
    max_readings_per_batch: int


@dataclass(frozen=True, slots=True)
class Ping:
    ping_id: str
    server_time: datetime


Outbound = Welcome | Command | Ping


class SessionEnd(Enum):
    """Why a live session ended."""

    CLOSED = "closed"  # the device half-closed or went away (cancelled the call)
    REPLACED = "replaced"  # a newer session of the same device took over
    HEARTBEAT_TIMEOUT = "heartbeat_timeout"  # silent for `offline_after`
    FAILED = "failed"  # the device broke the protocol (or we failed)
    STOPPING = "stopping"  # this replica is draining


class Delivery(Enum):
    """What became of a command handed to the session directory."""

    DELIVERED = "delivered"
    OFFLINE = "offline"  # no live session anywhere (or its holder did not answer in time)
    QUEUE_FULL = "queue_full"  # the device is not reading what it is sent
