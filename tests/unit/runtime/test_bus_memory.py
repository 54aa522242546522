"""InProcessEventBus: the shared contracts, plus exact retention, positions and wake-ups."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta

import pytest

from gatehouse.runtime.bus import (
    EventBus,
    EventBusClosedError,
    InProcessEventBus,
    MaxLenPolicy,
    StalePositionError,
)
from tests.contracts.bus_contract import BUS_CONTRACT, STREAM, BusHarness, make_event
from tests.contracts.clock import FakeClock
from tests.contracts.groups_contract import GROUPS_CONTRACT, GroupsHarness
from tests.contracts.timing import PATIENCE

WAIT_FOREVER = timedelta(minutes=5)


def _new_bus(policy: MaxLenPolicy | None) -> EventBus:
    return InProcessEventBus(policy)


@pytest.mark.parametrize("check", BUS_CONTRACT, ids=lambda check: check.__name__)
async def test_contract(check: Callable[[BusHarness], Awaitable[None]]) -> None:
    await check(BusHarness(new_bus=_new_bus))


@pytest.mark.parametrize("check", GROUPS_CONTRACT, ids=lambda check: check.__name__)
async def test_groups_contract(check: Callable[[GroupsHarness], Awaitable[None]]) -> None:
    clock = FakeClock()

    def new_bus(policy: MaxLenPolicy | None) -> InProcessEventBus:
        return InProcessEventBus(policy, clock=clock)

    await check(GroupsHarness(new_bus=new_bus, let_time_pass=clock.let_time_pass))


async def test_retains_exactly_max_len_newest_events() -> None:
    bus = InProcessEventBus(MaxLenPolicy(default=5, per_stream={"events:big": 50}))
    events = [make_event(n) for n in range(100)]
    for event in events:
        await bus.publish(STREAM, event)
        await bus.publish("events:big", event)
    assert [e for _, e in await bus.read(STREAM)] == events[-5:]
    assert len(await bus.read("events:big", count=1000)) == 50


async def test_positions_sort_in_publish_order_as_strings() -> None:
    bus = InProcessEventBus()
    positions = [await bus.publish(STREAM, make_event(n)) for n in range(12)]
    # 12 sequence numbers cross a digit boundary (9 -> 10): string order must still hold.
    assert sorted(positions) == positions
    assert len(set(positions)) == 12


async def test_a_position_from_another_incarnation_is_stale() -> None:
    before_restart = InProcessEventBus()
    for n in range(5):
        await before_restart.publish(STREAM, make_event(n))
    remembered = await before_restart.latest_position(STREAM)
    after_restart = InProcessEventBus()
    await after_restart.publish(STREAM, make_event(99))
    with pytest.raises(StalePositionError) as raised:
        await after_restart.read(STREAM, after=remembered)
    assert raised.value.position == remembered
    assert raised.value.stream == STREAM


async def test_every_blocked_reader_wakes_on_one_publish() -> None:
    bus = InProcessEventBus()
    start = await bus.latest_position(STREAM)
    readers = [
        asyncio.create_task(bus.read(STREAM, after=start, block=WAIT_FOREVER)) for _ in range(10)
    ]
    await asyncio.sleep(0)
    event = make_event(1)
    await bus.publish(STREAM, event)
    results = await asyncio.wait_for(asyncio.gather(*readers), PATIENCE.total_seconds())
    assert all([e for _, e in batch] == [event] for batch in results)


async def test_close_wakes_blocked_readers_with_an_error() -> None:
    bus = InProcessEventBus()
    reader = asyncio.create_task(bus.read(STREAM, block=WAIT_FOREVER))
    await asyncio.sleep(0)
    await bus.close()
    with pytest.raises(EventBusClosedError):
        await asyncio.wait_for(reader, PATIENCE.total_seconds())


async def test_a_cancelled_reader_does_not_disturb_the_others() -> None:
    bus = InProcessEventBus()
    quitter = asyncio.create_task(bus.read(STREAM, block=WAIT_FOREVER))
    stayer = asyncio.create_task(bus.read(STREAM, block=WAIT_FOREVER))
    await asyncio.sleep(0)
    quitter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await quitter
    event = make_event(1)
    await bus.publish(STREAM, event)
    batch = await asyncio.wait_for(stayer, PATIENCE.total_seconds())
    assert [e for _, e in batch] == [event]


async def test_readers_get_their_own_copies() -> None:
    bus = InProcessEventBus()
    event = make_event(1)
    await bus.publish(STREAM, event)
    event.subject = "changed by the publisher afterwards"
    [(_, first)] = await bus.read(STREAM)
    first.subject = "changed by a reader"
    [(_, second)] = await bus.read(STREAM)
    assert second.subject == "things/1"


def test_max_len_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max length"):
        MaxLenPolicy(default=0)
    with pytest.raises(ValueError, match="events:x"):
        MaxLenPolicy(per_stream={"events:x": -1})
