"""The KV, event-bus and consumer-group contracts, run against both backends: in memory and a
real Redis.

Each test gets its own key namespace under the run's random prefix, so tests never see each
other's keys and the session fixture deletes everything at the end. Only the Redis variants
carry the `redis` mark (and skip without a Redis), so the in-memory ones always run.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from unittest.mock import ANY

import pytest

from gatehouse.runtime.bus import (
    DeadLetterInfo,
    EventBus,
    InProcessEventBus,
    MalformedEntryError,
    MaxLenPolicy,
    RedisStreamsEventBus,
    dead_letter_stream,
)
from gatehouse.runtime.kv import InMemoryKeyValueStore, RedisKeyValueStore
from gatehouse.runtime.redis_connection import RedisConnection, RedisOptions
from tests.contracts.bus_contract import BUS_CONTRACT, STREAM, BusHarness, make_event
from tests.contracts.clock import FakeClock
from tests.contracts.groups_contract import GROUPS_CONTRACT, GroupsHarness
from tests.contracts.kv_contract import KV_CONTRACT, KvHarness
from tests.contracts.timing import PATIENCE
from tests.integration.redis_fixtures import redis_prefix, redis_url  # noqa: F401

BACKENDS = ("memory", pytest.param("redis", marks=pytest.mark.redis))


async def _sleep(duration: timedelta) -> None:
    await asyncio.sleep(duration.total_seconds())


def _connect(
    request: pytest.FixtureRequest,
    socket_timeout: timedelta = timedelta(seconds=5),
    max_connections: int = 64,
) -> RedisConnection:
    """A connection to the test Redis, namespaced to the calling test."""
    url: str = request.getfixturevalue("redis_url")
    run_prefix: str = request.getfixturevalue("redis_prefix")
    options = RedisOptions(
        key_prefix=f"{run_prefix}{secrets.token_hex(4)}:",
        socket_timeout=socket_timeout,
        max_connections=max_connections,
    )
    return RedisConnection.from_url(url, options)


@pytest.fixture(params=BACKENDS)
async def kv_harness(request: pytest.FixtureRequest) -> AsyncIterator[KvHarness]:
    if request.param == "memory":
        clock = FakeClock()
        yield KvHarness(InMemoryKeyValueStore(clock=clock), clock.let_time_pass)
        return
    async with _connect(request) as connection:
        yield KvHarness(RedisKeyValueStore(connection), _sleep)


@pytest.fixture(params=BACKENDS)
async def bus_harness(request: pytest.FixtureRequest) -> AsyncIterator[BusHarness]:
    if request.param == "memory":
        yield BusHarness(InProcessEventBus)
        return
    async with _connect(request) as connection:

        def new_bus(policy: MaxLenPolicy | None) -> EventBus:
            return RedisStreamsEventBus(connection, policy)

        yield BusHarness(new_bus)


@pytest.fixture(params=BACKENDS)
async def groups_harness(request: pytest.FixtureRequest) -> AsyncIterator[GroupsHarness]:
    if request.param == "memory":
        clock = FakeClock()

        def new_memory_bus(policy: MaxLenPolicy | None) -> InProcessEventBus:
            return InProcessEventBus(policy, clock=clock)

        yield GroupsHarness(new_memory_bus, clock.let_time_pass)
        return
    async with _connect(request) as connection:

        def new_bus(policy: MaxLenPolicy | None) -> RedisStreamsEventBus:
            return RedisStreamsEventBus(connection, policy)

        yield GroupsHarness(new_bus, _sleep)


@pytest.fixture
async def redis_connection(request: pytest.FixtureRequest) -> AsyncIterator[RedisConnection]:
    async with _connect(request) as connection:
        yield connection


@pytest.mark.parametrize("check", KV_CONTRACT, ids=lambda check: check.__name__)
async def test_kv_contract(
    kv_harness: KvHarness, check: Callable[[KvHarness], Awaitable[None]]
) -> None:
    await check(kv_harness)


@pytest.mark.parametrize("check", BUS_CONTRACT, ids=lambda check: check.__name__)
async def test_bus_contract(
    bus_harness: BusHarness, check: Callable[[BusHarness], Awaitable[None]]
) -> None:
    await check(bus_harness)


@pytest.mark.parametrize("check", GROUPS_CONTRACT, ids=lambda check: check.__name__)
async def test_groups_contract(
    groups_harness: GroupsHarness, check: Callable[[GroupsHarness], Awaitable[None]]
) -> None:
    await check(groups_harness)


@pytest.mark.redis
async def test_connection_answers_ping(redis_connection: RedisConnection) -> None:
    await redis_connection.ping()


@pytest.mark.redis
async def test_a_connection_killed_by_the_server_is_replaced_transparently(
    request: pytest.FixtureRequest, redis_connection: RedisConnection
) -> None:
    # One pooled connection, so the one killed is the one the next command uses.
    async with _connect(request, max_connections=1) as connection:
        store = RedisKeyValueStore(connection)
        await store.set("k", b"v")
        victim = await connection.client.client_id()
        # Killed from another connection, as a Redis restart or an idle-timeout would.
        await redis_connection.client.client_kill_filter(_id=str(victim))
        assert await store.get("k") == b"v"
        assert await connection.client.client_id() != victim


@pytest.mark.redis
async def test_kv_keys_live_under_the_prefix(
    request: pytest.FixtureRequest, redis_connection: RedisConnection
) -> None:
    store = RedisKeyValueStore(redis_connection)
    await store.set("session:1", b"v")
    raw = redis_connection.client
    assert await raw.get(f"{redis_connection.key_prefix}session:1") == b"v"
    async with _connect(request) as neighbour:
        # Another deployment (prefix) sharing the Redis sees none of it.
        assert await RedisKeyValueStore(neighbour).get("session:1") is None


@pytest.mark.redis
async def test_bus_stores_one_field_per_entry_under_the_prefix(
    redis_connection: RedisConnection,
) -> None:
    bus = RedisStreamsEventBus(redis_connection)
    event = make_event(1)
    position = await bus.publish(STREAM, event)
    entries = await redis_connection.client.xrange(redis_connection.key(STREAM))
    assert entries == [(position.encode(), {b"e": event.SerializeToString()})]


@pytest.mark.redis
async def test_bus_reports_a_foreign_entry_and_lets_readers_step_past_it(
    redis_connection: RedisConnection,
) -> None:
    bus = RedisStreamsEventBus(redis_connection)
    foreign = await redis_connection.client.xadd(
        redis_connection.key(STREAM), {b"something": b"else"}, id="0-*"
    )
    event = make_event(2)
    await bus.publish(STREAM, event)
    with pytest.raises(MalformedEntryError) as raised:
        await bus.read(STREAM)
    assert raised.value.position.encode() == foreign
    assert [e for _, e in await bus.read(STREAM, after=raised.value.position)] == [event]


@pytest.mark.redis
async def test_bus_blocks_longer_than_the_socket_timeout(request: pytest.FixtureRequest) -> None:
    # A blocking XREAD that outlived the socket timeout would fail as a timeout; the bus
    # waits in slices shorter than it instead.
    async with _connect(request, socket_timeout=timedelta(seconds=1)) as connection:
        bus = RedisStreamsEventBus(connection)
        after = await bus.latest_position(STREAM)
        quiet = await asyncio.wait_for(
            bus.read(STREAM, after=after, block=timedelta(seconds=1.5)), PATIENCE.total_seconds()
        )
        assert quiet == []
        reader = asyncio.create_task(bus.read(STREAM, after=after, block=timedelta(minutes=5)))
        await asyncio.sleep(1.2)
        event = make_event(3)
        await bus.publish(STREAM, event)
        batch = await asyncio.wait_for(reader, PATIENCE.total_seconds())
        assert [e for _, e in batch] == [event]


@pytest.mark.redis
async def test_a_dead_letter_stores_the_envelope_and_json_metadata(
    redis_connection: RedisConnection,
) -> None:
    bus = RedisStreamsEventBus(redis_connection)
    event = make_event(4)
    position = await bus.publish(STREAM, event)
    info = DeadLetterInfo(
        stream=STREAM,
        group="notifications",
        position=position,
        reason="handler_failed",
        error="RuntimeError: boom",
        attempts=5,
        consumer="host-1-abc123",
        time=datetime(2030, 1, 1, 12, 0, tzinfo=UTC),
    )
    dead_position = await bus.dead_letter(event, info)
    key = redis_connection.key(dead_letter_stream(STREAM, "notifications"))
    entries = await redis_connection.client.xrange(key)
    assert entries == [(dead_position.encode(), {b"e": event.SerializeToString(), b"dl": ANY})]
    assert json.loads(entries[0][1][b"dl"]) == {  # type: ignore[index]
        "stream": STREAM,
        "group": "notifications",
        "position": position,
        "reason": "handler_failed",
        "error": "RuntimeError: boom",
        "attempts": 5,
        "consumer": "host-1-abc123",
        "time": "2030-01-01T12:00:00+00:00",
    }


@pytest.mark.redis
async def test_group_state_lives_in_redis_for_every_replica(
    request: pytest.FixtureRequest, redis_connection: RedisConnection
) -> None:
    # Two processes' buses on one Redis: what one consumer left pending, another sees.
    first = RedisStreamsEventBus(redis_connection)
    await first.ensure_group(STREAM, "workers")
    await first.publish(STREAM, make_event(1))
    [delivery] = await first.read_group(STREAM, "workers", "replica-a")
    async with _connect(request) as other_connection:
        # Same namespace, separate client: a second replica.
        other = RedisStreamsEventBus(
            RedisConnection(other_connection.client, key_prefix=redis_connection.key_prefix)
        )
        assert await other.pending_count(STREAM, "workers") == 1
        [claimed] = await other.claim_idle(STREAM, "workers", "replica-b", timedelta(0))
        assert claimed.position == delivery.position
        assert claimed.delivery_count == 2
