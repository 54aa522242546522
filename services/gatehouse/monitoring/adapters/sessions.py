"""Live device sessions across replicas.

Each replica holds its own sessions in memory (`LocalSession`: a bounded queue of what to send
down, and how it ended). Which replica holds a device's session is shared through the
key-value store (`monitoring:session:<device>` -> replica and session id, with a TTL the
heartbeats keep fresh), so any replica can route a command: to its own session directly, or
through the event bus to the holder's inbox stream (`monitoring.sessions.<replica>`), which
answers with a receipt on the sender's inbox. A replica that took over a device's session
tells the previous holder the same way, so the older stream ends with SESSION_REPLACED.

In embedded mode the store and bus are in-process and every session is local; with Redis
the same code routes between replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from google.protobuf import json_format, struct_pb2

from gatehouse.events.v1.envelope_pb2 import Event
from gatehouse.monitoring.adapters import records
from gatehouse.monitoring.domain.alerts import Actor
from gatehouse.monitoring.domain.commands import Command, CommandState
from gatehouse.monitoring.domain.enums import CommandKind, CommandResult
from gatehouse.monitoring.domain.sessions import Delivery, Outbound, SessionEnd
from gatehouse.monitoring.handlers.ports import LiveSession
from gatehouse.runtime.bus import EventBus, EventBusClosedError, StalePositionError
from gatehouse.runtime.errors import DomainError
from gatehouse.runtime.events import new_event
from gatehouse.runtime.ids import new_ulid
from gatehouse.runtime.kv import KeyValueStore

log = logging.getLogger("gatehouse.monitoring.sessions")

SESSION_KEY_PREFIX = "monitoring:session:"
INBOX_PREFIX = "monitoring.sessions."
_COMMAND = "session.command"
_RECEIPT = "session.receipt"
_REPLACED = "session.replaced"
_SOURCE = "monitoring"
_INBOX_BLOCK = timedelta(seconds=2)


@dataclass(eq=False)
class LocalSession:
    """One device's live session on this replica."""

    device: str
    device_id: str
    building_id: str
    session_id: str
    queue: asyncio.Queue[Outbound]
    last_seen: float
    # Set whenever there is something for the sender to look at: an item, or the end.
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    end_reason: SessionEnd | None = None
    error: Exception | None = None
    last_ping: float = 0.0

    def offer(self, item: Outbound) -> bool:
        if self.ended.is_set():
            return False
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            return False
        self.wakeup.set()
        return True

    def end(self, reason: SessionEnd, error: Exception | None = None) -> bool:
        """End the session (first reason wins); True if this call ended it."""
        if self.ended.is_set():
            return False
        self.end_reason = reason
        self.error = error
        self.ended.set()
        self.wakeup.set()
        return True


@dataclass(frozen=True, slots=True)
class _Record:
    replica: str
    session_id: str

    def encode(self) -> bytes:
        return json.dumps({"r": self.replica, "s": self.session_id}).encode()

    @classmethod
    def decode(cls, raw: bytes | None) -> _Record | None:
        if raw is None:
            return None
        try:
            data = json.loads(raw)
            return cls(str(data["r"]), str(data["s"]))
        except (ValueError, KeyError, TypeError):
            return None


def _struct(values: Mapping[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(dict(values))
    return message


def command_to_dict(command: Command) -> dict[str, Any]:
    return {
        "id": command.id,
        "building_id": command.building_id,
        "device_id": command.device_id,
        "kind": int(command.kind),
        "deadline": command.deadline.isoformat(),
        "requested_by": records.actor_to_json(command.requested_by),
        "create_time": command.create_time.isoformat(),
        "correlation_id": command.correlation_id,
        "door": command.door,
        "unlock_ms": None
        if command.unlock_duration is None
        else int(command.unlock_duration.total_seconds() * 1000),
    }


def command_from_dict(data: Mapping[str, Any]) -> Command:
    unlock = data.get("unlock_ms")
    return Command(
        id=str(data["id"]),
        building_id=str(data["building_id"]),
        device_id=str(data["device_id"]),
        kind=CommandKind(int(data["kind"])),
        deadline=datetime.fromisoformat(str(data["deadline"])),
        requested_by=records.actor_from_json(data.get("requested_by")) or Actor(),
        create_time=datetime.fromisoformat(str(data["create_time"])),
        correlation_id=str(data.get("correlation_id", "")),
        door=str(data.get("door", "")),
        unlock_duration=None if unlock is None else timedelta(milliseconds=int(unlock)),
        state=CommandState.PENDING,
        result=CommandResult.UNSPECIFIED,
    )


class SessionHub:
    """This replica's sessions, and the way to everyone else's (module doc)."""

    def __init__(
        self,
        kv: KeyValueStore,
        bus: EventBus,
        *,
        session_ttl: timedelta,
        refresh_every: timedelta,
        receipt_timeout: timedelta,
        queue_size: int,
        replaced_error: Callable[[], DomainError],
        replica_id: str | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.replica_id = replica_id or new_ulid().lower()
        self._kv = kv
        self._bus = bus
        self._ttl = session_ttl
        self._refresh_every = refresh_every.total_seconds()
        self._receipt_timeout = receipt_timeout.total_seconds()
        self._queue_size = queue_size
        self._monotonic = monotonic
        self._replaced_error = replaced_error
        self._local: dict[str, LiveSession] = {}
        self._receipts: dict[str, asyncio.Future[bool]] = {}
        # When each local session last rewrote its shared record (session id -> monotonic).
        self._refreshed: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None
        self._position: str | None = None

    @property
    def inbox(self) -> str:
        return INBOX_PREFIX + self.replica_id

    # -- lifecycle --

    async def start(self) -> None:
        if self._task is not None:
            return
        self._position = await self._bus.latest_position(self.inbox)
        self._task = asyncio.create_task(self._read_inbox(), name="monitoring-session-inbox")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for future in self._receipts.values():
            if not future.done():
                future.set_result(False)

    # -- this replica's sessions --

    def new_session(self, device: str, device_id: str, building_id: str) -> LiveSession:
        return LocalSession(
            device=device,
            device_id=device_id,
            building_id=building_id,
            session_id=new_ulid(),
            queue=asyncio.Queue(self._queue_size),
            last_seen=self._monotonic(),
        )

    def local_sessions(self) -> list[LiveSession]:
        return list(self._local.values())

    def local(self, device: str) -> LiveSession | None:
        return self._local.get(device)

    async def register(self, session: LiveSession) -> None:
        """Make `session` the device's live session; an older one (here or elsewhere) ends
        as replaced."""
        older = self._local.get(session.device)
        if older is not None and older is not session:
            older.end(SessionEnd.REPLACED, self._replaced_error())
        self._local[session.device] = session
        key = SESSION_KEY_PREFIX + session.device
        previous = _Record.decode(await self._kv.get(key))
        await self._kv.set(key, _Record(self.replica_id, session.session_id).encode(), self._ttl)
        self._refreshed[session.session_id] = self._monotonic()
        if previous is not None and previous.replica != self.replica_id:
            await self._publish(
                INBOX_PREFIX + previous.replica,
                _REPLACED,
                session.device,
                {"session_id": previous.session_id},
            )

    async def unregister(self, session: LiveSession) -> None:
        self._refreshed.pop(session.session_id, None)
        if self._local.get(session.device) is session:
            del self._local[session.device]
        key = SESSION_KEY_PREFIX + session.device
        record = _Record.decode(await self._kv.get(key))
        # Only our own record: a newer session elsewhere must keep its entry. (A newer one
        # written between the get and the delete heals at its next heartbeat refresh.)
        if record is not None and record.session_id == session.session_id:
            await self._kv.delete(key)

    async def touch(self, session: LiveSession) -> None:
        """A sign of life: remember it, and keep the shared record alive (coalesced)."""
        now = self._monotonic()
        session.last_seen = now
        refreshed = self._refreshed.get(session.session_id, 0.0)
        if now - refreshed >= self._refresh_every:
            self._refreshed[session.session_id] = now
            await self._kv.set(
                SESSION_KEY_PREFIX + session.device,
                _Record(self.replica_id, session.session_id).encode(),
                self._ttl,
            )

    # -- any replica's sessions --

    async def is_live(self, device: str) -> bool:
        if device in self._local:
            return True
        record = _Record.decode(await self._kv.get(SESSION_KEY_PREFIX + device))
        return record is not None and record.replica != self.replica_id

    async def deliver(self, device: str, command: Command) -> Delivery:
        """Hand `command` to the device's live session, wherever it is; never waits longer
        than the receipt timeout."""
        session = self._local.get(device)
        if session is not None:
            return Delivery.DELIVERED if session.offer(command) else Delivery.QUEUE_FULL
        record = _Record.decode(await self._kv.get(SESSION_KEY_PREFIX + device))
        if record is None or record.replica == self.replica_id:
            # Our own stale record: the session ended here and nobody took over.
            return Delivery.OFFLINE
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._receipts[command.id] = future
        try:
            await self._publish(
                INBOX_PREFIX + record.replica,
                _COMMAND,
                device,
                {"reply_to": self.inbox, "command": command_to_dict(command)},
                correlation_id=command.id,
            )
            async with asyncio.timeout(self._receipt_timeout):
                delivered = await future
        except TimeoutError:
            log.warning("no receipt from replica %s for a command to %s", record.replica, device)
            return Delivery.OFFLINE
        finally:
            self._receipts.pop(command.id, None)
        return Delivery.DELIVERED if delivered else Delivery.OFFLINE

    # -- the inbox --

    async def _publish(
        self,
        stream: str,
        kind: str,
        device: str,
        data: Mapping[str, Any],
        *,
        correlation_id: str | None = None,
    ) -> None:
        event = new_event(
            kind,
            source=_SOURCE,
            subject=device,
            data=_struct(data),
            correlation_id=correlation_id,
        )
        await self._bus.publish(stream, event)

    async def _read_inbox(self) -> None:
        delay = 0.05
        while True:
            try:
                entries = await self._bus.read(
                    self.inbox, after=self._position, count=100, block=_INBOX_BLOCK
                )
            except asyncio.CancelledError:
                raise
            except EventBusClosedError:
                return
            except StalePositionError:
                self._position = await self._bus.latest_position(self.inbox)
                continue
            except Exception as error:
                log.warning("reading the session inbox failed: %r", error)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            delay = 0.05
            for position, event in entries:
                self._position = position
                try:
                    await self._handle(event)
                except Exception:
                    log.exception("bad session inbox message %s", event.id)

    async def _handle(self, event: Event) -> None:
        data = struct_pb2.Struct()
        if not event.data.Unpack(data):
            return
        values = json_format.MessageToDict(data)
        if event.type == _RECEIPT:
            future = self._receipts.get(event.correlation_id)
            if future is not None and not future.done():
                future.set_result(bool(values.get("delivered")))
        elif event.type == _REPLACED:
            session = self._local.get(event.subject)
            if session is not None and session.session_id == values.get("session_id"):
                session.end(SessionEnd.REPLACED, self._replaced_error())
        elif event.type == _COMMAND:
            command = command_from_dict(values["command"])
            session = self._local.get(event.subject)
            delivered = session is not None and session.offer(command)
            await self._publish(
                str(values["reply_to"]),
                _RECEIPT,
                event.subject,
                {"delivered": delivered},
                correlation_id=event.correlation_id,
            )
