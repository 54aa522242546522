"""What the access use cases need from the outside world, as Protocols.

Adapters implement them: SQLAlchemy repositories (adapters/repositories.py), monitoring over
gRPC for buildings, doors and door commands (adapters/monitoring.py), in-memory fakes in tests.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from gatehouse.access.domain.chain import ChainHead, Decision, EntryKind, LogEntry
from gatehouse.access.domain.emergency import Emergency
from gatehouse.access.domain.grants import Actor, Grant, GrantState
from gatehouse.access.domain.lockout import KeypadState
from gatehouse.access.domain.schedules import DoorSchedule
from gatehouse.access.domain.visitors import Visitor, VisitorState
from gatehouse.runtime.db import UnitOfWork
from gatehouse.runtime.idempotency import IdempotencyRepository
from gatehouse.runtime.outbox import Outbox

Clock = Callable[[], datetime]


# --- the database ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GrantFilter:
    holder: str = ""
    door_id: str = ""
    states: frozenset[GrantState] = frozenset()


class GrantRepository(Protocol):
    async def add(self, grant: Grant) -> None:
        """Insert; `DuplicateKeyError` if its PIN is already open in the building."""
        ...

    async def get(self, building_id: str, grant_id: str) -> Grant | None: ...

    async def with_digest(self, building_id: str, digest: str) -> list[Grant]:
        """Every grant of the building with this PIN, ended ones included."""
        ...

    async def digest_taken(self, building_id: str, digest: str, now: datetime) -> bool:
        """Whether a grant that has not ended holds this PIN (expired ones release it)."""
        ...

    async def count_use(self, grant: Grant, now: datetime) -> bool:
        """Count one use if the grant is still open and has uses left; False if it is not."""
        ...

    async def revoke(self, grant: Grant) -> bool:
        """Store `grant`'s revocation unless it was revoked already (False then)."""
        ...

    async def open_of_visitor(
        self, building_id: str, visitor_id: str, now: datetime
    ) -> list[Grant]: ...

    async def page(
        self,
        building_id: str,
        filters: GrantFilter,
        after: tuple[datetime, str] | None,
        limit: int,
        now: datetime,
    ) -> list[Grant]:
        """Newest first, keyset-paged by (create_time, id)."""
        ...


@dataclass(frozen=True, slots=True)
class VisitorFilter:
    host: str = ""
    states: frozenset[VisitorState] = frozenset()
    arrival_from: datetime | None = None
    arrival_until: datetime | None = None


class VisitorRepository(Protocol):
    async def add(self, visitor: Visitor) -> None: ...

    async def get(self, building_id: str, visitor_id: str) -> Visitor | None: ...

    async def with_code(self, building_id: str, code_digest: str) -> Visitor | None: ...

    async def update(self, visitor: Visitor) -> None: ...

    async def page(
        self,
        building_id: str,
        filters: VisitorFilter,
        after: tuple[datetime, str] | None,
        limit: int,
        now: datetime,
    ) -> list[Visitor]:
        """By expected arrival, earliest first, keyset-paged by (arrival, id)."""
        ...


class DoorScheduleRepository(Protocol):
    async def get(self, building_id: str, door_id: str) -> DoorSchedule | None: ...

    async def put(self, schedule: DoorSchedule, previous_etag: str | None) -> bool:
        """Insert or replace; with `previous_etag`, only if the stored one still has it."""
        ...

    async def tracked(self) -> list[DoorSchedule]:
        """Schedules in business-hours mode, and any whose door is held unlocked."""
        ...

    async def mark_held(self, building_id: str, door_id: str, held: bool) -> bool:
        """Record the controller's state; False if it was already recorded so."""
        ...


class EmergencyRepository(Protocol):
    async def get(self, building_id: str) -> Emergency | None: ...

    async def put(self, emergency: Emergency) -> None: ...


class KeypadRepository(Protocol):
    async def get(self, building_id: str, door_id: str) -> KeypadState: ...

    async def put(self, state: KeypadState) -> None: ...


@dataclass(frozen=True, slots=True)
class LogFilter:
    door_id: str = ""
    holder: str = ""
    decision: Decision | None = None
    kinds: frozenset[EntryKind] = frozenset()
    time_from: datetime | None = None
    time_until: datetime | None = None


class AccessLogRepository(Protocol):
    async def lock_head(self, building_id: str) -> ChainHead:
        """The building's chain head, locked until the transaction ends (created if new)."""
        ...

    async def head(self, building_id: str) -> ChainHead | None:
        """Without locking."""
        ...

    async def append(self, entry: LogEntry, head: ChainHead) -> None:
        """Insert `entry` and move the head to it."""
        ...

    async def by_event_id(self, event_id: str) -> LogEntry | None: ...

    async def range(self, building_id: str, start: int, end: int, limit: int) -> list[LogEntry]:
        """Entries with start <= sequence <= end, ascending."""
        ...

    async def at(self, building_id: str, sequence: int) -> LogEntry | None: ...

    async def page(
        self,
        building_id: str,
        filters: LogFilter,
        after: int | None,
        limit: int,
        *,
        descending: bool,
    ) -> list[LogEntry]: ...


class AccessUnitOfWork(UnitOfWork, Protocol):
    grants: GrantRepository
    visitors: VisitorRepository
    schedules: DoorScheduleRepository
    emergencies: EmergencyRepository
    keypads: KeypadRepository
    log: AccessLogRepository
    idempotency: IdempotencyRepository
    outbox: Outbox


UnitOfWorkFactory = Callable[[], AccessUnitOfWork]


# --- monitoring: buildings, doors, door controllers ------------------------------------------


class DirectoryUnavailableError(Exception):
    """Monitoring could not be asked (down, overloaded, refused us)."""


@dataclass(frozen=True, slots=True)
class BuildingInfo:
    building_id: str
    time_zone: str


@dataclass(frozen=True, slots=True)
class DoorInfo:
    building_id: str
    door_id: str
    # The door's controller, `buildings/{building}/devices/{device}`.
    controller: str


class Directory(Protocol):
    """Buildings and their doors, as monitoring knows them: a door exists when a door
    controller is registered for it."""

    async def building(self, building_id: str) -> BuildingInfo | None: ...

    async def door(self, building_id: str, door_id: str) -> DoorInfo | None: ...

    async def doors(self, building_id: str) -> list[DoorInfo]: ...


class People(Protocol):
    """Users known to auth."""

    async def exists(self, user: str) -> bool: ...


class AnyPerson:
    """Takes every well-formed `users/{id}` as a known user.

    Auth owns users; asking it needs the `auth.users.read` service grant, which access does
    not hold yet (see the access report).
    """

    async def exists(self, user: str) -> bool:
        return True


# --- door commands ---------------------------------------------------------------------------


class CommandKind(enum.IntEnum):
    """Numbered like monitoring's DeviceCommandKind."""

    OPEN_DOOR = 1
    LOCK_DOWN = 2
    RELEASE_LOCKDOWN = 3
    HOLD_UNLOCKED = 6
    RELOCK = 7


class CommandOutcome(enum.Enum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class CommandAck:
    command_id: str
    outcome: CommandOutcome
    message: str
    complete_time: datetime | None


class DeviceOfflineError(Exception):
    """The controller has no live session: the command was not delivered."""


class CommandRefusedError(Exception):
    """Monitoring refused the command (unsupported, unknown device); never delivered."""


class AckTimeoutError(Exception):
    """Sent, but no acknowledgement arrived in time."""


class DoorCommands(Protocol):
    async def execute(
        self,
        controller: str,
        kind: CommandKind,
        *,
        request_id: str,
        timeout: timedelta,
        unlock_duration: timedelta | None = None,
        requested_by: Actor | None = None,
    ) -> CommandAck:
        """Send and wait for the acknowledgement. Raises DeviceOfflineError,
        CommandRefusedError, AckTimeoutError or DirectoryUnavailableError."""
        ...

    async def send(self, controller: str, kind: CommandKind, *, request_id: str) -> str:
        """Send without waiting (emergencies fan out); returns the command id."""
        ...
