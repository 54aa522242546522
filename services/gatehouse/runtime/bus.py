"""Event bus: append `gatehouse.events.v1.Event` envelopes to named streams and read them back.

`EventBus` is the seam (ARCHITECTURE §2, §7, §8). `InProcessEventBus` serves embedded mode and
unit tests; `RedisStreamsEventBus` serves production. Both pass the same contract tests
(`tests/contracts/bus_contract.py`).

What this layer gives:
- every published event gets a *position* in its stream; positions are opaque strings, only
  meaningful to the bus and the stream that issued them;
- `read(after=p)` returns the events published after `p`, oldest first, so a reader that
  remembers the last position it handled resumes with no gap and no duplicate; it can block
  until something arrives (live feeds, §8);
- each stream keeps its newest events only (`MaxLenPolicy`), so memory and Redis stay
  bounded. A reader that fell so far behind that events after its position were dropped gets
  `StalePositionError` instead of a silent gap: it decides whether to restart from the oldest
  retained event or to tell its client that history was lost.

What it does not give yet (the event backbone issue builds it on top of this): consumer
groups and acknowledgements (XREADGROUP/XACK), redelivery of unacknowledged events,
retries with backoff, dead-letter streams, and the transactional outbox and its relay. Until
then a reader that crashes re-reads from the position it last persisted itself.

Events are stored serialized (`SerializeToString()`) in both implementations, so a reader
never shares a mutable message with the publisher or with other readers.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Protocol

from google.protobuf.message import DecodeError
from redis.typing import StreamRangeResponse

from gatehouse.events.v1.envelope_pb2 import Event
from gatehouse.runtime.redis_connection import RedisConnection


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


@dataclass(frozen=True, slots=True)
class MaxLenPolicy:
    """How many of its newest events each stream keeps.

    The Redis bus trims approximately (`MAXLEN ~`: whole radix-tree nodes, far cheaper), so
    a stream there may hold somewhat more than its bound, never fewer newest events.
    """

    default: int = 10_000
    per_stream: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, bound in {"default": self.default, **self.per_stream}.items():
            if bound < 1:
                raise ValueError(f"max length of {name!r} must be >= 1, got {bound}")

    def max_len(self, stream: str) -> int:
        return self.per_stream.get(stream, self.default)


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


def _check_read_args(stream: str, count: int, block: timedelta | None) -> None:
    if not stream:
        raise ValueError("stream name must not be empty")
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    if block is not None and block < timedelta(0):
        raise ValueError(f"block must not be negative, got {block!r}")


def _decode(stream: str, position: str, data: bytes | str | None) -> Event:
    if not isinstance(data, bytes):
        raise MalformedEntryError(stream, position)
    try:
        return Event.FromString(data)
    except DecodeError:
        raise MalformedEntryError(stream, position) from None


# In-process positions: the per-stream sequence number, zero-padded so that string order is
# publication order (20 digits hold any 64-bit count).
_MEMORY_POSITION = re.compile(r"[0-9]{20}")


def _memory_position(seq: int) -> str:
    return f"{seq:020d}"


@dataclass(slots=True)
class _MemoryStream:
    entries: deque[tuple[int, bytes]]
    last_seq: int = 0
    # Set (and replaced) on every publish; created only while someone waits.
    changed: asyncio.Event | None = None


class InProcessEventBus:
    """`EventBus` inside one process (embedded mode, tests). State dies with the process.

    Blocked readers wait on a per-stream `asyncio.Event`, so a publish wakes them at once
    without polling. All methods must be called from the same event loop.
    """

    def __init__(self, max_len: MaxLenPolicy | None = None) -> None:
        self._policy = max_len or MaxLenPolicy()
        self._streams: dict[str, _MemoryStream] = {}
        self._closed = False

    async def publish(self, stream: str, event: Event) -> str:
        self._check_open()
        if not stream:
            raise ValueError("stream name must not be empty")
        data = event.SerializeToString()
        state = self._stream(stream)
        state.last_seq += 1
        state.entries.append((state.last_seq, data))
        self._wake(state)
        return _memory_position(state.last_seq)

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
            batch = self._slice(stream, state, after_seq, after is None, count)
            if batch:
                return [(position, _decode(stream, position, data)) for position, data in batch]
            remaining = deadline - loop.time()
            if remaining <= 0:
                return []
            if state.changed is None:
                state.changed = asyncio.Event()
            try:
                async with asyncio.timeout(remaining):
                    await state.changed.wait()
            except TimeoutError:
                return []
            self._check_open()

    async def latest_position(self, stream: str) -> str:
        self._check_open()
        state = self._streams.get(stream)
        return _memory_position(0 if state is None else state.last_seq)

    async def close(self) -> None:
        self._closed = True
        for state in self._streams.values():
            self._wake(state)

    def _stream(self, stream: str) -> _MemoryStream:
        state = self._streams.get(stream)
        if state is None:
            state = _MemoryStream(deque(maxlen=self._policy.max_len(stream)))
            self._streams[stream] = state
        return state

    def _slice(
        self, stream: str, state: _MemoryStream, after_seq: int, from_oldest: bool, count: int
    ) -> list[tuple[str, bytes]]:
        entries = state.entries
        first_seq = entries[0][0] if entries else state.last_seq + 1
        if after_seq > state.last_seq or (not from_oldest and after_seq + 1 < first_seq):
            raise StalePositionError(stream, _memory_position(after_seq))
        start = max(0, after_seq + 1 - first_seq)
        stop = min(len(entries), start + count)
        # Indexing a deque is cheap near either end, and live readers sit near the end.
        return [
            (_memory_position(seq), data)
            for seq, data in (entries[index] for index in range(start, stop))
        ]

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


# Redis positions are stream entry ids "0-<n>": the bus adds entries with the id "0-*", so
# Redis numbers them 1, 2, 3... per stream. Contiguous numbers are what make a gap provable:
# events after `after` were trimmed exactly when the oldest retained number is above
# after + 1. Time-based ids ("<ms>-<seq>") could not tell a trimmed event from a quiet moment.
# ("<ms>-*" ids need Redis >= 7.0.)
_REDIS_POSITION = re.compile(r"0-([0-9]{1,20})")
_REDIS_START = "0-0"
_FIELD = b"e"


class RedisStreamsEventBus:
    """`EventBus` on Redis Streams: XADD with `MAXLEN ~`, reads with XRANGE and XREAD BLOCK.

    The stream key is `connection.key_prefix + stream`. Each entry has one field, `e`, holding
    the serialized envelope. The bus borrows the connection; whoever built it closes it.
    `close()` only refuses further calls: a read blocked in Redis notices within one
    `connection.max_block` slice, so owners cancel their reader tasks first on shutdown.

    A blocked read holds one pooled connection while it waits: fan a stream out to many
    subscribers from one reader per process, not one blocked read per subscriber.
    """

    def __init__(self, connection: RedisConnection, max_len: MaxLenPolicy | None = None) -> None:
        self._connection = connection
        self._redis = connection.client
        self._policy = max_len or MaxLenPolicy()
        self._closed = False

    async def publish(self, stream: str, event: Event) -> str:
        self._check_open()
        if not stream:
            raise ValueError("stream name must not be empty")
        entry_id = await self._redis.xadd(
            self._connection.key(stream),
            {_FIELD: event.SerializeToString()},
            id="0-*",
            maxlen=self._policy.max_len(stream),
            approximate=True,
        )
        return _text(entry_id)

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
        slice_seconds = self._connection.max_block.total_seconds()
        while True:
            batch = await self._read_now(stream, key, after_seq, count)
            if batch:
                return batch
            remaining = deadline - loop.time()
            if remaining <= 0:
                return []
            # Only a wake-up call: the entries are fetched again by `_read_now`, which checks
            # for trimmed events atomically. XREAD returns at once if anything newer than
            # `after` exists, so an event published between the two calls is not missed.
            wait_ms = max(1, round(min(remaining, slice_seconds) * 1000))
            since = _REDIS_START if after_seq is None else f"0-{after_seq}"
            await self._redis.xread({key: since}, count=1, block=wait_ms)
            self._check_open()

    async def latest_position(self, stream: str) -> str:
        self._check_open()
        newest = await self._redis.xrevrange(self._connection.key(stream), "+", "-", count=1)
        return _text(newest[0][0]) if newest else _REDIS_START

    async def close(self) -> None:
        self._closed = True

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


def _text(value: bytes | str | None) -> str:
    if value is None:
        # Only XCLAIM-style replies carry id-less entries; XADD/XRANGE never do.
        raise EventBusError("Redis returned a stream entry without an id")
    return value.decode("ascii") if isinstance(value, bytes) else value
