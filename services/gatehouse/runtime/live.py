"""Live event streams: what the streaming RPCs (`StreamEvents`, `WatchAccessLog`,
`WatchPayment`, `WatchDeliveries`) subscribe to (ARCHITECTURE §8).

One `LiveHub` per process and bus, built by a composition root, started and stopped with the
servers. Handlers depend on the `LiveSource` protocol:

    subscription = await live.subscribe(
        ["events.alert", "events.device"],
        filter=lambda event: event.subject.startswith(building),
        resume_after=request.resume_after or None,
        stopping=lifecycle.stopping,
    )
    async with subscription:
        async for item in subscription:
            yield to_response(item)  # a LiveItem (event) or a LiveHeartbeat (idle stream)

Errors are domain errors, raised by `subscribe` (before anything is sent) or by the iteration:
`InvalidArgument` `UNKNOWN_RESUME_POINT` (malformed or unknown `resume_after`),
`FailedPrecondition` `RESUME_POINT_UNAVAILABLE` (history after it is no longer retained),
`ResourceExhausted` `STREAM_BUFFER_OVERFLOW` (or the reason the RPC's contract names) with
RetryInfo and the resume point in its metadata, `Unavailable` `EVENT_BUS_UNAVAILABLE` /
`SHUTTING_DOWN`. When the server drains (`stopping` set) the iteration simply ends and
`subscription.ended_by` says why, so the handler can end OK or answer UNAVAILABLE with
`subscription.resume_metadata()`, as its contract says.

## Fan-out
Each bus stream the process follows has ONE reader task: a blocking `read` in batches, its
position kept in memory, each batch handed synchronously to every subscriber of the stream.
A blocking read holds a pooled Redis connection while it waits, so N subscribers cost one
connection, not N. A reader starts with its first subscriber and ends soon after its last.
The events are shared between subscribers: treat them as read-only.

## Bounded memory
The hub holds no queue of its own: a reader holds one batch at a time, and each subscriber
has a bounded buffer of matching events not yet taken. A subscriber whose buffer is full when
the next event arrives is cut off at once with RESOURCE_EXHAUSTED; its buffer is dropped (the
client resumes from the last event it received, and replay sends the rest again). Replay is
pulled by the consumer, so it can never overflow anything. `LiveHub.stats()` shows the sizes.

## Resume
Clients see event ids, never bus positions, so `resume_after` is an event id (or, see below,
a cursor token). Positions are what make the seam exact:

1. Locating. A single-stream subscription finds the id's position in this hub's bounded
   id -> position index (ids its readers saw recently) or else by scanning the stream's
   retained history from the oldest entry; another replica finds it the same way, since the
   bus is all it shares. The first occurrence wins: a relay that re-published an event after
   a crash may have put it on the bus twice, and resuming from the later copy would skip what
   lies between. Not retained -> `FailedPrecondition`; never existed -> `InvalidArgument`
   (told apart by the ULID's time against the oldest retained event).
2. Replay. The subscription reads the bus itself from that position (pulled by the
   consumer, one batch at a time, at most its free buffer space), filtering as it goes.
3. Seam. Positions are compared for equality only (they are opaque). After each replay
   batch the subscription looks for the reader's current position in it: if present, it keeps
   the batch up to that position and joins the reader's fan-out, which continues exactly after
   it. If the replay reached the end of the stream without meeting the reader, the reader is
   behind; the subscription joins it in a waiting state and the reader skips for it until it
   passes the replay's last position. Both checks happen with no await in between, in the one
   event loop the reader dispatches from, so nothing arriving during the replay is lost or
   sent twice.

Merged streams. A subscription over several streams delivers each stream in its own order;
how they interleave depends on when each reader got its batch, which only the process that
served the stream knows. A plain event id therefore cannot say how far the *other* streams had
got: that needs an order across streams, which the bus does not record (positions are per
stream; ids are only as ordered as the producers' clocks and relays). So:

- Exact, on any replica: the cursor token (`Subscription.cursor`, `LiveHeartbeat.cursor`, and
  `resume_cursor` in the metadata of a cut-off subscription). It holds the position reached in
  every stream (`lc1.` + base64url JSON, never a valid event id) and any hub on the same bus
  accepts it as `resume_after`.
- A plain event id, because the contracts say clients send the last id they saw: its own
  stream resumes exactly (by position, as above); every other stream resumes at its first
  retained event not older than `merged_resume_window` (10 s) before the id (by ULID time). No
  gap as long as no event took longer than that window from its commit to this hub's reader (a
  relay catching up after an outage can), at the price of sending again, with the same ids,
  matching events of that window the client may already have; clients drop them by id, like
  every consumer (§7).
  Feeds that need exact plain-id resume over several event families should be ONE bus stream
  (a projection republishing them, such as a building feed), i.e. a single-stream subscription.

Heartbeats carry, besides the cursor, the id of the newest event the subscription has *passed*
(delivered or filtered out): with a selective filter the last delivered event can be long gone
from the bus, while resuming from a recent filtered one is just as exact.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import random
import re
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from types import TracebackType
from typing import Protocol, TypeVar

from google.protobuf import timestamp_pb2

from gatehouse.common.v1.common_pb2 import Heartbeat
from gatehouse.events.v1.envelope_pb2 import Event
from gatehouse.runtime.bus import (
    EventBus,
    EventBusClosedError,
    MalformedEntryError,
    StalePositionError,
)
from gatehouse.runtime.errors import (
    DomainError,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
)

log = logging.getLogger("gatehouse.live")

T = TypeVar("T")

DEFAULT_BUFFER_SIZE = 1000
RESUME_FIELD = "resume_after"
# Reasons (ErrorInfo). The overflow reason can be overridden per subscription because the
# RPC contracts name it differently (`STREAM_BUFFER_OVERFLOW`, `SUBSCRIBER_TOO_SLOW`).
STREAM_BUFFER_OVERFLOW = "STREAM_BUFFER_OVERFLOW"
RESUME_POINT_UNAVAILABLE = "RESUME_POINT_UNAVAILABLE"
UNKNOWN_RESUME_POINT = "UNKNOWN_RESUME_POINT"
EVENT_BUS_UNAVAILABLE = "EVENT_BUS_UNAVAILABLE"
SHUTTING_DOWN = "SHUTTING_DOWN"
# Keys of the resume metadata (ErrorInfo metadata of a cut-off subscription).
META_LAST_EVENT_ID = "last_event_id"
META_RESUME_CURSOR = "resume_cursor"

_CURSOR_PREFIX = "lc1."
_MAX_RESUME_CHARS = 4096
_MAX_EVENT_ID_CHARS = 256
# Crockford base32, 26 characters, first one <= 7 (48-bit time): the ULID text form.
_ULID = re.compile(r"[0-7][0-9A-HJKMNP-TV-Z]{25}", re.IGNORECASE)
# How often a scan may restart because trimming overtook it before giving up.
_SCAN_ATTEMPTS = 3

EventFilter = Callable[[Event], bool]


def _match_all(_event: Event) -> bool:
    return True


@dataclass(frozen=True, slots=True, kw_only=True)
class LiveHubOptions:
    """Tuning. The defaults suit production; tests shrink the intervals."""

    # Events per reader read. Per-message cost dominates small events (BENCH-NOTES): big batches.
    read_batch: int = 500
    # How long one reader read blocks. Also how long a reader lingers after its last subscriber.
    read_block: timedelta = timedelta(seconds=2)
    # Events per replay read, further capped by the subscriber's free buffer space.
    replay_batch: int = 500
    # Events per read while scanning history for a resume id.
    scan_batch: int = 1000
    # A heartbeat is sent when nothing was delivered for this long (proxies drop idle streams).
    heartbeat_interval: timedelta = timedelta(seconds=15)
    # Told to a cut-off subscriber: the replay on reconnect catches it up without overflowing.
    overflow_retry_after: timedelta = timedelta(seconds=1)
    # Ids remembered per stream for resuming without a scan (about 170 bytes each); older ids
    # are found by scanning the retained history instead.
    resume_index_size: int = 2048
    # Resuming a merged subscription from a plain event id: how much earlier (by ULID time)
    # the other streams start again (see the module doc). Larger: fewer gaps, more repeats.
    merged_resume_window: timedelta = timedelta(seconds=10)
    # Reader retries after a bus failure, doubling from min to max, with jitter.
    retry_min: timedelta = timedelta(milliseconds=50)
    retry_max: timedelta = timedelta(seconds=5)

    def __post_init__(self) -> None:
        for name in ("read_batch", "replay_batch", "scan_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.resume_index_size < 0:
            raise ValueError("resume_index_size must be >= 0")
        for name in ("read_block", "heartbeat_interval", "retry_min", "retry_max"):
            if getattr(self, name) <= timedelta(0):
                raise ValueError(f"{name} must be positive")
        if self.merged_resume_window < timedelta(0):
            raise ValueError("merged_resume_window must not be negative")


@dataclass(frozen=True, slots=True)
class LiveItem:
    """One event delivered on a subscription. `position` is the bus position (internal)."""

    stream: str
    position: str
    event: Event

    @property
    def event_id(self) -> str:
        return self.event.id


@dataclass(frozen=True, slots=True)
class LiveHeartbeat:
    """Sent when the subscription was idle for its heartbeat interval.

    `last_event_id` is the newest event the subscription passed, delivered or filtered out (a
    resume point, see the module doc); `last_delivered_id` the last one actually delivered;
    `cursor` the exact resume token. Any of them may be empty before the first event.
    """

    time: datetime
    last_event_id: str
    last_delivered_id: str
    cursor: str

    def to_proto(self) -> Heartbeat:
        stamp = timestamp_pb2.Timestamp()
        stamp.FromDatetime(self.time)
        return Heartbeat(time=stamp, last_event_id=self.last_event_id)


LiveMessage = LiveItem | LiveHeartbeat


class EndReason(Enum):
    """Why a subscription ended without an error."""

    CLOSED = "closed"  # the consumer closed it or went away
    STOPPING = "stopping"  # the server is draining (the subscription's `stopping` was set)
    HUB_STOPPED = "hub_stopped"  # the hub was stopped
    BUS_CLOSED = "bus_closed"  # the event bus was closed under it


@dataclass(frozen=True, slots=True)
class LiveHubStats:
    """Sizes for tests, metrics and the memory benchmark."""

    subscriptions: int
    readers: int
    # Events waiting in subscriber buffers now, and the most ever at once (hub-wide).
    buffered: int
    buffered_high_water: int
    # The most ever waiting in any single subscriber's buffer.
    largest_buffer_high_water: int
    # The most events a reader ever held at once (one batch).
    read_batch_high_water: int


class LiveSubscription(Protocol):
    """What a streaming handler iterates."""

    def __aiter__(self) -> LiveSubscription: ...

    async def __anext__(self) -> LiveMessage: ...

    async def aclose(self) -> None: ...

    @property
    def ended_by(self) -> EndReason | None: ...

    @property
    def last_event_id(self) -> str: ...

    @property
    def cursor(self) -> str: ...

    def resume_metadata(self) -> dict[str, str]: ...


class LiveSource(Protocol):
    """The seam between streaming handlers and the hub (fakes implement this in tests)."""

    async def subscribe(
        self,
        streams: Sequence[str],
        *,
        filter: EventFilter | None = None,
        resume_after: str | None = None,
        buffer_size: int = DEFAULT_BUFFER_SIZE,
        stopping: asyncio.Event | None = None,
        heartbeat_interval: timedelta | None = None,
        overflow_reason: str = STREAM_BUFFER_OVERFLOW,
    ) -> LiveSubscription: ...


# --- cursor tokens ---------------------------------------------------------------------------


def encode_cursor(positions: Mapping[str, str | None], last_event_id: str = "") -> str:
    """An opaque resume token for `positions` (stream -> last position passed, None = before
    the oldest retained event). The dot keeps it apart from any event id."""
    body = {"p": dict(sorted(positions.items())), "i": last_event_id}
    raw = json.dumps(body, separators=(",", ":")).encode()
    return _CURSOR_PREFIX + base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _decode_cursor(token: str) -> tuple[dict[str, str | None], str]:
    """`(positions, last_event_id)`; raises ValueError for anything that is not our token."""
    payload = token.removeprefix(_CURSOR_PREFIX)
    try:
        raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        body = json.loads(raw)
    except (binascii.Error, ValueError) as error:
        raise ValueError("not a cursor token") from error
    if not isinstance(body, dict):
        raise ValueError("not a cursor token")
    positions, last_id = body.get("p"), body.get("i", "")
    if not isinstance(positions, dict) or not isinstance(last_id, str):
        raise ValueError("not a cursor token")
    decoded: dict[str, str | None] = {}
    for stream, position in positions.items():
        if not isinstance(stream, str) or not (position is None or isinstance(position, str)):
            raise ValueError("not a cursor token")
        decoded[stream] = position
    return decoded, last_id


def is_cursor(resume_after: str) -> bool:
    return resume_after.startswith(_CURSOR_PREFIX)


# --- reading ---------------------------------------------------------------------------------

# (position, item); item None for an entry that is not an Event (skipped, but it has a position
# the seam must be able to meet).
_Entry = tuple[str, LiveItem | None]


async def _read_entries(
    bus: EventBus, stream: str, after: str | None, count: int, block: timedelta | None = None
) -> list[_Entry]:
    """`bus.read` that steps over foreign entries instead of failing the whole batch on one."""
    try:
        batch = await bus.read(stream, after=after, count=count, block=block)
    except MalformedEntryError:
        # The entries before the bad one were read but not returned: fetch them one at a time
        # (rare, so the cost does not matter), then step over it.
        entries: list[_Entry] = []
        cursor = after
        while len(entries) < count:
            try:
                one = await bus.read(stream, after=cursor, count=1)
            except MalformedEntryError as error:
                log.warning("skipping a foreign entry in %s at %s", stream, error.position)
                entries.append((error.position, None))
                return entries
            if not one:
                break
            position, event = one[0]
            entries.append((position, LiveItem(stream, position, event)))
            cursor = position
        return entries
    return [(position, LiveItem(stream, position, event)) for position, event in batch]


# --- subscriptions ---------------------------------------------------------------------------


class _Mode(Enum):
    REPLAY = "replay"  # reads history itself until it meets the reader
    WAIT = "wait"  # joined a reader that is behind; skips until `position` passes by
    LIVE = "live"  # fed by the reader


class _Lane:
    """One subscription's progress in one stream."""

    __slots__ = ("event_id", "mode", "position", "reader", "stream", "sub")

    def __init__(
        self,
        sub: _SubscriptionState,
        reader: _StreamReader,
        mode: _Mode,
        position: str | None,
        event_id: str,
    ) -> None:
        self.sub = sub
        self.reader = reader
        self.stream = reader.stream
        self.mode = mode
        # The last position passed (delivered into the buffer or filtered out); None = before
        # the oldest retained event. In WAIT mode: where the replay stopped.
        self.position = position
        # The id of the newest event passed ("" when unknown).
        self.event_id = event_id


class _SubscriptionState:
    """Everything about one subscription. The hub holds this, never the `Subscription`, so
    dropping the `Subscription` lets its finalizer remove it."""

    def __init__(
        self,
        hub: LiveHub,
        *,
        filter: EventFilter,
        buffer_size: int,
        stopping: asyncio.Event | None,
        heartbeat_interval: float,
        overflow_reason: str,
        start: Mapping[str, str | None],
        last_delivered_id: str,
    ) -> None:
        self.hub = hub
        self.filter = filter
        self.buffer_size = buffer_size
        self.stopping = stopping
        self.heartbeat_interval = heartbeat_interval
        self.overflow_reason = overflow_reason
        self.lanes: list[_Lane] = []
        self.replaying: deque[_Lane] = deque()
        self.buffer: deque[LiveItem] = deque()
        self.high_water = 0
        self.wakeup = asyncio.Event()
        self.error: BaseException | None = None
        self.done = False
        self.ended_by: EndReason | None = None
        # Per stream, the position of the last event handed to the consumer (or where the
        # subscription started): what an exact resume continues after.
        self.delivered: dict[str, str | None] = dict(start)
        self.last_delivered_id = last_delivered_id
        self.last_activity = asyncio.get_running_loop().time()

    # Called by readers, synchronously, for each batch of a LIVE or WAIT lane.
    def offer(self, lane: _Lane, entries: list[_Entry], last_id: str) -> None:
        start = 0
        if lane.mode is _Mode.WAIT:
            for index, (position, _) in enumerate(entries):
                if position == lane.position:
                    start = index + 1
                    break
            else:
                return  # all before the point the replay reached: delivered already
            lane.mode = _Mode.LIVE
        buffer = self.buffer
        added = 0
        for index in range(start, len(entries)):
            item = entries[index][1]
            if item is None:
                continue
            try:
                wanted = self.filter(item.event)
            except Exception as error:
                self.hub.note_buffered(added, self)
                self.fail(error)
                return
            if not wanted:
                continue
            if len(buffer) >= self.buffer_size:
                self.hub.note_buffered(added, self)
                self.overflow()
                return
            buffer.append(item)
            added += 1
        lane.position = entries[-1][0]
        if last_id:
            lane.event_id = last_id
        if added:
            self.hub.note_buffered(added, self)
            self.wakeup.set()

    def overflow(self) -> None:
        retry = self.hub.options.overflow_retry_after
        self.fail(
            ResourceExhausted(
                "the stream consumer fell behind and its buffer is full; reconnect with "
                f"{RESUME_FIELD} set to the last event id received",
                retry_after=retry,
                reason=self.overflow_reason,
                metadata=self.resume_metadata(),
            )
        )

    def resume_metadata(self) -> dict[str, str]:
        return {
            META_LAST_EVENT_ID: self.last_delivered_id,
            META_RESUME_CURSOR: encode_cursor(self.delivered, self.last_delivered_id),
        }

    def fail(self, error: BaseException) -> None:
        if self.done:
            return
        self.error = error
        self._finish(None)

    def end(self, reason: EndReason) -> None:
        if not self.done:
            self._finish(reason)

    def _finish(self, reason: EndReason | None) -> None:
        self.done = True
        self.ended_by = reason
        # Free the memory now, not when the consumer next looks: a consumer that stopped
        # reading may never look again.
        self.hub.note_taken(len(self.buffer))
        self.buffer.clear()
        self.replaying.clear()
        for lane in self.lanes:
            lane.reader.detach(lane)
        self.hub.forget(self)
        self.wakeup.set()

    def go_live(self, lane: _Lane, mode: _Mode) -> None:
        self.replaying.remove(lane)
        lane.mode = mode
        lane.reader.replaying.discard(lane)
        lane.reader.lanes.add(lane)

    def demote(self, lane: _Lane) -> None:
        """Back to replaying from the lane's own position (its reader had to jump ahead)."""
        lane.reader.lanes.discard(lane)
        lane.reader.replaying.add(lane)
        lane.mode = _Mode.REPLAY
        self.replaying.append(lane)
        self.wakeup.set()

    def cursor(self) -> str:
        return encode_cursor(self.delivered, self.last_delivered_id)

    async def next(self) -> LiveMessage:
        loop = asyncio.get_running_loop()
        while True:
            if self.error is not None:
                error, self.error = self.error, None
                raise error
            if self.done:
                raise StopAsyncIteration
            # Before the buffer: a busy stream must still end promptly when the server drains
            # (the client resumes from the last event it received).
            if self.stopping is not None and self.stopping.is_set():
                self.end(EndReason.STOPPING)
                continue
            # Replay is pulled, and read ahead while the buffer is at most half full, so the
            # consumer rarely waits on a read and the buffer can never overflow from it.
            if self.replaying and len(self.buffer) <= self.buffer_size // 2:
                await self._replay_step()
                if self.done or not self.buffer:
                    if self._heartbeat_due(loop.time()):
                        return self._heartbeat(loop.time())
                    continue
            if self.buffer:
                item = self.buffer.popleft()
                self.hub.note_taken(1)
                self.delivered[item.stream] = item.position
                self.last_delivered_id = item.event.id
                self.last_activity = loop.time()
                return item
            remaining = self.last_activity + self.heartbeat_interval - loop.time()
            if remaining <= 0:
                return self._heartbeat(loop.time())
            self.wakeup.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self.wakeup.wait()
            except TimeoutError:
                pass

    def _heartbeat_due(self, now: float) -> bool:
        return not self.done and now - self.last_activity >= self.heartbeat_interval

    def _heartbeat(self, now: float) -> LiveHeartbeat:
        # Only sent with an empty buffer: everything passed so far was delivered or filtered
        # out, so the resume point may move up to where every lane got to.
        for lane in self.lanes:
            self.delivered[lane.stream] = lane.position
        passed = [lane.event_id for lane in self.lanes if lane.event_id]
        # Several streams: the largest id, so that its own stream resumes exactly and the
        # others from the window before it.
        last_event_id = max(passed) if passed else self.last_delivered_id
        self.last_activity = now
        return LiveHeartbeat(
            time=datetime.now(UTC),
            last_event_id=last_event_id,
            last_delivered_id=self.last_delivered_id,
            cursor=encode_cursor(self.delivered, last_event_id or self.last_delivered_id),
        )

    async def _replay_step(self) -> None:
        lane = self.replaying[0]
        self.replaying.rotate(-1)
        if lane.position is not None and lane.position == lane.reader.position:
            self.go_live(lane, _Mode.LIVE)
            return
        count = min(self.hub.options.replay_batch, self.buffer_size - len(self.buffer))
        if count < 1:
            return
        entries = await self._replay_read(lane, count)
        # The consumer may have closed, or live lanes overflowed, during the read.
        if entries is None or self.done or lane.mode is not _Mode.REPLAY:
            return
        if entries:
            self._take_replayed(lane, entries)
        elif lane.position is None or lane.position == lane.reader.position:
            # At the end of the stream, and either the reader is exactly here or nothing is
            # retained at all: whatever the reader dispatches next is new to us.
            if lane.position is None:
                lane.position = lane.reader.position
            self.go_live(lane, _Mode.LIVE)
        else:
            # At the end of the stream without meeting the reader: it is behind (no position
            # it can hold lies past the end). It skips for us until it passes our position.
            self.go_live(lane, _Mode.WAIT)

    async def _replay_read(self, lane: _Lane, count: int) -> list[_Entry] | None:
        try:
            return await _read_entries(self.hub.bus, lane.stream, lane.position, count)
        except StalePositionError:
            self.fail(_resume_unavailable())
        except EventBusClosedError:
            self.end(EndReason.BUS_CLOSED)
        except Exception as error:
            log.warning("replay of %s failed: %r", lane.stream, error)
            self.fail(self.hub.bus_unavailable(self.resume_metadata()))
        return None

    def _take_replayed(self, lane: _Lane, entries: list[_Entry]) -> None:
        reader_position = lane.reader.position
        meet = next(
            (index for index, (position, _) in enumerate(entries) if position == reader_position),
            -1,
        )
        stop = meet + 1 if meet >= 0 else len(entries)
        added = 0
        error: Exception | None = None
        for index in range(stop):
            position, item = entries[index]
            if item is not None:
                try:
                    wanted = self.filter(item.event)
                except Exception as raised:
                    error = raised
                    break
                if wanted:
                    if len(self.buffer) >= self.buffer_size:
                        break  # live lanes filled it during the read: the rest is read again
                    self.buffer.append(item)
                    added += 1
                lane.event_id = item.event.id
            lane.position = position
        else:
            if meet >= 0:
                # Everything up to the reader's position is ours; after it, its fan-out.
                self.go_live(lane, _Mode.LIVE)
        if added:
            self.hub.note_buffered(added, self)
        if error is not None:
            self.fail(error)

    def close(self) -> None:
        self.end(EndReason.CLOSED)


class Subscription:
    """An async iterator of `LiveItem`s and `LiveHeartbeat`s (one consumer at a time).

    Closing it (`aclose`, `async with`, cancelling the task that waits on it, or dropping it)
    removes it from the hub. Like an async generator, it is finished once a pending `anext`
    was cancelled: that is how a client going away shows up. To wake up periodically, rely
    on heartbeats rather than on timeouts around `anext`.
    """

    def __init__(self, state: _SubscriptionState, streams: tuple[str, ...]) -> None:
        self._state = state
        self._streams = streams
        # Handlers that forget `aclose` still release it when the generator holding it dies.
        self._finalizer = weakref.finalize(self, state.close)
        self._finalizer.atexit = False

    @property
    def streams(self) -> tuple[str, ...]:
        return self._streams

    @property
    def ended_by(self) -> EndReason | None:
        """Why the iteration ended without an error (None while running or after an error)."""
        return self._state.ended_by

    @property
    def last_event_id(self) -> str:
        """The id of the last event delivered (or resumed after); "" before the first."""
        return self._state.last_delivered_id

    @property
    def cursor(self) -> str:
        """Exact resume token for everything delivered so far (any replica, any streams)."""
        return self._state.cursor()

    @property
    def buffered(self) -> int:
        return len(self._state.buffer)

    def resume_metadata(self) -> dict[str, str]:
        """For an error's metadata: the last event id and the exact cursor."""
        return self._state.resume_metadata()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> LiveMessage:
        try:
            return await self._state.next()
        except asyncio.CancelledError:
            # The client went away (grpc cancels the handler): leave the hub now.
            self._state.close()
            raise

    async def aclose(self) -> None:
        self._state.close()

    def close(self) -> None:
        self._state.close()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._state.close()


# --- readers ---------------------------------------------------------------------------------


class _StreamReader:
    """The one task that reads a stream for this process and fans its batches out."""

    def __init__(self, hub: LiveHub, stream: str, position: str) -> None:
        self.hub = hub
        self.stream = stream
        # The last position dispatched; everything up to it has been handed out.
        self.position = position
        self.last_id = ""
        self.lanes: set[_Lane] = set()  # LIVE and WAIT
        self.replaying: set[_Lane] = set()  # REPLAY: they need `position` to keep moving
        # subscribe() holds a pin while it sets up, so the reader cannot end under it.
        self.pins = 0
        self.index: dict[str, str] = {}
        self._index_order: deque[str] = deque()
        self.task: asyncio.Task[None] | None = None

    def in_use(self) -> bool:
        return bool(self.lanes or self.replaying or self.pins)

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(
            self._run(), name=f"live-reader:{self.stream}"
        )

    def detach(self, lane: _Lane) -> None:
        self.lanes.discard(lane)
        self.replaying.discard(lane)

    async def _run(self) -> None:
        options = self.hub.options
        delay = options.retry_min.total_seconds()
        failing = False
        try:
            while self.in_use():
                try:
                    entries = await _read_entries(
                        self.hub.bus,
                        self.stream,
                        self.position,
                        options.read_batch,
                        options.read_block,
                    )
                except StalePositionError:
                    await self._jump()
                    continue
                except EventBusClosedError:
                    for lane in [*self.lanes, *self.replaying]:
                        lane.sub.end(EndReason.BUS_CLOSED)
                    return
                except Exception as error:
                    if not failing:
                        log.warning("live reader of %s: bus read failed: %r", self.stream, error)
                    failing = True
                    # Jitter so the readers of many replicas do not reconnect in lockstep.
                    await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # noqa: S311
                    delay = min(delay * 2, options.retry_max.total_seconds())
                    continue
                if failing:
                    log.info("live reader of %s: bus reads work again", self.stream)
                    failing = False
                    delay = options.retry_min.total_seconds()
                if entries:
                    self._dispatch(entries)
                    # The in-process bus answers without suspending while events are waiting:
                    # let the subscribers drain this batch before the next one lands.
                    await asyncio.sleep(0)
        finally:
            self.hub.reader_ended(self)

    def _dispatch(self, entries: list[_Entry]) -> None:
        self.hub.note_batch(len(entries))
        last_id = self.last_id
        for _, item in reversed(entries):
            if item is not None:
                last_id = item.event.id
                break
        for lane in list(self.lanes):
            lane.sub.offer(lane, entries, last_id)
        self.position = entries[-1][0]
        self.last_id = last_id
        self._remember(entries)

    def _remember(self, entries: list[_Entry]) -> None:
        size = self.hub.options.resume_index_size
        if size == 0:
            return
        index, order = self.index, self._index_order
        for position, item in entries:
            if item is not None and item.event.id not in index:
                index[item.event.id] = position  # first occurrence: see the module doc
                order.append(item.event.id)
        while len(order) > size:
            del index[order.popleft()]

    async def _jump(self) -> None:
        """The events after our position were trimmed before we read them (this process was
        starved for a whole retention's worth of events). Start again at the end; every lane
        replays from its own position, which either still works or tells its client the
        truth (RESUME_POINT_UNAVAILABLE)."""
        log.warning("live reader of %s fell behind the retained history", self.stream)
        try:
            position = await self.hub.bus.latest_position(self.stream)
        except Exception as error:
            # The next read fails the same way and brings us back here (or reports the closed
            # bus); do not spin meanwhile.
            log.warning("live reader of %s: latest_position failed: %r", self.stream, error)
            await asyncio.sleep(self.hub.options.retry_max.total_seconds())
            return
        # After the await, so lanes that joined at the old position meanwhile move too.
        self.position = position
        self.last_id = ""
        self.index.clear()
        self._index_order.clear()
        for lane in list(self.lanes):
            lane.sub.demote(lane)


# --- the hub ---------------------------------------------------------------------------------


_StopWatcher = tuple[asyncio.Task[None], set[_SubscriptionState]]


@dataclass(frozen=True, slots=True)
class _ResumePoint:
    positions: dict[str, str | None]
    event_ids: dict[str, str]
    last_delivered_id: str


class _State(Enum):
    NEW = "new"
    RUNNING = "running"
    STOPPED = "stopped"


class LiveHub:
    """Per-process live subscriptions over one `EventBus`. Implements `LiveSource`."""

    def __init__(self, bus: EventBus, options: LiveHubOptions | None = None) -> None:
        self.bus = bus
        self.options = options or LiveHubOptions()
        self._readers: dict[str, _StreamReader] = {}
        self._subscriptions: set[_SubscriptionState] = set()
        # One task per distinct `stopping` event (one per server), waking its subscriptions.
        self._stop_watchers: dict[asyncio.Event, _StopWatcher] = {}
        self._state = _State.NEW
        self._buffered = 0
        self._buffered_high = 0
        self._largest_buffer_high = 0
        self._batch_high = 0

    async def start(self) -> None:
        if self._state is _State.NEW:
            self._state = _State.RUNNING

    async def stop(self) -> None:
        """End every subscription cleanly (`EndReason.HUB_STOPPED`) and stop the readers."""
        if self._state is _State.STOPPED:
            return
        self._state = _State.STOPPED
        for sub in list(self._subscriptions):
            sub.end(EndReason.HUB_STOPPED)
        tasks = [r.task for r in self._readers.values() if r.task is not None]
        tasks += [task for task, _ in self._stop_watchers.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._readers.clear()
        self._stop_watchers.clear()

    def stats(self) -> LiveHubStats:
        return LiveHubStats(
            subscriptions=len(self._subscriptions),
            readers=len(self._readers),
            buffered=self._buffered,
            buffered_high_water=self._buffered_high,
            largest_buffer_high_water=self._largest_buffer_high,
            read_batch_high_water=self._batch_high,
        )

    def reading(self) -> tuple[str, ...]:
        """The streams this hub has a reader for."""
        return tuple(sorted(self._readers))

    async def subscribe(
        self,
        streams: Sequence[str],
        *,
        filter: EventFilter | None = None,
        resume_after: str | None = None,
        buffer_size: int = DEFAULT_BUFFER_SIZE,
        stopping: asyncio.Event | None = None,
        heartbeat_interval: timedelta | None = None,
        overflow_reason: str = STREAM_BUFFER_OVERFLOW,
    ) -> Subscription:
        """Follow `streams` (each `events.<family>`), delivering events `filter` accepts.

        `resume_after` empty/None: only events published from now on. Otherwise an event id
        or a cursor token: every matching event after it, then live (see the module doc).
        Raises the resume errors here, before anything is delivered.
        """
        if isinstance(streams, str):
            raise TypeError("streams must be a sequence of stream names, not one string")
        names = tuple(streams)
        if not names or any(not name for name in names) or len(set(names)) != len(names):
            raise ValueError(f"streams must be distinct, non-empty names, got {names!r}")
        if buffer_size < 1:
            raise ValueError(f"buffer_size must be >= 1, got {buffer_size}")
        interval = (
            self.options.heartbeat_interval if heartbeat_interval is None else heartbeat_interval
        )
        if interval <= timedelta(0):
            raise ValueError("heartbeat_interval must be positive")
        self._check_running()
        resume = await self._resolve(names, resume_after or None)
        readers = await self._acquire(names)
        try:
            self._check_running()
            start: dict[str, str | None] = (
                {name: readers[name].position for name in names}
                if resume is None
                else dict(resume.positions)
            )
            state = _SubscriptionState(
                self,
                filter=filter or _match_all,
                buffer_size=buffer_size,
                stopping=stopping,
                heartbeat_interval=interval.total_seconds(),
                overflow_reason=overflow_reason,
                start=start,
                last_delivered_id="" if resume is None else resume.last_delivered_id,
            )
            for name in names:
                reader = readers[name]
                if resume is None:
                    lane = _Lane(state, reader, _Mode.LIVE, reader.position, reader.last_id)
                    reader.lanes.add(lane)
                else:
                    position = resume.positions[name]
                    lane = _Lane(
                        state, reader, _Mode.REPLAY, position, resume.event_ids.get(name, "")
                    )
                    reader.replaying.add(lane)
                    state.replaying.append(lane)
                state.lanes.append(lane)
            self._subscriptions.add(state)
            if stopping is not None:
                self._watch(stopping, state)
        finally:
            for reader in readers.values():
                reader.pins -= 1
        return Subscription(state, names)

    # -- bookkeeping used by subscriptions and readers ---------------------------------------

    def note_buffered(self, added: int, sub: _SubscriptionState) -> None:
        self._buffered += added
        self._buffered_high = max(self._buffered_high, self._buffered)
        size = len(sub.buffer)
        if size > sub.high_water:
            sub.high_water = size
            self._largest_buffer_high = max(self._largest_buffer_high, size)

    def note_taken(self, taken: int) -> None:
        self._buffered -= taken

    def note_batch(self, size: int) -> None:
        self._batch_high = max(self._batch_high, size)

    def forget(self, sub: _SubscriptionState) -> None:
        self._subscriptions.discard(sub)
        if sub.stopping is not None:
            watcher = self._stop_watchers.get(sub.stopping)
            if watcher is not None:
                watcher[1].discard(sub)
                if not watcher[1]:
                    watcher[0].cancel()
                    del self._stop_watchers[sub.stopping]

    def reader_ended(self, reader: _StreamReader) -> None:
        if self._readers.get(reader.stream) is reader:
            del self._readers[reader.stream]
        # A reader that died of a bug must not strand its subscribers silently.
        for lane in [*reader.lanes, *reader.replaying]:
            lane.sub.fail(Unavailable("live stream reader stopped", reason=SHUTTING_DOWN))

    def bus_unavailable(self, metadata: Mapping[str, str] | None = None) -> Unavailable:
        error = Unavailable("the event bus is unavailable", reason=EVENT_BUS_UNAVAILABLE)
        error.metadata.update(metadata or {})
        return error

    # -- internals ---------------------------------------------------------------------------

    def _check_running(self) -> None:
        if self._state is _State.NEW:
            raise RuntimeError("LiveHub.start() was not called")
        if self._state is _State.STOPPED:
            raise Unavailable("the server is shutting down", reason=SHUTTING_DOWN)

    def _watch(self, stopping: asyncio.Event, sub: _SubscriptionState) -> None:
        watcher = self._stop_watchers.get(stopping)
        if watcher is None:
            subs: set[_SubscriptionState] = set()
            task = asyncio.get_running_loop().create_task(
                self._wake_on(stopping, subs), name="live-stop-watcher"
            )
            watcher = self._stop_watchers[stopping] = (task, subs)
        watcher[1].add(sub)

    @staticmethod
    async def _wake_on(stopping: asyncio.Event, subs: set[_SubscriptionState]) -> None:
        await stopping.wait()
        for sub in list(subs):
            sub.wakeup.set()

    async def _acquire(self, names: tuple[str, ...]) -> dict[str, _StreamReader]:
        """The reader of each stream, started if needed, each pinned (caller unpins)."""
        acquired: dict[str, _StreamReader] = {}
        try:
            for name in names:
                reader = self._readers.get(name)
                if reader is None:
                    position = await self._bus_call(self.bus.latest_position(name))
                    self._check_running()
                    # Another subscribe may have started it while we waited.
                    reader = self._readers.get(name)
                    if reader is None:
                        reader = _StreamReader(self, name, position)
                        self._readers[name] = reader
                        reader.start()
                reader.pins += 1
                acquired[name] = reader
        except BaseException:
            for reader in acquired.values():
                reader.pins -= 1
            raise
        return acquired

    async def _bus_call(self, call: Awaitable[T]) -> T:
        """Await a bus call made while subscribing; its failures become domain errors."""
        try:
            return await call
        except (DomainError, ValueError, StalePositionError):
            raise
        except EventBusClosedError as error:
            raise Unavailable("the server is shutting down", reason=SHUTTING_DOWN) from error
        except Exception as error:
            log.warning("event bus call failed: %r", error)
            raise self.bus_unavailable() from error

    # -- resolving `resume_after` ------------------------------------------------------------

    async def _resolve(
        self, names: tuple[str, ...], resume_after: str | None
    ) -> _ResumePoint | None:
        if resume_after is None:
            return None
        if (
            len(resume_after) > _MAX_RESUME_CHARS
            or not resume_after.isprintable()
            or any(char.isspace() for char in resume_after)
        ):
            raise _unknown_resume("is not an event id")
        if is_cursor(resume_after):
            return await self._resolve_cursor(names, resume_after)
        if len(resume_after) > _MAX_EVENT_ID_CHARS:
            raise _unknown_resume("is not an event id")
        return await self._locate(names, resume_after)

    async def _resolve_cursor(self, names: tuple[str, ...], token: str) -> _ResumePoint:
        try:
            positions, last_id = _decode_cursor(token)
        except ValueError:
            raise _unknown_resume("is not an event id or a resume cursor") from None
        if set(positions) != set(names):
            raise _unknown_resume("is a resume cursor of other streams")
        for name, position in positions.items():
            if position is not None:
                await self._check_retained(name, position)
        return _ResumePoint(positions, {}, last_id)

    async def _check_retained(self, stream: str, position: str) -> None:
        try:
            await self._bus_call(self.bus.read(stream, after=position, count=1))
        except ValueError:
            raise _unknown_resume("is not a resume cursor of this event bus") from None
        except StalePositionError:
            raise _resume_unavailable() from None

    async def _locate(self, names: tuple[str, ...], event_id: str) -> _ResumePoint:
        if len(names) == 1:
            # Reconnecting to the same replica: usually still in the reader's index.
            reader = self._readers.get(names[0])
            position = None if reader is None else reader.index.get(event_id)
            if position is not None:
                await self._check_retained(names[0], position)
                return _ResumePoint({names[0]: position}, {names[0]: event_id}, event_id)

        # Scan the stream the index names first, so the others need only their cut.
        def indexed_first(name: str) -> int:
            reader = self._readers.get(name)
            return 0 if reader is not None and event_id in reader.index else 1

        origin: tuple[str, str] | None = None
        scans: dict[str, _Scan] = {}
        for name in sorted(names, key=indexed_first):
            scan = await self._scan(name, event_id, find=origin is None, cut=len(names) > 1)
            scans[name] = scan
            if origin is None and scan.found is not None:
                origin = (name, scan.found)
        if origin is None:
            raise self._not_found(event_id, [scan.oldest_id for scan in scans.values()])
        positions: dict[str, str | None] = {}
        ids: dict[str, str] = {}
        for name in names:
            if name == origin[0]:
                positions[name], ids[name] = origin[1], event_id
            else:
                positions[name], ids[name] = scans[name].cut, scans[name].cut_id
        return _ResumePoint(positions, ids, event_id)

    async def _scan(self, stream: str, event_id: str, *, find: bool, cut: bool) -> _Scan:
        for _ in range(_SCAN_ATTEMPTS):
            try:
                return await self._scan_once(stream, event_id, find=find, cut=cut)
            except StalePositionError:
                continue  # trimming overtook the scan: start again at the new oldest event
        raise self.bus_unavailable()

    async def _scan_once(self, stream: str, event_id: str, *, find: bool, cut: bool) -> _Scan:
        """Read `stream` from its oldest event: where `event_id` first occurs (`find`), and,
        for merged streams (`cut`), the last position before the first event at or after the
        resume threshold (`merged_resume_window` before the id's ULID time)."""
        threshold = _ulid_time_floor(event_id, self.options.merged_resume_window)
        if threshold is None:
            # Not a ULID: no time to go back from. `id + NUL` is the least string above `id`.
            threshold = event_id.upper() + "\0"
        found: str | None = None
        cut_position: str | None = None
        cut_id = ""
        cutting = cut
        oldest_id: str | None = None
        after: str | None = None
        while (find and found is None) or cutting:
            entries = await self._bus_call(
                _read_entries(self.bus, stream, after, self.options.scan_batch)
            )
            if not entries:
                break
            for position, item in entries:
                if item is None:
                    if cutting:
                        cut_position = position
                    continue
                current = item.event.id
                if oldest_id is None:
                    oldest_id = current
                if find and found is None and current == event_id:
                    found = position
                if cutting:
                    if current.upper() >= threshold:
                        cutting = False
                    else:
                        cut_position, cut_id = position, current
                if (not find or found is not None) and not cutting:
                    break
            after = entries[-1][0]
        return _Scan(found, cut_position, cut_id, oldest_id)

    @staticmethod
    def _not_found(event_id: str, oldest_ids: Sequence[str | None]) -> DomainError:
        # Trimmed or never existed? A ULID carries its time: older than the oldest event
        # retained in one of the streams (or a stream with nothing retained) means it may have
        # been there and been trimmed; otherwise it would have been found.
        if _ULID.fullmatch(event_id):
            key = event_id.upper()
            for oldest_id in oldest_ids:
                if oldest_id is None or (
                    _ULID.fullmatch(oldest_id) is not None and oldest_id.upper() > key
                ):
                    return _resume_unavailable()
        return _unknown_resume("is not the id of an event of this stream")


@dataclass(frozen=True, slots=True)
class _Scan:
    found: str | None
    cut: str | None
    cut_id: str
    oldest_id: str | None


_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_ULID_TIME_CHARS = 10


def _ulid_time_floor(event_id: str, earlier_by: timedelta) -> str | None:
    """The least ULID of the millisecond `earlier_by` before `event_id`'s (None: not a ULID)."""
    if _ULID.fullmatch(event_id) is None:
        return None
    millis = 0
    for char in event_id[:_ULID_TIME_CHARS].upper():
        millis = millis * 32 + _CROCKFORD.index(char)
    millis = max(0, millis - int(earlier_by.total_seconds() * 1000))
    chars = []
    for _ in range(_ULID_TIME_CHARS):
        chars.append(_CROCKFORD[millis & 31])
        millis >>= 5
    return "".join(reversed(chars)) + "0" * (26 - _ULID_TIME_CHARS)


def _unknown_resume(problem: str) -> InvalidArgument:
    return InvalidArgument([FieldViolation(RESUME_FIELD, problem)], reason=UNKNOWN_RESUME_POINT)


def _resume_unavailable() -> FailedPrecondition:
    return FailedPrecondition(
        "the resume point is older than the retained history; refresh and subscribe again "
        f"without {RESUME_FIELD}",
        reason=RESUME_POINT_UNAVAILABLE,
    )
