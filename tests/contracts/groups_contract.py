"""The consumer-group and dead-letter contract: every `GroupEventBus` passes each check.

Test modules parametrise one test over `GROUPS_CONTRACT` with a `GroupsHarness` for their
backend. Idle times are measured by the bus's clock: a fake one in memory (moved by
`let_time_pass`), real time against Redis (a real sleep). A check that needs an entry to be
idle waits for it with `eventually`; one that needs it *not* idle uses `LONG_IDLE`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from gatehouse.events.v1.envelope_pb2 import Event
from gatehouse.runtime.bus import (
    FROM_NEW,
    FROM_OLDEST,
    DeadLetterInfo,
    Delivery,
    EventBusClosedError,
    GroupEventBus,
    MaxLenPolicy,
    UnknownGroupError,
    dead_letter_stream,
    replay_dead_letter,
)
from tests.contracts.bus_contract import make_event
from tests.contracts.timing import PATIENCE, eventually

STREAM = "events.test"
GROUP = "workers"
SHORT_IDLE = timedelta(milliseconds=200)
LONG_IDLE = timedelta(hours=1)
WAIT_FOREVER = timedelta(minutes=5)


@dataclass(frozen=True)
class GroupsHarness:
    """Fresh buses over one empty namespace, plus a way to let time pass for them."""

    new_bus: Callable[[MaxLenPolicy | None], GroupEventBus]
    # Advances the bus clock by (at least) the duration: a fake-clock step in memory, a real
    # sleep against Redis.
    let_time_pass: Callable[[timedelta], Awaitable[None]]


def _events(deliveries: list[Delivery]) -> list[Event | None]:
    return [delivery.event for delivery in deliveries]


async def _publish(bus: GroupEventBus, first: int, last: int) -> list[Event]:
    events = [make_event(n) for n in range(first, last)]
    for event in events:
        await bus.publish(STREAM, event)
    return events


async def _drain_group(
    bus: GroupEventBus, consumer: str, *, ack: bool, group: str = GROUP, count: int = 100
) -> list[Delivery]:
    seen: list[Delivery] = []
    while batch := await bus.read_group(STREAM, group, consumer, count=count):
        seen.extend(batch)
        if ack:
            await bus.ack(STREAM, group, [delivery.position for delivery in batch])
    return seen


def _info(position: str, *, group: str = GROUP, attempts: int = 5) -> DeadLetterInfo:
    return DeadLetterInfo(
        stream=STREAM,
        group=group,
        position=position,
        reason="handler_failed",
        error="ValueError: boom",
        attempts=attempts,
        consumer="host-1-abcd",
        time=datetime(2030, 1, 1, 12, 0, tzinfo=UTC),
    )


async def check_ensure_group_is_idempotent(harness: GroupsHarness) -> None:
    bus = harness.new_bus(None)
    assert await bus.ensure_group(STREAM, GROUP) is True
    events = await _publish(bus, 0, 2)
    [first] = await bus.read_group(STREAM, GROUP, "a", count=1)
    # A second ensure (another replica starting) must not reset the group's cursor.
    assert await bus.ensure_group(STREAM, GROUP) is False
    rest = await bus.read_group(STREAM, GROUP, "a")
    assert _events([first, *rest]) == events


async def check_unknown_group_is_reported(harness: GroupsHarness) -> None:
    bus = harness.new_bus(None)
    await bus.publish(STREAM, make_event(0))
    with pytest.raises(UnknownGroupError):
        await bus.read_group(STREAM, "nobody", "a")
    with pytest.raises(UnknownGroupError):
        await bus.pending_count(STREAM, "nobody")
    with pytest.raises(UnknownGroupError):
        await bus.claim_idle("events.never-used", "nobody", "a", timedelta(0))
    assert await bus.ack(STREAM, "nobody", []) == 0


async def check_group_start_positions(harness: GroupsHarness) -> None:
    bus = harness.new_bus(None)
    old = await _publish(bus, 0, 3)
    middle = await bus.latest_position(STREAM)
    await bus.ensure_group(STREAM, "from-oldest", FROM_OLDEST)
    await bus.ensure_group(STREAM, "from-new", FROM_NEW)
    new = await _publish(bus, 3, 5)
    await bus.ensure_group(STREAM, "from-middle", middle)
    assert _events(await bus.read_group(STREAM, "from-oldest", "a")) == old + new
    assert _events(await bus.read_group(STREAM, "from-new", "a")) == new
    assert _events(await bus.read_group(STREAM, "from-middle", "a")) == new


async def check_each_event_goes_to_one_consumer_of_each_group(harness: GroupsHarness) -> None:
    bus = harness.new_bus(None)
    await bus.ensure_group(STREAM, GROUP)
    await bus.ensure_group(STREAM, "auditors")
    events = await _publish(bus, 0, 10)
    first = await bus.read_group(STREAM, GROUP, "a", count=4)
    second = await bus.read_group(STREAM, GROUP, "b", count=100)
    assert _events(first + second) == events
    assert {d.delivery_count for d in first + second} == {1}
    assert len({d.position for d in first + second}) == 10
    # Another group has its own cursor: it sees everything again.
    assert _events(await bus.read_group(STREAM, "auditors", "a")) == events
    assert await bus.read_group(STREAM, GROUP, "c") == []


async def check_delivered_events_stay_pending_until_acked(harness: GroupsHarness) -> None:
    bus = harness.new_bus(None)
    await bus.ensure_group(STREAM, GROUP)
    await _publish(bus, 0, 5)
    batch = await bus.read_group(STREAM, GROUP, "a")
    assert await bus.pending_count(STREAM, GROUP) == 5
    assert await bus.ack(STREAM, GROUP, [d.position for d in batch[:2]]) == 2
    assert await bus.pending_count(STREAM, GROUP) == 3
    # Acking again (a duplicate ack after a reconnect) is harmless.
    assert await bus.ack(STREAM, GROUP, [batch[0].position, batch[2].position]) == 1
    assert await bus.pending_count(STREAM, GROUP) == 2
    # Pending events are not handed out again by read_group: only claim_idle moves them.
    assert await bus.read_group(STREAM, GROUP, "b") == []


async def check_blocking_group_read_wakes_on_publish(harness: GroupsHarness) -> None:
    bus = harness.new_bus(None)
    await bus.ensure_group(STREAM, GROUP, FROM_NEW)
    quiet = await asyncio.wait_for(
        bus.read_group(STREAM, GROUP, "a", block=timedelta(milliseconds=100)),
        PATIENCE.total_seconds(),
    )
    assert quiet == []
    reader = asyncio.create_task(bus.read_group(STREAM, GROUP, "a", block=WAIT_FOREVER))
    await asyncio.sleep(0.05)
    assert not reader.done()
    event = make_event(1)
    await bus.publish(STREAM, event)
    batch = await asyncio.wait_for(reader, PATIENCE.total_seconds())
    assert _events(batch) == [event]


async def check_claim_idle_moves_abandoned_events(harness: GroupsHarness) -> None:
    bus = harness.new_bus(None)
    await bus.ensure_group(STREAM, GROUP)
    events = await _publish(bus, 0, 3)
    delivered = await bus.read_group(STREAM, GROUP, "dead-consumer")
    # Nothing has been idle for an hour: nothing moves.
    assert await bus.claim_idle(STREAM, GROUP, "rescuer", LONG_IDLE) == []
    await bus.ack(STREAM, GROUP, [delivered[1].position])

    claimed: list[Delivery] = []

    async def claimed_two() -> bool:
        claimed.extend(await bus.claim_idle(STREAM, GROUP, "rescuer", SHORT_IDLE))
        return len(claimed) >= 2

    async def step() -> None:
        await harness.let_time_pass(SHORT_IDLE)

    await eventually(claimed_two, step=step, what="idle pending events are claimed")
    assert _events(claimed) == [events[0], events[2]]
    assert [d.position for d in claimed] == [delivered[0].position, delivered[2].position]
    assert [d.delivery_count for d in claimed] == [2, 2]
    # The claim reset their idle time: claiming again right away finds nothing.
    assert await bus.claim_idle(STREAM, GROUP, "other", LONG_IDLE) == []
    assert await bus.pending_count(STREAM, GROUP) == 2

    again: list[Delivery] = []

    async def claimed_again() -> bool:
        again.extend(await bus.claim_idle(STREAM, GROUP, "third", SHORT_IDLE, count=1))
        return len(again) >= 1

    await eventually(claimed_again, step=step, what="a claimed event is claimed again")
    assert again[0].position == delivered[0].position
    assert again[0].delivery_count == 3
    assert await bus.ack(STREAM, GROUP, [d.position for d in claimed]) == 2
    assert await bus.pending_count(STREAM, GROUP) == 0


async def check_claim_idle_drops_deleted_entries(harness: GroupsHarness) -> None:
    bus = harness.new_bus(None)
    await bus.ensure_group(STREAM, GROUP)
    events = await _publish(bus, 0, 2)
    delivered = await bus.read_group(STREAM, GROUP, "a")
    assert await bus.delete(STREAM, [delivered[0].position]) == 1
    claimed: list[Delivery] = []

    async def claimed_one() -> bool:
        claimed.extend(await bus.claim_idle(STREAM, GROUP, "b", SHORT_IDLE))
        return len(claimed) >= 1

    async def step() -> None:
        await harness.let_time_pass(SHORT_IDLE)

    await eventually(claimed_one, step=step, what="the surviving event is claimed")
    assert _events(claimed) == [events[1]]
    assert await bus.pending_count(STREAM, GROUP) == 1


async def check_trimming_never_drops_unacknowledged_events(harness: GroupsHarness) -> None:
    bound = 10
    bus = harness.new_bus(MaxLenPolicy(per_stream={STREAM: bound}))
    await bus.ensure_group(STREAM, GROUP)
    await bus.ensure_group(STREAM, "idle-group")
    first = await _publish(bus, 0, 5)
    in_flight = await bus.read_group(STREAM, GROUP, "a")
    rest = await _publish(bus, 5, 300)
    # The slowest group has read nothing yet: it must still get every event, in order.
    slow = await _drain_group(bus, "s", ack=False, group="idle-group")
    assert _events(slow) == first + rest
    # The first group still owns 5 pending events and 295 undelivered ones.
    claimed: list[Delivery] = []

    async def claimed_all() -> bool:
        claimed.extend(await bus.claim_idle(STREAM, GROUP, "b", SHORT_IDLE))
        return len(claimed) >= len(in_flight)

    async def step() -> None:
        await harness.let_time_pass(SHORT_IDLE)

    await eventually(claimed_all, step=step, what="pending events survive trimming")
    assert _events(claimed) == first
    remaining = await _drain_group(bus, "b", ack=True)
    assert _events(remaining) == rest
    await bus.ack(STREAM, GROUP, [d.position for d in claimed])
    await bus.ack(STREAM, "idle-group", [d.position for d in slow])
    # Once both groups have consumed and acknowledged, the bound applies again.
    later = await _publish(bus, 300, 600)
    await _drain_group(bus, "b", ack=True)
    await _drain_group(bus, "s", ack=True, group="idle-group")
    later += await _publish(bus, 600, 601)
    retained = await bus.read(STREAM, count=1000)
    # Redis trims whole nodes (~100 entries): somewhat above the bound, far below 301.
    assert bound <= len(retained) < 250
    assert [event for _, event in retained] == later[-len(retained) :]


async def check_a_lagging_group_holds_the_stream(harness: GroupsHarness) -> None:
    bus = harness.new_bus(MaxLenPolicy(per_stream={STREAM: 5}))
    await bus.ensure_group(STREAM, "fast")
    await bus.ensure_group(STREAM, "slow")
    published: list[Event] = []
    fast_seen: list[Delivery] = []
    slow_seen: list[Delivery] = []
    for round_ in range(6):
        published += await _publish(bus, round_ * 50, (round_ + 1) * 50)
        fast_seen += await _drain_group(bus, "f", ack=True, group="fast")
        # The slow group reads a little and acknowledges late.
        batch = await bus.read_group(STREAM, "slow", "s", count=7)
        slow_seen += batch
        await bus.ack(STREAM, "slow", [d.position for d in batch])
    slow_seen += await _drain_group(bus, "s", ack=True, group="slow")
    assert _events(fast_seen) == published
    assert _events(slow_seen) == published


async def check_dead_letters_round_trip_and_replay(harness: GroupsHarness) -> None:
    bus = harness.new_bus(None)
    await bus.ensure_group(STREAM, GROUP)
    [poison, fine] = await _publish(bus, 0, 2)
    [delivery, _] = await bus.read_group(STREAM, GROUP, "a")
    dead = dead_letter_stream(STREAM, GROUP)
    assert dead == "dead.events.test.workers"
    info = _info(delivery.position)
    dead_position = await bus.dead_letter(delivery.event, info)
    await bus.ack(STREAM, GROUP, [delivery.position])
    assert await bus.dead_letter_streams() == [dead]
    [letter] = await bus.read_dead_letters(dead)
    assert letter.position == dead_position
    assert letter.event == poison
    assert letter.info == info
    assert await bus.get_dead_letter(dead, dead_position) == letter
    # The envelope sits where every reader expects it: a dead-letter stream can be tailed.
    assert [event for _, event in await bus.read(dead)] == [poison]
    assert await bus.read_dead_letters(dead, after=dead_position) == []

    new_position = await replay_dead_letter(bus, dead, dead_position)
    assert new_position is not None
    assert await bus.get(STREAM, new_position) == poison
    assert await bus.get_dead_letter(dead, dead_position) is None
    assert await bus.read_dead_letters(dead) == []
    assert await replay_dead_letter(bus, dead, dead_position) is None
    # The replayed event reaches the group again, after what it had not consumed yet.
    assert _events(await bus.read_group(STREAM, GROUP, "a")) == [poison]
    assert fine != poison


async def check_dead_letter_without_envelope_cannot_be_replayed(harness: GroupsHarness) -> None:
    bus = harness.new_bus(None)
    position = await bus.publish(STREAM, make_event(0))
    dead_position = await bus.dead_letter(None, _info(position, attempts=1))
    dead = dead_letter_stream(STREAM, GROUP)
    letter = await bus.get_dead_letter(dead, dead_position)
    assert letter is not None
    assert letter.event is None
    assert letter.info is not None
    assert letter.info.position == position
    with pytest.raises(ValueError, match="replay"):
        await replay_dead_letter(bus, dead, dead_position)
    assert await bus.get_dead_letter(dead, dead_position) == letter


async def check_get_and_delete_entries(harness: GroupsHarness) -> None:
    bus = harness.new_bus(None)
    events = await _publish(bus, 0, 3)
    positions = [position for position, _ in await bus.read(STREAM)]
    assert await bus.get(STREAM, positions[1]) == events[1]
    assert await bus.get("events.elsewhere", positions[1]) is None
    assert await bus.delete(STREAM, [positions[1]]) == 1
    assert await bus.delete(STREAM, [positions[1]]) == 0
    assert await bus.get(STREAM, positions[1]) is None
    assert [event for _, event in await bus.read(STREAM)] == [events[0], events[2]]
    assert [event for _, event in await bus.read(STREAM, after=positions[0])] == [events[2]]


async def check_delete_group(harness: GroupsHarness) -> None:
    bus = harness.new_bus(None)
    await bus.ensure_group(STREAM, GROUP)
    assert await bus.delete_group(STREAM, GROUP) is True
    assert await bus.delete_group(STREAM, GROUP) is False
    assert await bus.delete_group("events.never-used", GROUP) is False
    with pytest.raises(UnknownGroupError):
        await bus.read_group(STREAM, GROUP, "a")


async def check_malformed_group_arguments_are_rejected(harness: GroupsHarness) -> None:
    bus = harness.new_bus(None)
    await bus.ensure_group(STREAM, GROUP)
    with pytest.raises(ValueError, match="position"):
        await bus.ack(STREAM, GROUP, ["not-a-position"])
    with pytest.raises(ValueError, match="position"):
        await bus.ensure_group(STREAM, "other", "not-a-position")
    with pytest.raises(ValueError, match="group"):
        await bus.read_group(STREAM, "", "a")
    with pytest.raises(ValueError, match="consumer"):
        await bus.read_group(STREAM, GROUP, "")
    with pytest.raises(ValueError, match="count"):
        await bus.read_group(STREAM, GROUP, "a", count=0)


async def check_closed_bus_refuses_group_calls(harness: GroupsHarness) -> None:
    bus = harness.new_bus(None)
    await bus.ensure_group(STREAM, GROUP)
    await bus.close()
    with pytest.raises(EventBusClosedError):
        await bus.read_group(STREAM, GROUP, "a")
    with pytest.raises(EventBusClosedError):
        await bus.ensure_group(STREAM, GROUP)
    with pytest.raises(EventBusClosedError):
        await bus.dead_letter(None, _info("0-1"))


GROUPS_CONTRACT: tuple[Callable[[GroupsHarness], Awaitable[None]], ...] = (
    check_ensure_group_is_idempotent,
    check_unknown_group_is_reported,
    check_group_start_positions,
    check_each_event_goes_to_one_consumer_of_each_group,
    check_delivered_events_stay_pending_until_acked,
    check_blocking_group_read_wakes_on_publish,
    check_claim_idle_moves_abandoned_events,
    check_claim_idle_drops_deleted_entries,
    check_trimming_never_drops_unacknowledged_events,
    check_a_lagging_group_holds_the_stream,
    check_dead_letters_round_trip_and_replay,
    check_dead_letter_without_envelope_cannot_be_replayed,
    check_get_and_delete_entries,
    check_delete_group,
    check_malformed_group_arguments_are_rejected,
    check_closed_bus_refuses_group_calls,
)
