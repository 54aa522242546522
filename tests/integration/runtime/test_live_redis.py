"""LiveHub over a real Redis: the scenarios of the in-process tests (`LIVE_SCENARIOS`: filters,
fan-out from one reader, resume on another replica while publishers run, merged streams,
slow subscribers, bounded memory with 20k events, heartbeats, lifecycle, cancellation, resume
errors), plus what only Redis has: connections held, foreign entries, killed connections.

Every hub built by a test is another "replica": its own `RedisConnection` (own pool), sharing
only the streams under the test's key prefix.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from gatehouse.runtime.bus import EventBus, MaxLenPolicy, RedisStreamsEventBus
from gatehouse.runtime.live import LiveItem
from gatehouse.runtime.redis_connection import RedisConnection, RedisOptions
from tests.integration.redis_fixtures import redis_prefix, redis_url  # noqa: F401
from tests.unit.runtime.test_live import (
    ALERTS,
    LIVE_SCENARIOS,
    LiveHarness,
    history,
    ids,
    make_event,
    publish_concurrently,
    publish_many,
    sentinel,
    take,
    take_until_sentinels,
)

pytestmark = pytest.mark.redis


@pytest.fixture
async def redis_harness(request: pytest.FixtureRequest) -> AsyncIterator[LiveHarness]:
    url: str = request.getfixturevalue("redis_url")
    run_prefix: str = request.getfixturevalue("redis_prefix")
    # Fresh streams for every test, all deleted with the run's prefix at the end.
    prefix = f"{run_prefix}live:{secrets.token_hex(4)}:"
    connections: list[RedisConnection] = []

    def new_bus(policy: MaxLenPolicy | None) -> EventBus:
        connection = RedisConnection.from_url(url, RedisOptions(key_prefix=prefix))
        connections.append(connection)
        return RedisStreamsEventBus(connection, policy)

    harness = LiveHarness(new_bus)
    try:
        yield harness
    finally:
        await harness.close()
        for connection in connections:
            await connection.aclose()


@pytest.mark.parametrize("check", LIVE_SCENARIOS, ids=lambda check: check.__name__)
async def test_scenario(
    redis_harness: LiveHarness, check: Callable[[LiveHarness], Awaitable[None]]
) -> None:
    await check(redis_harness)


async def _clients_named(admin: RedisConnection, name: str) -> list[str]:
    clients = await admin.client.client_list()
    return [str(client["id"]) for client in clients if client.get("name") == name]


def _connect(
    request: pytest.FixtureRequest, prefix: str, name: str | None = None
) -> RedisConnection:
    url: str = request.getfixturevalue("redis_url")
    return RedisConnection.from_url(url, RedisOptions(key_prefix=prefix, client_name=name))


def _fresh_prefix(request: pytest.FixtureRequest) -> str:
    return f"{request.getfixturevalue('redis_prefix')}live:{secrets.token_hex(4)}:"


async def test_many_subscribers_hold_one_redis_connection(
    request: pytest.FixtureRequest, redis_harness: LiveHarness
) -> None:
    prefix, name = _fresh_prefix(request), f"live-test-{secrets.token_hex(4)}"
    async with _connect(request, prefix, name) as mine, _connect(request, prefix) as other:
        hub = await redis_harness.hub(RedisStreamsEventBus(mine))
        subs = [await hub.subscribe([ALERTS]) for _ in range(50)]
        events = await publish_many(RedisStreamsEventBus(other), ALERTS, 100)
        for sub in subs:
            assert ids(await take(sub, 100)) == [event.id for event in events]
        # 50 subscribers wait on one blocking read: one connection (not 50) ever opened.
        assert len(await _clients_named(other, name)) == 1
        await redis_harness.close()


async def test_foreign_entries_are_stepped_over(
    request: pytest.FixtureRequest, redis_harness: LiveHarness
) -> None:
    prefix = _fresh_prefix(request)
    async with _connect(request, prefix) as connection:
        bus = RedisStreamsEventBus(connection)
        hub = await redis_harness.hub(bus)
        sub = await hub.subscribe([ALERTS])
        before = await publish_many(bus, ALERTS, 3)
        # Written by something that is not the bus: no `e` field.
        await connection.client.xadd(connection.key(ALERTS), {b"something": b"else"}, id="0-*")
        after = await publish_many(bus, ALERTS, 3)
        assert ids(await take(sub, 6)) == [event.id for event in before + after]
        # A replay crosses it too.
        resumed = await hub.subscribe([ALERTS], resume_after=before[0].id)
        assert ids(await take(resumed, 5)) == [event.id for event in before[1:] + after]
        await redis_harness.close()


async def test_a_killed_reader_connection_loses_nothing(
    request: pytest.FixtureRequest, redis_harness: LiveHarness
) -> None:
    prefix, name = _fresh_prefix(request), f"live-kill-{secrets.token_hex(4)}"
    async with _connect(request, prefix, name) as mine, _connect(request, prefix) as other:
        hub = await redis_harness.hub(RedisStreamsEventBus(mine))
        sub = await hub.subscribe([ALERTS])
        publisher = RedisStreamsEventBus(other)
        collecting = asyncio.create_task(take_until_sentinels(sub))
        publishing = asyncio.create_task(publish_concurrently(publisher, [ALERTS], 3000))
        killed = 0
        for _ in range(5):
            await asyncio.sleep(0.05)
            # As a failover or an idle timeout would: the reader's blocking read dies.
            for client_id in await _clients_named(other, name):
                killed += await other.client.client_kill_filter(_id=client_id)
        await publishing
        await publisher.publish(ALERTS, sentinel(ALERTS))
        received = await collecting
        assert killed >= 1
        everything = [event.id for event in await history(publisher, ALERTS)]
        assert ids(received) == everything[:-1]
        await redis_harness.close()


async def test_events_keep_their_envelope(redis_harness: LiveHarness) -> None:
    bus = redis_harness.new_bus(None)
    hub = await redis_harness.hub(bus)
    sub = await hub.subscribe([ALERTS])
    event = make_event("alert", 7, "buildings/b9")
    event.traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    await bus.publish(ALERTS, event)
    (item,) = await take(sub, 1)
    assert isinstance(item, LiveItem)
    assert item.event == event
