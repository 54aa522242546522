"""InMemoryKeyValueStore: the shared contract on a fake clock, plus expiry and memory bounds."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta

import pytest

from gatehouse.runtime.kv import InMemoryKeyValueStore, KeyValueStore
from tests.contracts.clock import FakeClock
from tests.contracts.kv_contract import KV_CONTRACT, KvHarness


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(clock: FakeClock) -> InMemoryKeyValueStore:
    return InMemoryKeyValueStore(clock=clock)


@pytest.mark.parametrize("check", KV_CONTRACT, ids=lambda check: check.__name__)
async def test_contract(
    store: InMemoryKeyValueStore,
    clock: FakeClock,
    check: Callable[[KvHarness], Awaitable[None]],
) -> None:
    await check(KvHarness(store=store, let_time_pass=clock.let_time_pass))


def test_satisfies_the_protocol(store: InMemoryKeyValueStore) -> None:
    protocol_view: KeyValueStore = store
    assert protocol_view is store


async def test_key_lives_exactly_its_ttl(store: InMemoryKeyValueStore, clock: FakeClock) -> None:
    await store.set("k", b"v", ttl=timedelta(seconds=10))
    clock.advance(timedelta(seconds=9, milliseconds=999))
    assert await store.get("k") == b"v"
    assert await store.ttl("k") == timedelta(milliseconds=1)
    clock.advance(timedelta(milliseconds=1))
    assert await store.get("k") is None


async def test_increment_window_is_fixed_from_first_increment(
    store: InMemoryKeyValueStore, clock: FakeClock
) -> None:
    window = timedelta(minutes=15)
    assert await store.increment("failures", window) == 1
    clock.advance(timedelta(minutes=10))
    assert await store.increment("failures", window) == 2
    clock.advance(timedelta(minutes=5))
    # Fifteen minutes after the first failure the window is over, whatever came later.
    assert await store.get("failures") is None
    assert await store.increment("failures", window) == 1


async def test_expired_keys_nobody_reads_are_purged_by_later_writes(
    store: InMemoryKeyValueStore, clock: FakeClock
) -> None:
    for n in range(10_000):
        await store.set(f"session:{n}", b"v", ttl=timedelta(seconds=1))
        clock.advance(timedelta(milliseconds=10))
    # About 100 keys are live at any moment; expired ones must not pile up.
    assert len(store) < 200


async def test_expiry_index_stays_bounded_when_one_key_is_rewritten(
    store: InMemoryKeyValueStore,
) -> None:
    for _ in range(10_000):
        await store.set("hot", b"v", ttl=timedelta(hours=1))
    assert len(store) == 1
    # Each rewrite leaves a stale expiry entry behind; the index is compacted periodically.
    assert len(store._expiries) < 200


async def test_purge_batch_must_be_positive() -> None:
    with pytest.raises(ValueError, match="purge_batch"):
        InMemoryKeyValueStore(purge_batch=0)
