"""The `KeyValueStore` contract: every implementation must pass each check in `KV_CONTRACT`.

Test modules parametrise one test over `KV_CONTRACT` with a `KvHarness` for their backend.
Timing: a TTL that must *expire* is short (`SHORT_TTL`) and the check only waits for it to be
gone (bounded by a generous deadline); a key that must still *be there* gets `LONG_TTL`, so no
check depends on how fast the machine is.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

import pytest

from gatehouse.runtime.kv import KeyValueStore
from tests.contracts.timing import eventually

SHORT_TTL = timedelta(milliseconds=50)
LONG_TTL = timedelta(hours=1)
CONCURRENCY = 50


@dataclass(frozen=True)
class KvHarness:
    """A fresh, empty store plus a way to let time pass for it."""

    store: KeyValueStore
    # Advances the store's clock by (at least) the given duration: a fake-clock step in
    # memory, a real sleep against Redis.
    let_time_pass: Callable[[timedelta], Awaitable[None]]


async def _wait_until_gone(harness: KvHarness, key: str) -> None:
    async def gone() -> bool:
        return await harness.store.get(key) is None

    async def step() -> None:
        await harness.let_time_pass(SHORT_TTL / 2)

    await eventually(gone, step=step, what=f"key {key!r} expires")


async def check_get_missing_is_none(harness: KvHarness) -> None:
    assert await harness.store.get("missing") is None
    assert await harness.store.ttl("missing") is None


async def check_set_and_get_round_trip_bytes(harness: KvHarness) -> None:
    store = harness.store
    await store.set("binary", b"\x00\xff\x10bytes")
    await store.set("empty", b"")
    assert await store.get("binary") == b"\x00\xff\x10bytes"
    # An empty value is a value, not a missing key.
    assert await store.get("empty") == b""


async def check_set_without_ttl_never_expires(harness: KvHarness) -> None:
    await harness.store.set("forever", b"v")
    assert await harness.store.ttl("forever") is None
    await harness.let_time_pass(SHORT_TTL * 2)
    assert await harness.store.get("forever") == b"v"


async def check_ttl_reports_remaining_time(harness: KvHarness) -> None:
    await harness.store.set("timed", b"v", ttl=LONG_TTL)
    remaining = await harness.store.ttl("timed")
    assert remaining is not None
    assert timedelta(0) < remaining <= LONG_TTL


async def check_key_expires_after_ttl(harness: KvHarness) -> None:
    await harness.store.set("short", b"v", ttl=SHORT_TTL)
    await _wait_until_gone(harness, "short")
    assert await harness.store.ttl("short") is None
    # An expired key is simply missing: deleting it reports nothing removed.
    assert await harness.store.delete("short") is False


async def check_set_replaces_value_and_ttl(harness: KvHarness) -> None:
    store = harness.store
    await store.set("k", b"old", ttl=LONG_TTL)
    await store.set("k", b"new")
    assert await store.get("k") == b"new"
    assert await store.ttl("k") is None
    await store.set("k", b"newer", ttl=SHORT_TTL)
    await _wait_until_gone(harness, "k")


async def check_set_if_absent_stores_only_once(harness: KvHarness) -> None:
    store = harness.store
    assert await store.set_if_absent("lease", b"first", ttl=LONG_TTL) is True
    assert await store.set_if_absent("lease", b"second", ttl=LONG_TTL) is False
    assert await store.get("lease") == b"first"


async def check_set_if_absent_succeeds_again_after_expiry(harness: KvHarness) -> None:
    store = harness.store
    assert await store.set_if_absent("lease", b"first", ttl=SHORT_TTL) is True
    await _wait_until_gone(harness, "lease")
    assert await store.set_if_absent("lease", b"second", ttl=LONG_TTL) is True
    assert await store.get("lease") == b"second"


async def check_set_if_absent_is_atomic_under_concurrency(harness: KvHarness) -> None:
    store = harness.store
    results = await asyncio.gather(
        *(store.set_if_absent("race", f"{n}".encode(), ttl=LONG_TTL) for n in range(CONCURRENCY))
    )
    assert results.count(True) == 1
    winner = results.index(True)
    assert await store.get("race") == f"{winner}".encode()


async def check_delete_reports_whether_key_existed(harness: KvHarness) -> None:
    store = harness.store
    assert await store.delete("nothing") is False
    await store.set("doomed", b"v")
    assert await store.delete("doomed") is True
    assert await store.get("doomed") is None
    assert await store.delete("doomed") is False


async def check_increment_counts_from_one(harness: KvHarness) -> None:
    store = harness.store
    assert [await store.increment("count", LONG_TTL) for _ in range(3)] == [1, 2, 3]
    assert await store.get("count") == b"3"


async def check_increment_sets_ttl_only_on_create(harness: KvHarness) -> None:
    store = harness.store
    await store.increment("window", LONG_TTL)
    first = await store.ttl("window")
    assert first is not None
    assert timedelta(0) < first <= LONG_TTL
    await harness.let_time_pass(SHORT_TTL)
    await store.increment("window", LONG_TTL)
    later = await store.ttl("window")
    # Later increments must not push the window's end out (a lockout would never end).
    assert later is not None
    assert later <= first


async def check_increment_window_restarts_after_expiry(harness: KvHarness) -> None:
    store = harness.store
    assert await store.increment("attempts", SHORT_TTL) == 1
    await _wait_until_gone(harness, "attempts")
    assert await store.increment("attempts", LONG_TTL) == 1


async def check_increment_without_ttl_is_persistent(harness: KvHarness) -> None:
    assert await harness.store.increment("total") == 1
    assert await harness.store.ttl("total") is None


async def check_increment_keeps_ttl_of_existing_persistent_key(harness: KvHarness) -> None:
    store = harness.store
    await store.set("preset", b"41")
    assert await store.increment("preset", LONG_TTL) == 42
    assert await store.ttl("preset") is None


async def check_increment_is_atomic_under_concurrency(harness: KvHarness) -> None:
    store = harness.store
    results = await asyncio.gather(*(store.increment("hits", LONG_TTL) for _ in range(CONCURRENCY)))
    assert sorted(results) == list(range(1, CONCURRENCY + 1))
    assert await store.ttl("hits") is not None


async def check_increment_rejects_non_integer(harness: KvHarness) -> None:
    await harness.store.set("text", b"not a number")
    with pytest.raises(ValueError, match="not an integer"):
        await harness.store.increment("text")
    assert await harness.store.get("text") == b"not a number"


async def check_non_positive_ttl_is_rejected(harness: KvHarness) -> None:
    store = harness.store
    for bad in (timedelta(0), timedelta(seconds=-1)):
        with pytest.raises(ValueError, match="ttl"):
            await store.set("k", b"v", ttl=bad)
        with pytest.raises(ValueError, match="ttl"):
            await store.set_if_absent("k", b"v", ttl=bad)
        with pytest.raises(ValueError, match="ttl"):
            await store.increment("k", bad)
    assert await store.get("k") is None


KV_CONTRACT: tuple[Callable[[KvHarness], Awaitable[None]], ...] = (
    check_get_missing_is_none,
    check_set_and_get_round_trip_bytes,
    check_set_without_ttl_never_expires,
    check_ttl_reports_remaining_time,
    check_key_expires_after_ttl,
    check_set_replaces_value_and_ttl,
    check_set_if_absent_stores_only_once,
    check_set_if_absent_succeeds_again_after_expiry,
    check_set_if_absent_is_atomic_under_concurrency,
    check_delete_reports_whether_key_existed,
    check_increment_counts_from_one,
    check_increment_sets_ttl_only_on_create,
    check_increment_window_restarts_after_expiry,
    check_increment_without_ttl_is_persistent,
    check_increment_keeps_ttl_of_existing_persistent_key,
    check_increment_is_atomic_under_concurrency,
    check_increment_rejects_non_integer,
    check_non_positive_ttl_is_rejected,
)
