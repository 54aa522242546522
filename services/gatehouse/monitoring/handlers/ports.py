"""The interfaces the monitoring handlers depend on; adapters implement them."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Protocol, Self

from gatehouse.monitoring.domain.alerts import Alert
from gatehouse.monitoring.domain.buildings import Building
from gatehouse.monitoring.domain.commands import Command
from gatehouse.monitoring.domain.devices import Device
from gatehouse.monitoring.domain.enums import (
    AlertRule,
    AlertState,
    DeviceKind,
    DeviceState,
    Severity,
)
from gatehouse.monitoring.domain.readings import Reading
from gatehouse.monitoring.domain.sessions import Delivery, Outbound, SessionEnd
from gatehouse.runtime.idempotency import IdempotencyRepository
from gatehouse.runtime.outbox import Outbox

# --- persistence -----------------------------------------------------------------------------


class BuildingRepository(Protocol):
    async def add(self, building: Building) -> None: ...

    async def get(self, building_id: str, *, for_update: bool = False) -> Building | None: ...

    async def update(self, building: Building) -> None: ...

    async def page(self, after: tuple[str, str] | None, limit: int) -> list[Building]:
        """Ordered by (display name, id), after the keyset position `after`."""
        ...


@dataclass(frozen=True, slots=True)
class LabelCondition:
    """One clause of a ListDevices filter: `labels.<key>` or `firmware_version` compared."""

    field: str  # `labels.<key>` or `firmware_version`
    equal: bool
    value: str


@dataclass(frozen=True, slots=True)
class DeviceQuery:
    building_id: str | None = None  # None: every building
    kind: DeviceKind | None = None
    state: DeviceState | None = None
    door: str | None = None
    conditions: tuple[LabelCondition, ...] = ()
    after: tuple[str, str] | None = None  # (display name, id)
    limit: int = 50


@dataclass(frozen=True, slots=True)
class DeviceCounts:
    online: int = 0
    offline: int = 0
    unknown: int = 0


class DeviceRepository(Protocol):
    async def add(self, device: Device, token_hash: str | None) -> None:
        """Raises `DuplicateKeyError` when the door already has a controller."""
        ...

    async def get(
        self, building_id: str, device_id: str, *, for_update: bool = False
    ) -> Device | None: ...

    async def get_by_token_hash(self, token_hash: str) -> Device | None: ...

    async def update(self, device: Device) -> None: ...

    async def search(self, query: DeviceQuery) -> list[Device]:
        """Label conditions may be applied after loading: callers over-fetch (see handler)."""
        ...

    async def record_heartbeats(self, times: Mapping[str, datetime]) -> None:
        """Set `last_heartbeat_time` of ONLINE devices (by id) where it moves forward."""
        ...

    async def silent_online(self, cutoff: datetime, limit: int) -> list[Device]:
        """ONLINE devices whose last heartbeat is older than `cutoff`."""
        ...

    async def offline_unalerted(self, limit: int) -> list[Device]:
        """OFFLINE devices whose current offline period has not raised its alert yet."""
        ...

    async def counts(self, building_id: str) -> dict[DeviceKind, DeviceCounts]: ...


@dataclass(frozen=True, slots=True)
class AlertQuery:
    building_id: str | None = None
    device: str | None = None
    states: tuple[AlertState, ...] = ()
    min_severity: Severity | None = None
    rule: AlertRule | None = None
    raised_from: datetime | None = None
    raised_before: datetime | None = None
    order: str = "raise_time desc"  # `raise_time desc`, `raise_time`, `severity desc`
    after: tuple[str, ...] | None = None  # keyset position of the order
    limit: int = 50


class AlertRepository(Protocol):
    async def add(self, alert: Alert) -> None:
        """Raises `DuplicateKeyError` when an unresolved alert of the building has the key."""
        ...

    async def get(
        self, building_id: str, alert_id: str, *, for_update: bool = False
    ) -> Alert | None: ...

    async def get_unresolved(self, building_id: str, dedup_key: str) -> Alert | None: ...

    async def update(self, alert: Alert) -> None: ...

    async def search(self, query: AlertQuery) -> list[Alert]: ...

    async def unresolved_counts(self, building_id: str) -> dict[Severity, tuple[int, int]]:
        """Per severity: (open, acknowledged)."""
        ...


class CommandRepository(Protocol):
    async def add(self, command: Command) -> None: ...

    async def get(self, command_id: str, *, for_update: bool = False) -> Command | None: ...

    async def update(self, command: Command) -> None: ...

    async def delete(self, command_id: str) -> None: ...

    async def overdue(self, now: datetime, limit: int) -> list[Command]:
        """PENDING commands whose deadline has passed."""
        ...


class ReadingRepository(Protocol):
    async def claim_batch(self, device_id: str, batch_id: str, now: datetime) -> bool:
        """Record the batch id; False when it was stored before (a retried upload)."""
        ...

    async def stored(
        self, device_id: str, metrics: Sequence[str], start: datetime, end: datetime
    ) -> set[tuple[str, datetime]]:
        """(metric, time) of stored readings of these metrics with start <= time <= end."""
        ...

    async def add_many(self, device_id: str, readings: Sequence[Reading]) -> None: ...

    async def purge_batches(self, before: datetime) -> int: ...


class DeviceMessageRepository(Protocol):
    async def claim(self, device_id: str, message_id: str, now: datetime) -> bool:
        """Record a processed message id; False when it was processed before."""
        ...

    async def purge(self, before: datetime) -> int: ...


class MonitoringUnitOfWork(Protocol):
    """One transaction over the service database; repositories are read-only attributes so
    an implementation may narrow their types."""

    @property
    def buildings(self) -> BuildingRepository: ...

    @property
    def devices(self) -> DeviceRepository: ...

    @property
    def alerts(self) -> AlertRepository: ...

    @property
    def commands(self) -> CommandRepository: ...

    @property
    def readings(self) -> ReadingRepository: ...

    @property
    def device_messages(self) -> DeviceMessageRepository: ...

    @property
    def idempotency(self) -> IdempotencyRepository: ...

    @property
    def outbox(self) -> Outbox: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...

    async def commit(self) -> None: ...

    async def rollback(self) -> None: ...


class UnitOfWorkFactory(Protocol):
    def __call__(self) -> MonitoringUnitOfWork: ...


# --- other ports -----------------------------------------------------------------------------


class Clock(Protocol):
    def __call__(self) -> datetime: ...


class Sealer(Protocol):
    """Authenticated encryption and keyed digests with the service's secret key
    (`gatehouse.runtime.secrets.KeyedSecretBox`)."""

    def seal(self, purpose: str, plaintext: bytes, associated_data: bytes = b"") -> bytes: ...

    def open(self, purpose: str, sealed: bytes, associated_data: bytes = b"") -> bytes: ...

    def digest(self, purpose: str, value: str | bytes) -> str: ...


@dataclass(frozen=True, slots=True)
class FeedHead:
    """The newest item of a building's feed."""

    event_id: str
    time: datetime


class FeedHeads(Protocol):
    async def head(self, building_id: str) -> FeedHead | None: ...


# --- device sessions -------------------------------------------------------------------------


class LiveSession(Protocol):
    """One device's live session on this replica."""

    device: str
    device_id: str
    building_id: str
    session_id: str
    queue: asyncio.Queue[Outbound]
    wakeup: asyncio.Event
    ended: asyncio.Event
    end_reason: SessionEnd | None
    error: Exception | None
    last_seen: float
    last_ping: float

    def offer(self, item: Outbound) -> bool: ...

    def end(self, reason: SessionEnd, error: Exception | None = None) -> bool: ...


class SessionDirectory(Protocol):
    """Where every device's live session is: this replica's, and the way to the others'."""

    def new_session(self, device: str, device_id: str, building_id: str) -> LiveSession: ...

    async def register(self, session: LiveSession) -> None:
        """Make it the device's live session; an older one (anywhere) ends as replaced."""
        ...

    async def unregister(self, session: LiveSession) -> None: ...

    async def touch(self, session: LiveSession) -> None:
        """A sign of life from the device."""
        ...

    def local_sessions(self) -> list[LiveSession]: ...

    async def is_live(self, device: str) -> bool: ...

    async def deliver(self, device: str, command: Command) -> Delivery: ...


class HeartbeatSink(Protocol):
    def note(self, device_id: str, time: datetime) -> None: ...

    def drain(self) -> dict[str, datetime]: ...

    def restore(self, times: dict[str, datetime]) -> None: ...


class SessionMetrics(Protocol):
    def readings_rejected(self, count: int) -> None: ...

    def readings_accepted(self, count: int) -> None: ...
