"""Lockout counters and rate limits in the shared key-value store (Redis in production), so
every replica sees the same counts.

Counters rely on the store's atomic `increment` with a TTL set at creation: the failure
window starts at the first failure and is not stretched by later ones. A lock is stored as
the instant it lifts, judged against the service clock; its TTL only lets the store forget
it. Judging by the clock (not by the key disappearing) keeps the rule testable with an
injected clock on every backend.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

from redis.exceptions import RedisError

from gatehouse.auth.domain.lockout import Lock, LockoutPolicy, LockScope
from gatehouse.runtime.errors import Unavailable
from gatehouse.runtime.identity import RevocationList
from gatehouse.runtime.kv import KeyValueStore

_PREFIX = "auth:lockout:"
_RATE_PREFIX = "auth:rate:"


@contextmanager
def store_unavailable_as_unavailable() -> Iterator[None]:
    """A store outage is UNAVAILABLE (retry later), never INTERNAL. Sign-ins fail closed:
    without the counters, brute force would go unchecked."""
    try:
        yield
    except (RedisError, OSError, TimeoutError) as error:
        raise Unavailable(
            "the shared state store is unavailable; try again shortly",
            reason="STORE_UNAVAILABLE",
        ) from error


# Extra life for a lock key beyond the lock, so a store clock slightly ahead of ours never
# drops a lock early.
_GRACE = timedelta(seconds=5)


class KeyValueLockout:
    """`Lockout` with one policy per scope (accounts lock sooner than shared addresses)."""

    def __init__(
        self,
        kv: KeyValueStore,
        *,
        account: LockoutPolicy,
        address: LockoutPolicy,
        clock: Callable[[], datetime],
    ) -> None:
        self._kv = kv
        self._policies = {LockScope.ACCOUNT: account, LockScope.CLIENT_ADDRESS: address}
        self._clock = clock

    async def current(self, account_key: str, address: str) -> Lock | None:
        with store_unavailable_as_unavailable():
            return await self._current(account_key, address)

    async def record_failure(self, account_key: str, address: str) -> Lock | None:
        with store_unavailable_as_unavailable():
            return await self._record_failure(account_key, address)

    async def clear(self, account_key: str) -> None:
        with store_unavailable_as_unavailable():
            base = f"{_PREFIX}{LockScope.ACCOUNT}:{account_key}"
            for suffix in ("failures", "level", "until"):
                await self._kv.delete(f"{base}:{suffix}")

    async def _current(self, account_key: str, address: str) -> Lock | None:
        now = self._clock()
        for scope, key in self._keys(account_key, address):
            raw = await self._kv.get(f"{_PREFIX}{scope}:{key}:until")
            if raw is None:
                continue
            until = datetime.fromtimestamp(float(raw), UTC)
            if now < until:
                return Lock(scope=scope, retry_after=until - now)
        return None

    async def _record_failure(self, account_key: str, address: str) -> Lock | None:
        now = self._clock()
        locks: list[Lock] = []
        for scope, key in self._keys(account_key, address):
            policy = self._policies[scope]
            base = f"{_PREFIX}{scope}:{key}"
            failures = await self._kv.increment(f"{base}:failures", ttl_on_create=policy.window)
            if failures < policy.max_failures:
                continue
            level = await self._kv.increment(f"{base}:level", ttl_on_create=policy.memory)
            duration = policy.lock_duration(level)
            until = now + duration
            await self._kv.set(f"{base}:until", repr(until.timestamp()).encode(), duration + _GRACE)
            # The next lock needs a fresh run of failures, after this one lifts.
            await self._kv.delete(f"{base}:failures")
            locks.append(Lock(scope=scope, retry_after=duration, failures=failures, level=level))
        return locks[0] if locks else None

    @staticmethod
    def _keys(account_key: str, address: str) -> list[tuple[LockScope, str]]:
        keys = [(LockScope.ACCOUNT, account_key)] if account_key else []
        if address:
            keys.append((LockScope.CLIENT_ADDRESS, address))
        return keys


class KeyValueRateLimiter:
    """Fixed-window counters: `limit` uses per `window`, the window starting at first use."""

    def __init__(self, kv: KeyValueStore) -> None:
        self._kv = kv

    async def hit(self, key: str, limit: int, window: timedelta) -> timedelta | None:
        full_key = _RATE_PREFIX + key
        with store_unavailable_as_unavailable():
            count = await self._kv.increment(full_key, ttl_on_create=window)
            if count <= limit:
                return None
            remaining = await self._kv.ttl(full_key)
        return remaining if remaining is not None else window


class GuardedRevocations:
    """The shared revocation list, with store outages reported as UNAVAILABLE."""

    def __init__(self, revocations: RevocationList) -> None:
        self._revocations = revocations

    async def is_revoked(self, token_id: str) -> bool:
        with store_unavailable_as_unavailable():
            return await self._revocations.is_revoked(token_id)

    async def revoke(self, token_id: str, until: datetime) -> None:
        with store_unavailable_as_unavailable():
            await self._revocations.revoke(token_id, until)
