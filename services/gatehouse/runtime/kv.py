"""Key-value store with per-key time to live: sessions, caches, lockouts, rate limits.

`KeyValueStore` is the seam (ARCHITECTURE §2). `InMemoryKeyValueStore` serves embedded mode
and unit tests; `RedisKeyValueStore` serves production, where replicas must share state.
Both pass the same contract tests (`tests/contracts/kv_contract.py`).

Semantics both implementations keep:
- keys are `str`, values opaque `bytes`; a TTL is a positive `timedelta` (`None`: no expiry);
- `set` replaces the value and the TTL (a `set` without TTL makes the key persistent);
- an expired key behaves exactly like a missing one;
- `increment` treats a missing key as 0 and applies `ttl_on_create` only when it creates the
  key, so a lockout window starts at the first failure and is not extended by later ones;
  the value is stored as ASCII decimal (what Redis INCR does), so `get` returns e.g. `b"3"`.
"""

from __future__ import annotations

import heapq
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

from redis.exceptions import ResponseError

from gatehouse.runtime.redis_connection import RedisConnection


class KeyValueStore(Protocol):
    """Shared key-value state with expiry. Every method is atomic with respect to others."""

    async def get(self, key: str) -> bytes | None:
        """The value, or `None` when the key is missing or expired."""
        ...

    async def set(self, key: str, value: bytes, ttl: timedelta | None = None) -> None:
        """Store `value`, replacing any previous value and TTL."""
        ...

    async def set_if_absent(self, key: str, value: bytes, ttl: timedelta | None = None) -> bool:
        """Store `value` only if the key is missing; `True` if this call stored it."""
        ...

    async def delete(self, key: str) -> bool:
        """Remove the key; `True` if it existed."""
        ...

    async def increment(self, key: str, ttl_on_create: timedelta | None = None) -> int:
        """Add one to the integer at `key` and return the new value.

        A missing key starts at 0 and gets `ttl_on_create`; an existing key keeps its TTL.
        Raises `ValueError` if the stored value is not an integer.
        """
        ...

    async def ttl(self, key: str) -> timedelta | None:
        """Time left before expiry; `None` when the key is missing or never expires."""
        ...


# What Redis INCR accepts as an integer (no sign "+", no spaces, unlike Python's int()).
_INTEGER = re.compile(rb"-?[0-9]+")


def _check_ttl(ttl: timedelta | None) -> None:
    if ttl is not None and ttl <= timedelta(0):
        raise ValueError(f"ttl must be positive, got {ttl!r}")


def _ttl_ms(ttl: timedelta) -> int:
    # Round up: a sub-millisecond TTL must still expire in the future, never "now".
    return max(1, math.ceil(ttl / timedelta(milliseconds=1)))


@dataclass(slots=True)
class _Entry:
    value: bytes
    expires_at: float | None
    # Distinguishes this entry from an earlier one under the same key in the expiry heap.
    generation: int


class InMemoryKeyValueStore:
    """A dict with expiry, for one process. Not shared between replicas.

    Expired keys are dropped when touched, and every write also purges at most
    `purge_batch` keys whose time has passed, oldest first, so keys nobody reads again do
    not accumulate. The expiry heap is rebuilt when stale entries (from overwritten or
    deleted keys) outnumber the live ones, so memory tracks the number of live keys.

    `clock` returns monotonic seconds; tests inject a fake one to move time.
    """

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, purge_batch: int = 32
    ) -> None:
        if purge_batch < 1:
            raise ValueError("purge_batch must be >= 1")
        self._clock = clock
        self._purge_batch = purge_batch
        self._entries: dict[str, _Entry] = {}
        self._expiries: list[tuple[float, int, str]] = []
        self._generation = 0

    def __len__(self) -> int:
        """Keys held, including expired ones not yet purged (for tests and metrics)."""
        return len(self._entries)

    async def get(self, key: str) -> bytes | None:
        entry = self._live(key, self._clock())
        return None if entry is None else entry.value

    async def set(self, key: str, value: bytes, ttl: timedelta | None = None) -> None:
        _check_ttl(ttl)
        now = self._clock()
        self._store(key, value, ttl, now)
        self._purge(now)

    async def set_if_absent(self, key: str, value: bytes, ttl: timedelta | None = None) -> bool:
        _check_ttl(ttl)
        now = self._clock()
        stored = self._live(key, now) is None
        if stored:
            self._store(key, value, ttl, now)
        self._purge(now)
        return stored

    async def delete(self, key: str) -> bool:
        existed = self._live(key, self._clock()) is not None
        self._entries.pop(key, None)
        return existed

    async def increment(self, key: str, ttl_on_create: timedelta | None = None) -> int:
        _check_ttl(ttl_on_create)
        now = self._clock()
        entry = self._live(key, now)
        if entry is None:
            count = 1
            self._store(key, b"1", ttl_on_create, now)
        else:
            if _INTEGER.fullmatch(entry.value) is None:
                raise ValueError(f"value at {key!r} is not an integer")
            count = int(entry.value) + 1
            entry.value = str(count).encode("ascii")
        self._purge(now)
        return count

    async def ttl(self, key: str) -> timedelta | None:
        now = self._clock()
        entry = self._live(key, now)
        if entry is None or entry.expires_at is None:
            return None
        return timedelta(seconds=entry.expires_at - now)

    def _live(self, key: str, now: float) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires_at is not None and entry.expires_at <= now:
            del self._entries[key]
            return None
        return entry

    def _store(self, key: str, value: bytes, ttl: timedelta | None, now: float) -> None:
        self._generation += 1
        expires_at = None if ttl is None else now + ttl.total_seconds()
        self._entries[key] = _Entry(value, expires_at, self._generation)
        if expires_at is not None:
            heapq.heappush(self._expiries, (expires_at, self._generation, key))

    def _purge(self, now: float) -> None:
        heap = self._expiries
        for _ in range(self._purge_batch):
            if not heap or heap[0][0] > now:
                break
            _, generation, key = heapq.heappop(heap)
            entry = self._entries.get(key)
            if entry is not None and entry.generation == generation:
                del self._entries[key]
        if len(heap) > 2 * len(self._entries) + 64:
            self._expiries = [
                (entry.expires_at, entry.generation, key)
                for key, entry in self._entries.items()
                if entry.expires_at is not None
            ]
            heapq.heapify(self._expiries)


# INCR and the TTL of a new counter in one step: with two separate commands a crash (or a lost
# connection) in between would leave a counter that never expires, i.e. a permanent lockout.
# A script also sees one frozen clock, so the key cannot expire between EXISTS and INCR.
_INCREMENT_SCRIPT = """
local created = redis.call('EXISTS', KEYS[1]) == 0
local count = redis.call('INCR', KEYS[1])
if created and ARGV[1] ~= '' then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return count
"""


class RedisKeyValueStore:
    """`KeyValueStore` on Redis strings; every key is `connection.key_prefix + key`."""

    def __init__(self, connection: RedisConnection) -> None:
        self._connection = connection
        self._redis = connection.client
        self._increment = self._redis.register_script(_INCREMENT_SCRIPT)

    async def get(self, key: str) -> bytes | None:
        value = await self._redis.get(self._connection.key(key))
        return None if value is None else _as_bytes(value)

    async def set(self, key: str, value: bytes, ttl: timedelta | None = None) -> None:
        _check_ttl(ttl)
        await self._redis.set(
            self._connection.key(key), value, px=None if ttl is None else _ttl_ms(ttl)
        )

    async def set_if_absent(self, key: str, value: bytes, ttl: timedelta | None = None) -> bool:
        _check_ttl(ttl)
        stored = await self._redis.set(
            self._connection.key(key),
            value,
            px=None if ttl is None else _ttl_ms(ttl),
            nx=True,
        )
        return bool(stored)

    async def delete(self, key: str) -> bool:
        removed: int = await self._redis.delete(self._connection.key(key))
        return removed > 0

    async def increment(self, key: str, ttl_on_create: timedelta | None = None) -> int:
        _check_ttl(ttl_on_create)
        ttl_arg = "" if ttl_on_create is None else str(_ttl_ms(ttl_on_create))
        try:
            count = await self._increment(keys=[self._connection.key(key)], args=[ttl_arg])
        except ResponseError as error:
            if "not an integer" in str(error):
                raise ValueError(f"value at {key!r} is not an integer") from None
            raise
        return int(count)

    async def ttl(self, key: str) -> timedelta | None:
        remaining_ms: int = await self._redis.pttl(self._connection.key(key))
        # PTTL: -2 missing key, -1 no expiry.
        if remaining_ms < 0:
            return None
        return timedelta(milliseconds=remaining_ms)


def _as_bytes(value: bytes | str) -> bytes:
    # The connection never decodes, but a caller-built client might; keep the contract.
    return value if isinstance(value, bytes) else value.encode()
