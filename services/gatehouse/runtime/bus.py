"""Event bus: append `gatehouse.events.v1.Event` envelopes to named streams and read them back.

`EventBus` is the seam (ARCHITECTURE §2, §7, §8). `InProcessEventBus` serves embedded mode and
unit tests; `RedisStreamsEventBus` serves production. Both pass the same contract tests
(`tests/contracts/bus_contract.py`, `tests/contracts/groups_contract.py`).

Plain reads (`EventBus`, for live feeds and tails):
- every published event gets a *position* in its stream; positions are opaque strings, only
  meaningful to the bus and the stream that issued them;
- `read(after=p)` returns the events published after `p`, oldest first, so a reader that
  remembers the last position it handled resumes with no gap and no duplicate; it can block
  until something arrives (live feeds, §8);
- each stream keeps its newest events only (`MaxLenPolicy`), so memory and Redis stay
  bounded. A reader that fell so far behind that events after its position were dropped gets
  `StalePositionError` instead of a silent gap: it decides whether to restart from the oldest
  retained event or to tell its client that history was lost.

Consumer groups (`ConsumerGroups`, for the consumers of `gatehouse.runtime.consumers`), with
Redis' semantics on both backends:
- a group is a named cursor over one stream plus a *pending list*: every event handed to one
  of the group's consumers (`read_group`) stays pending, owned by that consumer, until it is
  acknowledged (`ack`). Each event goes to one consumer of the group; every group sees every
  event.
- `claim_idle` moves pending events that nobody acknowledged for `min_idle` (their consumer
  died or hangs) to another consumer and counts the new delivery (`Delivery.delivery_count`).
- the length policy never trims what a group still needs: an append trims to the newest
  `max_len` events *but never at or above the floor of any group*, the floor being the
  group's oldest pending event, or else its first undelivered one. A group that stops
  consuming therefore holds its stream's history: watch `pending_count` and drop abandoned
  groups (`delete_group`). On Redis the append, the floor computation and the `XTRIM MINID ~`
  run as one Lua script, so no group can move between computing the floor and trimming.

Dead letters (`DeadLetters`): a consumer that gives up on an event appends it to the stream
`dead.<stream>.<group>` (`dead_letter_stream()`), e.g. `dead.events.payment.notifications`.
A dead-letter entry holds two fields: `e`, the serialized envelope exactly as the consumer got
it (absent when the original entry was not an `Event`), and `dl`, `DeadLetterInfo` as UTF-8
JSON (original stream, group and position, reason, error text, attempts, consumer, time).
Since the envelope sits in the usual field, `read()` and `gatehouse events tail` work on a
dead-letter stream too. Dead-letter streams follow the same `MaxLenPolicy` (bounded memory
beats an exhausted Redis; give them a larger bound in `per_stream` if needed). Replaying
(`replay_dead_letter`) republishes the envelope to its original stream, then deletes the
dead letter: every group of that stream sees it again, and groups that had processed it
already skip it by its id (consumers are idempotent).

Errors: the consumer-group and dead-letter methods of the Redis bus report a Redis that does
not answer as `EventBusUnavailableError` (retry with backoff) and a missing group as
`UnknownGroupError` (Redis lost it, or nobody called `ensure_group`). `publish` and `read`
still surface redis-py's errors.

Events are stored serialized (`SerializeToString()`) in both implementations, so a reader
never shares a mutable message with the publisher or with other readers.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from google.protobuf.message import DecodeError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.typing import StreamRangeResponse

from gatehouse.events.v1.envelope_pb2 import Event
from gatehouse.runtime.redis_connection import RedisConnection

FROM_OLDEST = "0"
"""`ensure_group` start: the group's first read begins at the oldest retained event."""

FROM_NEW = "$"
"""`ensure_group` start: the group sees only events published after it was created."""

DEAD_LETTER_PREFIX = "dead."

# Field names of a stream entry: the envelope, and a dead letter's metadata.
_FIELD = b"e"
_DEAD_LETTER_FIELD = b"dl"


def dead_letter_stream(stream: str, group: str) -> str:
    """Where `group` puts the events of `stream` it gave up on."""
    return f"{DEAD_LETTER_PREFIX}{stream}.{group}"


def is_dead_letter_stream(stream: str) -> bool:
    return stream.startswith(DEAD_LETTER_PREFIX)


class EventBusError(Exception):
    """Base of the errors the bus raises on purpose."""


class StalePositionError(EventBusError):
    """The events right after `position` are no longer retained, or `position` is unknown.

    Resuming there would skip events. Either they were trimmed by the max-length policy
    (the reader fell too far behind) or the stream was reset (in-process bus restarted,
    Redis lost the key) and the position is from its previous life.
    """

    def __init__(self, stream: str, position: str) -> None:
        super().__init__(
            f"stream {stream!r}: events after position {position!r} are no longer retained"
        )
        self.stream = stream
        self.position = position


class MalformedEntryError(EventBusError):
    """A stream entry is not a serialized `Event` (written by something other than the bus).

    Its position is given so a reader can step past it (`read(after=error.position)`).
    """

    def __init__(self, stream: str, position: str) -> None:
        super().__init__(f"stream {stream!r}: entry {position!r} is not a serialized Event")
        self.stream = stream
        self.position = position


class EventBusClosedError(EventBusError):
    """The bus was closed; nothing more can be published or read through it."""


class UnknownGroupError(EventBusError):
    """The consumer group does not exist on the stream (never created, or the backend lost it).

    A consumer recreates it with `ensure_group` and carries on.
    """

    def __init__(self, stream: str, group: str) -> None:
        super().__init__(f"stream {stream!r} has no consumer group {group!r}")
        self.stream = stream
        self.group = group


class EventBusUnavailableError(EventBusError):
    """The bus backend did not answer (Redis down, restarting, unreachable); retry later."""


@dataclass(frozen=True, slots=True)
class MaxLenPolicy:
    """How many of its newest events each stream keeps.

    The Redis bus trims approximately (whole radix-tree nodes, far cheaper), so a stream there
    may hold somewhat more than its bound, never fewer newest events. Neither bus trims events
    a consumer group has not acknowledged yet, so a stream with a lagging group may exceed
    its bound until the group catches up.
    """

    default: int = 10_000
    per_stream: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, bound in {"default": self.default, **self.per_stream}.items():
            if bound < 1:
                raise ValueError(f"max length of {name!r} must be >= 1, got {bound}")

    def max_len(self, stream: str) -> int:
        return self.per_stream.get(stream, self.default)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event handed to a consumer of a group, pending until acknowledged.

    `event` is `None` when the entry is not a serialized `Event` (something other than the bus
    wrote it): the consumer still owns it and must ack or dead-letter it, or it stays pending.
    `delivery_count` is 1 on the first delivery and grows with every `claim_idle`.
    """

    position: str
    event: Event | None
    delivery_count: int


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetterInfo:
    """Why and where an event was dead-lettered; stored as JSON beside the envelope.

    `error` is the exception's type and message, truncated, never a traceback (which may carry
    SQL or values); `reason` is one of the consumer's `DeadLetterReason` values.
    """

    stream: str
    group: str
    position: str
    reason: str
    error: str
    attempts: int
    consumer: str
    time: datetime

    def __post_init__(self) -> None:
        if self.time.utcoffset() is None:
            raise ValueError("time must be timezone-aware")

    @property
    def dead_letter_stream(self) -> str:
        return dead_letter_stream(self.stream, self.group)

    def to_json(self) -> bytes:
        document = {
            "stream": self.stream,
            "group": self.group,
            "position": self.position,
            "reason": self.reason,
            "error": self.error,
            "attempts": self.attempts,
            "consumer": self.consumer,
            "time": self.time.astimezone(UTC).isoformat(),
        }
        return json.dumps(document, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> DeadLetterInfo:
        """Parse `to_json()` output; `ValueError` for anything else."""
        try:
            document = json.loads(data)
            return cls(
                stream=str(document["stream"]),
                group=str(document["group"]),
                position=str(document["position"]),
                reason=str(document["reason"]),
                error=str(document["error"]),
                attempts=int(document["attempts"]),
                consumer=str(document["consumer"]),
                time=datetime.fromisoformat(document["time"]),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"not dead-letter metadata: {error}") from None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One entry of a dead-letter stream: `position` is its place in that stream.

    `event` is `None` when the original entry was not an `Event`; `info` is `None` when the
    entry was not written by `dead_letter` (it has no readable metadata).
    """

    position: str
    event: Event | None
    info: DeadLetterInfo | None


class EventBus(Protocol):
    """Append-only streams of events with resumable, optionally blocking reads."""

    async def publish(self, stream: str, event: Event) -> str:
        """Append `event` to `stream` (created on first use); return its position."""
        ...

    async def read(
        self,
        stream: str,
        after: str | None = None,
        count: int = 100,
        block: timedelta | None = None,
    ) -> list[tuple[str, Event]]:
        """Up to `count` events published after position `after` (exclusive), oldest first.

        `after=None` starts at the oldest retained event. With `block`, waits up to that
        long for at least one event when none is available yet; returns `[]` on timeout.
        Raises `StalePositionError` when events after `after` are gone, `ValueError` for a
        position this bus cannot have issued.
        """
        ...

    async def latest_position(self, stream: str) -> str:
        """Position of the newest event (a start position for an empty stream).

        `read(after=latest_position(s))` yields only events published from now on, without
        the race of "read only new events" calls that lose what arrives between two calls.
        """
        ...

    async def close(self) -> None:
        """Stop serving: later calls raise `EventBusClosedError`. Idempotent."""
        ...


class ConsumerGroups(Protocol):
    """Consumer groups over the streams of an `EventBus` (see the module docstring)."""

    async def ensure_group(self, stream: str, group: str, start: str = FROM_OLDEST) -> bool:
        """Create `group` on `stream` (and the stream) unless it exists; True if created.

        `start` is `FROM_OLDEST`, `FROM_NEW` or a position: the group's first read returns
        the events after it. An existing group is left untouched.
        """
        ...

    async def delete_group(self, stream: str, group: str) -> bool:
        """Drop the group and its pending list; True if it existed."""
        ...

    async def read_group(
        self,
        stream: str,
        group: str,
        consumer: str,
        count: int = 100,
        block: timedelta | None = None,
    ) -> list[Delivery]:
        """Up to `count` events the group has not handed to anyone yet, oldest first.

        They become pending, owned by `consumer` (a name unique to one live consumer). With
        `block`, waits up to that long for one to arrive; `[]` on timeout. Raises
        `UnknownGroupError` if the group does not exist.
        """
        ...

    async def ack(self, stream: str, group: str, positions: Sequence[str]) -> int:
        """Remove these positions from the group's pending list; returns how many were there."""
        ...

    async def claim_idle(
        self,
        stream: str,
        group: str,
        consumer: str,
        min_idle: timedelta,
        count: int = 100,
    ) -> list[Delivery]:
        """Take over up to `count` pending events nobody touched for at least `min_idle`.

        Oldest first; each counts as a new delivery to `consumer`. Pending events whose entry
        was deleted meanwhile are dropped from the pending list, not returned.
        """
        ...

    async def pending_count(self, stream: str, group: str) -> int:
        """Events delivered to the group's consumers and not acknowledged yet."""
        ...


class DeadLetters(Protocol):
    """Dead-letter streams and the inspection tools `gatehouse events` needs."""

    async def dead_letter(self, event: Event | None, info: DeadLetterInfo) -> str:
        """Append `event` with `info` to `info.dead_letter_stream`; returns its position there."""
        ...

    async def dead_letter_streams(self) -> list[str]:
        """Names of the dead-letter streams that ever received an entry, sorted."""
        ...

    async def read_dead_letters(
        self, stream: str, after: str | None = None, count: int = 100
    ) -> list[DeadLetter]:
        """Up to `count` dead letters of `stream` after position `after`, oldest first."""
        ...

    async def get_dead_letter(self, stream: str, position: str) -> DeadLetter | None:
        """The dead letter at `position`, or `None` if there is none (deleted, trimmed)."""
        ...

    async def get(self, stream: str, position: str) -> Event | None:
        """The event at `position` of any stream, or `None`; `MalformedEntryError` if foreign."""
        ...

    async def delete(self, stream: str, positions: Sequence[str]) -> int:
        """Delete these entries (dead letters after a replay); returns how many existed."""
        ...


class GroupEventBus(EventBus, ConsumerGroups, DeadLetters, Protocol):
    """Everything a consumer runner and the events CLI use; both buses implement it."""


async def replay_dead_letter(bus: GroupEventBus, stream: str, position: str) -> str | None:
    """Republish one dead letter to its original stream, then delete it; the new position.

    `None` if there is no such dead letter. Publishing comes first: a crash in between leaves
    the dead letter in place and a second replay publishes a duplicate, which consumers skip
    by event id. `ValueError` if the entry cannot be replayed (no envelope or no metadata).
    """
    letter = await bus.get_dead_letter(stream, position)
    if letter is None:
        return None
    if letter.event is None or letter.info is None:
        raise ValueError(
            f"dead letter {position!r} of {stream!r} has no envelope or no metadata to replay"
        )
    new_position = await bus.publish(letter.info.stream, letter.event)
    await bus.delete(stream, [position])
    return new_position


def _check_read_args(stream: str, count: int, block: timedelta | None) -> None:
    if not stream:
        raise ValueError("stream name must not be empty")
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    if block is not None and block < timedelta(0):
        raise ValueError(f"block must not be negative, got {block!r}")


def _check_group_args(stream: str, group: str, consumer: str | None = None) -> None:
    if not stream:
        raise ValueError("stream name must not be empty")
    if not group:
        raise ValueError("group name must not be empty")
    if consumer is not None and not consumer:
        raise ValueError("consumer name must not be empty")


def _decode(stream: str, position: str, data: bytes | str | None) -> Event:
    if not isinstance(data, bytes):
        raise MalformedEntryError(stream, position)
    try:
        return Event.FromString(data)
    except DecodeError:
        raise MalformedEntryError(stream, position) from None


def _decode_or_none(data: bytes | str | None) -> Event | None:
    if not isinstance(data, bytes):
        return None
    try:
        return Event.FromString(data)
    except DecodeError:
        return None


def _dead_letter_fields(event: Event | None, info: DeadLetterInfo) -> dict[bytes, bytes]:
    fields: dict[bytes, bytes] = {}
    if event is not None:
        fields[_FIELD] = event.SerializeToString()
    fields[_DEAD_LETTER_FIELD] = info.to_json()
    return fields


def _dead_letter_from_fields(
    position: str, fields: Mapping[bytes, bytes] | Mapping[bytes | str, bytes | str] | None
) -> DeadLetter:
    fields = fields or {}
    metadata = fields.get(_DEAD_LETTER_FIELD)
    info: DeadLetterInfo | None = None
    if isinstance(metadata, bytes):
        try:
            info = DeadLetterInfo.from_json(metadata)
        except ValueError:
            info = None
    return DeadLetter(position, _decode_or_none(fields.get(_FIELD)), info)


# In-process positions: the per-stream sequence number, zero-padded so that string order is
# publication order (20 digits hold any 64-bit count).
_MEMORY_POSITION = re.compile(r"[0-9]{20}")


def _memory_position(seq: int) -> str:
    return f"{seq:020d}"


@dataclass(slots=True)
class _MemoryEntry:
    seq: int
    # None once deleted: the entry keeps its slot so sequence numbers stay contiguous in
    # the deque, which is what lets a position be turned into an index by subtraction.
    fields: dict[bytes, bytes] | None


@dataclass(slots=True)
class _PendingEntry:
    consumer: str
    delivery_count: int
    delivered_at: float


@dataclass(slots=True)
class _MemoryGroup:
    last_delivered: int
    pending: dict[int, _PendingEntry] = field(default_factory=dict)

    def floor(self) -> int:
        """The oldest sequence number this group may still need."""
        return min(self.pending) if self.pending else self.last_delivered + 1


@dataclass(slots=True)
class _MemoryStream:
    entries: deque[_MemoryEntry] = field(default_factory=deque)
    last_seq: int = 0
    groups: dict[str, _MemoryGroup] = field(default_factory=dict)
    # Set (and replaced) on every publish; created only while someone waits.
    changed: asyncio.Event | None = None

    @property
    def first_seq(self) -> int:
        return self.entries[0].seq if self.entries else self.last_seq + 1

    def entry(self, seq: int) -> _MemoryEntry | None:
        index = seq - self.first_seq
        if 0 <= index < len(self.entries):
            return self.entries[index]
        return None

    def live_from(self, seq: int, count: int) -> list[_MemoryEntry]:
        """Up to `count` entries not deleted, from `seq` on."""
        entries = self.entries
        index = max(0, seq - self.first_seq)
        found: list[_MemoryEntry] = []
        # Indexing a deque is cheap near either end, and live readers sit near the end.
        while index < len(entries) and len(found) < count:
            entry = entries[index]
            if entry.fields is not None:
                found.append(entry)
            index += 1
        return found


class InProcessEventBus:
    """`GroupEventBus` inside one process (embedded mode, tests). State dies with the process.

    Blocked readers wait on a per-stream `asyncio.Event`, so a publish wakes them at once
    without polling. All methods must be called from the same event loop. `clock` (monotonic
    seconds) measures how long pending events sat idle; tests inject a fake one.
    """

    def __init__(
        self,
        max_len: MaxLenPolicy | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._policy = max_len or MaxLenPolicy()
        self._clock = clock
        self._streams: dict[str, _MemoryStream] = {}
        self._closed = False

    async def publish(self, stream: str, event: Event) -> str:
        self._check_open()
        if not stream:
            raise ValueError("stream name must not be empty")
        return self._append(stream, {_FIELD: event.SerializeToString()})

    async def read(
        self,
        stream: str,
        after: str | None = None,
        count: int = 100,
        block: timedelta | None = None,
    ) -> list[tuple[str, Event]]:
        self._check_open()
        _check_read_args(stream, count, block)
        after_seq = 0 if after is None else self._parse(after)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (0.0 if block is None else block.total_seconds())
        while True:
            state = self._stream(stream)
            if after is not None and (
                after_seq > state.last_seq or after_seq + 1 < state.first_seq
            ):
                raise StalePositionError(stream, _memory_position(after_seq))
            batch = state.live_from(after_seq + 1, count)
            if batch:
                return [
                    (
                        _memory_position(entry.seq),
                        _decode(stream, _memory_position(entry.seq), _field(entry)),
                    )
                    for entry in batch
                ]
            if not await self._wait(state, deadline):
                return []

    async def latest_position(self, stream: str) -> str:
        self._check_open()
        state = self._streams.get(stream)
        return _memory_position(0 if state is None else state.last_seq)

    async def close(self) -> None:
        self._closed = True
        for state in self._streams.values():
            self._wake(state)

    # -- consumer groups ------------------------------------------------------------------

    async def ensure_group(self, stream: str, group: str, start: str = FROM_OLDEST) -> bool:
        self._check_open()
        _check_group_args(stream, group)
        state = self._stream(stream)
        if group in state.groups:
            return False
        if start == FROM_OLDEST:
            start_seq = 0
        elif start == FROM_NEW:
            start_seq = state.last_seq
        else:
            start_seq = self._parse(start)
        state.groups[group] = _MemoryGroup(last_delivered=start_seq)
        return True

    async def delete_group(self, stream: str, group: str) -> bool:
        self._check_open()
        state = self._streams.get(stream)
        return state is not None and state.groups.pop(group, None) is not None

    async def read_group(
        self,
        stream: str,
        group: str,
        consumer: str,
        count: int = 100,
        block: timedelta | None = None,
    ) -> list[Delivery]:
        self._check_open()
        _check_read_args(stream, count, block)
        _check_group_args(stream, group, consumer)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (0.0 if block is None else block.total_seconds())
        while True:
            state, cursor = self._group(stream, group)
            batch = state.live_from(cursor.last_delivered + 1, count)
            if batch:
                now = self._clock()
                cursor.last_delivered = batch[-1].seq
                for entry in batch:
                    cursor.pending[entry.seq] = _PendingEntry(consumer, 1, now)
                return [
                    Delivery(_memory_position(entry.seq), _decode_or_none(_field(entry)), 1)
                    for entry in batch
                ]
            if not await self._wait(state, deadline):
                return []

    async def ack(self, stream: str, group: str, positions: Sequence[str]) -> int:
        self._check_open()
        seqs = [self._parse(position) for position in positions]
        state = self._streams.get(stream)
        cursor = None if state is None else state.groups.get(group)
        if cursor is None:
            return 0
        return sum(cursor.pending.pop(seq, None) is not None for seq in seqs)

    async def claim_idle(
        self,
        stream: str,
        group: str,
        consumer: str,
        min_idle: timedelta,
        count: int = 100,
    ) -> list[Delivery]:
        self._check_open()
        _check_read_args(stream, count, None)
        _check_group_args(stream, group, consumer)
        state, cursor = self._group(stream, group)
        now = self._clock()
        claimed: list[Delivery] = []
        for seq in sorted(cursor.pending):
            if len(claimed) >= count:
                break
            pending = cursor.pending[seq]
            if now - pending.delivered_at < min_idle.total_seconds():
                continue
            entry = state.entry(seq)
            if entry is None or entry.fields is None:
                # Deleted (or trimmed) under the group: nothing left to deliver (Redis'
                # XAUTOCLAIM drops such ids from the pending list the same way).
                del cursor.pending[seq]
                continue
            pending.consumer = consumer
            pending.delivery_count += 1
            pending.delivered_at = now
            claimed.append(
                Delivery(
                    _memory_position(seq), _decode_or_none(_field(entry)), pending.delivery_count
                )
            )
        return claimed

    async def pending_count(self, stream: str, group: str) -> int:
        self._check_open()
        _, cursor = self._group(stream, group)
        return len(cursor.pending)

    # -- dead letters and inspection ------------------------------------------------------

    async def dead_letter(self, event: Event | None, info: DeadLetterInfo) -> str:
        self._check_open()
        return self._append(info.dead_letter_stream, _dead_letter_fields(event, info))

    async def dead_letter_streams(self) -> list[str]:
        self._check_open()
        return sorted(
            name
            for name, state in self._streams.items()
            if is_dead_letter_stream(name) and state.last_seq > 0
        )

    async def read_dead_letters(
        self, stream: str, after: str | None = None, count: int = 100
    ) -> list[DeadLetter]:
        self._check_open()
        _check_read_args(stream, count, None)
        after_seq = 0 if after is None else self._parse(after)
        state = self._streams.get(stream)
        if state is None:
            return []
        return [
            _dead_letter_from_fields(_memory_position(entry.seq), entry.fields)
            for entry in state.live_from(after_seq + 1, count)
        ]

    async def get_dead_letter(self, stream: str, position: str) -> DeadLetter | None:
        self._check_open()
        entry = self._entry(stream, position)
        if entry is None:
            return None
        return _dead_letter_from_fields(position, entry.fields)

    async def get(self, stream: str, position: str) -> Event | None:
        self._check_open()
        entry = self._entry(stream, position)
        return None if entry is None else _decode(stream, position, _field(entry))

    async def delete(self, stream: str, positions: Sequence[str]) -> int:
        self._check_open()
        deleted = 0
        for position in positions:
            entry = self._entry(stream, position)
            if entry is not None:
                entry.fields = None
                deleted += 1
        return deleted

    # -- internals ------------------------------------------------------------------------

    def _append(self, stream: str, fields: dict[bytes, bytes]) -> str:
        state = self._stream(stream)
        state.last_seq += 1
        state.entries.append(_MemoryEntry(state.last_seq, fields))
        self._trim(stream, state)
        self._wake(state)
        return _memory_position(state.last_seq)

    def _trim(self, stream: str, state: _MemoryStream) -> None:
        bound = self._policy.max_len(stream)
        floor = min((group.floor() for group in state.groups.values()), default=state.last_seq + 1)
        entries = state.entries
        while len(entries) > bound and entries[0].seq < floor:
            entries.popleft()

    def _entry(self, stream: str, position: str) -> _MemoryEntry | None:
        seq = self._parse(position)
        state = self._streams.get(stream)
        entry = None if state is None else state.entry(seq)
        return None if entry is None or entry.fields is None else entry

    def _stream(self, stream: str) -> _MemoryStream:
        state = self._streams.get(stream)
        if state is None:
            state = _MemoryStream()
            self._streams[stream] = state
        return state

    def _group(self, stream: str, group: str) -> tuple[_MemoryStream, _MemoryGroup]:
        state = self._streams.get(stream)
        cursor = None if state is None else state.groups.get(group)
        if state is None or cursor is None:
            raise UnknownGroupError(stream, group)
        return state, cursor

    async def _wait(self, state: _MemoryStream, deadline: float) -> bool:
        """Wait for the next append to `state` until `deadline`; False on timeout."""
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            return False
        if state.changed is None:
            state.changed = asyncio.Event()
        try:
            async with asyncio.timeout(remaining):
                await state.changed.wait()
        except TimeoutError:
            return False
        self._check_open()
        return True

    @staticmethod
    def _parse(position: str) -> int:
        if _MEMORY_POSITION.fullmatch(position) is None:
            raise ValueError(f"not a position of this bus: {position!r}")
        return int(position)

    @staticmethod
    def _wake(state: _MemoryStream) -> None:
        if state.changed is not None:
            state.changed.set()
            state.changed = None

    def _check_open(self) -> None:
        if self._closed:
            raise EventBusClosedError("the event bus is closed")


def _field(entry: _MemoryEntry) -> bytes | None:
    return None if entry.fields is None else entry.fields.get(_FIELD)


# Redis positions are stream entry ids "0-<n>": the bus adds entries with the id "0-*", so
# Redis numbers them 1, 2, 3... per stream. Contiguous numbers are what make a gap provable:
# events after `after` were trimmed exactly when the oldest retained number is above
# after + 1. Time-based ids ("<ms>-<seq>") could not tell a trimmed event from a quiet moment.
# ("<ms>-*" ids need Redis >= 7.0.)
_REDIS_POSITION = re.compile(r"0-([0-9]{1,20})")
_REDIS_START = "0-0"

# Append and trim in one step. Contiguous ids turn "keep the newest max_len" into "keep ids
# >= newest - max_len + 1", which combines with the groups' floors into one XTRIM MINID: the
# smallest of them is kept, so no group loses an event it has not acknowledged. `~` trims
# whole radix-tree nodes only (cheap; never more than asked). A stream holding ids not of the
# form 0-<n> (written by something else) is never trimmed by the script: it cannot prove safe.
# KEYS[1]: stream; ARGV[1]: max_len; ARGV[2..]: field, value, field, value...
_APPEND_SCRIPT = """
local id = redis.call('XADD', KEYS[1], '0-*', unpack(ARGV, 2))
local seq = tonumber(string.match(id, '^0%-(%d+)$'))
if seq == nil then return id end
local floor = seq - tonumber(ARGV[1]) + 1
if floor <= 1 then return id end
for _, group in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local info = {}
  for i = 1, #group, 2 do info[group[i]] = group[i + 1] end
  local pending = redis.call('XPENDING', KEYS[1], info['name'])
  local keep
  if pending[1] > 0 then
    keep = tonumber(string.match(pending[2], '^0%-(%d+)$'))
  else
    keep = tonumber(string.match(info['last-delivered-id'], '^0%-(%d+)$'))
    if keep ~= nil then keep = keep + 1 end
  end
  if keep == nil then return id end
  if keep < floor then floor = keep end
end
if floor > 1 then
  redis.call('XTRIM', KEYS[1], 'MINID', '~', string.format('0-%d', floor))
end
return id
"""


class RedisStreamsEventBus:
    """`GroupEventBus` on Redis Streams: XADD (+ XTRIM MINID ~), XRANGE and XREAD BLOCK for
    plain reads, XREADGROUP/XACK/XAUTOCLAIM for groups.

    The stream key is `connection.key_prefix + stream`. Each entry has the field `e`, holding
    the serialized envelope (dead letters add `dl`). The bus borrows the connection; whoever
    built it closes it. `close()` only refuses further calls: a read blocked in Redis notices
    within one `connection.max_block` slice, so owners cancel their reader tasks first on
    shutdown.

    A blocked read holds one pooled connection while it waits: fan a stream out to many
    subscribers from one reader per process, not one blocked read per subscriber.
    """

    def __init__(self, connection: RedisConnection, max_len: MaxLenPolicy | None = None) -> None:
        self._connection = connection
        self._redis = connection.client
        self._policy = max_len or MaxLenPolicy()
        # Only hashes the script: it is loaded into Redis on first use (and again after a
        # restart emptied the script cache).
        self._append_script = self._redis.register_script(_APPEND_SCRIPT)
        self._closed = False

    async def publish(self, stream: str, event: Event) -> str:
        self._check_open()
        if not stream:
            raise ValueError("stream name must not be empty")
        return await self._append(stream, {_FIELD: event.SerializeToString()})

    async def read(
        self,
        stream: str,
        after: str | None = None,
        count: int = 100,
        block: timedelta | None = None,
    ) -> list[tuple[str, Event]]:
        self._check_open()
        _check_read_args(stream, count, block)
        after_seq = None if after is None else self._parse(after)
        key = self._connection.key(stream)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (0.0 if block is None else block.total_seconds())
        while True:
            batch = await self._read_now(stream, key, after_seq, count)
            if batch:
                return batch
            wait_ms = self._wait_ms(deadline)
            if wait_ms is None:
                return []
            # Only a wake-up call: the entries are fetched again by `_read_now`, which checks
            # for trimmed events atomically. XREAD returns at once if anything newer than
            # `after` exists, so an event published between the two calls is not missed.
            since = _REDIS_START if after_seq is None else f"0-{after_seq}"
            await self._redis.xread({key: since}, count=1, block=wait_ms)
            self._check_open()

    async def latest_position(self, stream: str) -> str:
        self._check_open()
        newest = await self._redis.xrevrange(self._connection.key(stream), "+", "-", count=1)
        return _text(newest[0][0]) if newest else _REDIS_START

    async def close(self) -> None:
        self._closed = True

    # -- consumer groups ------------------------------------------------------------------

    async def ensure_group(self, stream: str, group: str, start: str = FROM_OLDEST) -> bool:
        self._check_open()
        _check_group_args(stream, group)
        if start not in (FROM_OLDEST, FROM_NEW):
            self._parse(start)
        with _redis_errors(stream):
            try:
                await self._redis.xgroup_create(
                    self._connection.key(stream), group, id=start, mkstream=True
                )
            except ResponseError as error:
                if str(error).startswith("BUSYGROUP"):
                    return False
                raise
        return True

    async def delete_group(self, stream: str, group: str) -> bool:
        self._check_open()
        with _redis_errors(stream):
            try:
                destroyed = await self._redis.xgroup_destroy(self._connection.key(stream), group)
            except ResponseError as error:
                # XGROUP DESTROY on a missing key is an error ("...requires the key to
                # exist...") rather than 0.
                if "requires the key to exist" in str(error):
                    return False
                raise
        return bool(destroyed)

    async def read_group(
        self,
        stream: str,
        group: str,
        consumer: str,
        count: int = 100,
        block: timedelta | None = None,
    ) -> list[Delivery]:
        self._check_open()
        _check_read_args(stream, count, block)
        _check_group_args(stream, group, consumer)
        key = self._connection.key(stream)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (0.0 if block is None else block.total_seconds())
        wait_ms: int | None = None
        while True:
            with _redis_errors(stream, group):
                reply = await self._redis.xreadgroup(
                    group, consumer, {key: ">"}, count=count, block=wait_ms
                )
            deliveries = [
                Delivery(position, _decode_or_none(data), 1)
                for position, data in _stream_entries(reply)
            ]
            if deliveries:
                return deliveries
            self._check_open()
            # Blocks in slices shorter than the socket timeout (BLOCK 0 would mean forever).
            wait_ms = self._wait_ms(deadline)
            if wait_ms is None:
                return []

    async def ack(self, stream: str, group: str, positions: Sequence[str]) -> int:
        self._check_open()
        for position in positions:
            self._parse(position)
        if not positions:
            return 0
        with _redis_errors(stream, group):
            acked = await self._redis.xack(self._connection.key(stream), group, *positions)
        return int(acked)

    async def claim_idle(
        self,
        stream: str,
        group: str,
        consumer: str,
        min_idle: timedelta,
        count: int = 100,
    ) -> list[Delivery]:
        self._check_open()
        _check_read_args(stream, count, None)
        _check_group_args(stream, group, consumer)
        key = self._connection.key(stream)
        min_idle_ms = max(0, round(min_idle.total_seconds() * 1000))
        claimed: list[tuple[str, bytes | None]] = []
        cursor = _REDIS_START
        with _redis_errors(stream, group):
            # XAUTOCLAIM examines a bounded slice of the pending list per call; follow its
            # cursor so idle entries behind many busy ones are still found.
            while len(claimed) < count:
                reply = await self._redis.xautoclaim(
                    key, group, consumer, min_idle_ms, cursor, count=count - len(claimed)
                )
                cursor = _text(reply[0])
                for entry_id, fields in reply[1]:
                    data = None if fields is None else fields.get(_FIELD)
                    claimed.append((_text(entry_id), data))
                if cursor == _REDIS_START:
                    break
            counts = await self._delivery_counts(key, group, [p for p, _ in claimed])
        return [
            Delivery(position, _decode_or_none(data), counts.get(position, 1))
            for position, data in claimed
        ]

    async def pending_count(self, stream: str, group: str) -> int:
        self._check_open()
        with _redis_errors(stream, group):
            summary = await self._redis.xpending(self._connection.key(stream), group)
        return int(summary["pending"])

    # -- dead letters and inspection ------------------------------------------------------

    async def dead_letter(self, event: Event | None, info: DeadLetterInfo) -> str:
        self._check_open()
        with _redis_errors(info.dead_letter_stream):
            return await self._append(info.dead_letter_stream, _dead_letter_fields(event, info))

    async def dead_letter_streams(self) -> list[str]:
        self._check_open()
        prefix = self._connection.key_prefix
        pattern = _glob_escape(prefix + DEAD_LETTER_PREFIX) + "*"
        names: list[str] = []
        with _redis_errors(DEAD_LETTER_PREFIX):
            async for key in self._redis.scan_iter(match=pattern, count=500, _type="STREAM"):
                names.append(_text(key)[len(prefix) :])
        return sorted(names)

    async def read_dead_letters(
        self, stream: str, after: str | None = None, count: int = 100
    ) -> list[DeadLetter]:
        self._check_open()
        _check_read_args(stream, count, None)
        start = "-" if after is None else f"(0-{self._parse(after)}"
        with _redis_errors(stream):
            entries = await self._redis.xrange(
                self._connection.key(stream), start, "+", count=count
            )
        return [
            _dead_letter_from_fields(_text(entry_id), fields) for entry_id, fields in entries or ()
        ]

    async def get_dead_letter(self, stream: str, position: str) -> DeadLetter | None:
        self._check_open()
        fields = await self._get_fields(stream, position)
        return None if fields is None else _dead_letter_from_fields(position, fields)

    async def get(self, stream: str, position: str) -> Event | None:
        self._check_open()
        fields = await self._get_fields(stream, position)
        return None if fields is None else _decode(stream, position, fields.get(_FIELD))

    async def delete(self, stream: str, positions: Sequence[str]) -> int:
        self._check_open()
        for position in positions:
            self._parse(position)
        if not positions:
            return 0
        with _redis_errors(stream):
            deleted = await self._redis.xdel(self._connection.key(stream), *positions)
        return int(deleted)

    # -- internals ------------------------------------------------------------------------

    async def _append(self, stream: str, fields: Mapping[bytes, bytes]) -> str:
        args: list[bytes | int] = [self._policy.max_len(stream)]
        for name, value in fields.items():
            args += [name, value]
        entry_id = await self._append_script(keys=[self._connection.key(stream)], args=args)
        return _text(entry_id)

    async def _get_fields(
        self, stream: str, position: str
    ) -> Mapping[bytes | str, bytes | str] | None:
        self._parse(position)
        with _redis_errors(stream):
            entries = await self._redis.xrange(
                self._connection.key(stream), position, position, count=1
            )
        if not entries:
            return None
        return entries[0][1] or {}

    async def _delivery_counts(self, key: str, group: str, positions: list[str]) -> dict[str, int]:
        if not positions:
            return {}
        async with self._redis.pipeline(transaction=False) as pipe:
            for position in positions:
                pipe.xpending_range(key, group, position, position, 1)
            replies = await pipe.execute()
        counts: dict[str, int] = {}
        for reply in replies:
            for pending in reply:
                counts[_text(pending["message_id"])] = int(pending["times_delivered"])
        return counts

    def _wait_ms(self, deadline: float) -> int | None:
        """Milliseconds of the next blocking slice, or `None` once `deadline` passed."""
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            return None
        slice_seconds = self._connection.max_block.total_seconds()
        return max(1, round(min(remaining, slice_seconds) * 1000))

    async def _read_now(
        self, stream: str, key: str, after_seq: int | None, count: int
    ) -> list[tuple[str, Event]]:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.xrange(key, "-", "+", count=1)
            pipe.xrevrange(key, "+", "-", count=1)
            start = "-" if after_seq is None else f"(0-{after_seq}"
            pipe.xrange(key, start, "+", count=count)
            replies = await pipe.execute()
        oldest: StreamRangeResponse = replies[0]
        newest: StreamRangeResponse = replies[1]
        entries: StreamRangeResponse = replies[2]
        if after_seq is not None:
            first_seq = self._parse(_text(oldest[0][0])) if oldest else None
            last_seq = self._parse(_text(newest[0][0])) if newest else 0
            if after_seq > last_seq or (first_seq is not None and after_seq + 1 < first_seq):
                raise StalePositionError(stream, f"0-{after_seq}")
        batch: list[tuple[str, Event]] = []
        for entry_id, fields in entries:
            position = _text(entry_id)
            data = None if fields is None else fields.get(_FIELD)
            batch.append((position, _decode(stream, position, data)))
        return batch

    @staticmethod
    def _parse(position: str) -> int:
        match = _REDIS_POSITION.fullmatch(position)
        if match is None:
            raise ValueError(f"not a position of this bus: {position!r}")
        return int(match.group(1))

    def _check_open(self) -> None:
        if self._closed:
            raise EventBusClosedError("the event bus is closed")


@contextmanager
def _redis_errors(stream: str, group: str | None = None) -> Iterator[None]:
    """Translate what callers of the group and dead-letter methods must tell apart."""
    try:
        yield
    except ResponseError as error:
        if group is not None and str(error).startswith("NOGROUP"):
            raise UnknownGroupError(stream, group) from None
        raise
    except (RedisConnectionError, RedisTimeoutError, OSError) as error:
        raise EventBusUnavailableError(
            f"Redis did not answer for stream {stream!r}: {type(error).__name__}"
        ) from error


def _stream_entries(reply: Any) -> list[tuple[str, bytes | None]]:
    """The (position, envelope bytes) pairs of an XREADGROUP reply for one stream."""
    # The connection speaks RESP2: [[key, [(id, fields), ...]]], or None when nothing came.
    found: list[tuple[str, bytes | None]] = []
    for _key, entries in reply or ():
        for entry_id, fields in entries:
            found.append((_text(entry_id), None if fields is None else fields.get(_FIELD)))
    return found


_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")


def _glob_escape(text: str) -> str:
    return _GLOB_SPECIAL.sub(r"\\\1", text)


def _text(value: bytes | str | None) -> str:
    if value is None:
        # Only XCLAIM-style replies carry id-less entries; XADD/XRANGE never do.
        raise EventBusError("Redis returned a stream entry without an id")
    return value.decode("ascii") if isinstance(value, bytes) else value
