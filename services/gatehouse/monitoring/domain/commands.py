"""Device commands: their deadline rules and the one acknowledgement each gets."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import IntEnum

from gatehouse.monitoring.domain.alerts import Actor
from gatehouse.monitoring.domain.enums import CommandKind, CommandResult

DEFAULT_DEADLINE = timedelta(seconds=30)
MAX_DEADLINE = timedelta(minutes=10)
DEFAULT_UNLOCK = timedelta(seconds=5)
MAX_UNLOCK = timedelta(seconds=60)


class CommandState(IntEnum):
    PENDING = 1
    # Acknowledged by the device, or expired on its behalf: `device.command_acknowledged`
    # was published, and never will be again for this command.
    DONE = 2


@dataclass(slots=True)
class Command:
    id: str
    building_id: str
    device_id: str
    kind: CommandKind
    deadline: datetime
    requested_by: Actor
    create_time: datetime
    correlation_id: str = ""
    door: str = ""
    unlock_duration: timedelta | None = None
    state: CommandState = CommandState.PENDING
    result: CommandResult = CommandResult.UNSPECIFIED

    def acknowledge(self, result: CommandResult) -> bool:
        """Record the outcome; False when one was recorded already (exactly one event)."""
        if self.state is CommandState.DONE:
            return False
        self.state = CommandState.DONE
        self.result = result
        return True


def deadline_problem(deadline: datetime | None, now: datetime) -> str | None:
    if deadline is None:
        return None
    if deadline <= now:
        return "is in the past"
    if deadline - now > MAX_DEADLINE:
        return "must be at most 10 minutes from now"
    return None


def unlock_problem(kind: CommandKind, unlock: timedelta | None) -> str | None:
    if unlock is None:
        return None
    if kind is not CommandKind.OPEN_DOOR:
        return "only applies to DEVICE_COMMAND_KIND_OPEN_DOOR"
    if unlock <= timedelta(0) or unlock > MAX_UNLOCK:
        return "must be more than 0 and at most 60 seconds"
    return None
