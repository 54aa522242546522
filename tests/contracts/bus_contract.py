"""The `EventBus` contract: every implementation must pass each check in `BUS_CONTRACT`.

Positions are opaque, so checks never compare them with each other; they check what a
reader sees when it resumes from them. Blocking checks only assert that a read wakes up
(bounded by a generous deadline) or returns empty, never how fast.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

import pytest
from google.protobuf import any_pb2, timestamp_pb2, wrappers_pb2

from gatehouse.events.v1.envelope_pb2 import Event
from gatehouse.runtime.bus import (
    EventBus,
    EventBusClosedError,
    MaxLenPolicy,
    StalePositionError,
)
from tests.contracts.timing import PATIENCE

STREAM = "events:test"
WAIT_FOREVER = timedelta(minutes=5)


@dataclass(frozen=True)
class BusHarness:
    """Builds buses over one fresh namespace: streams start empty in every test."""

    new_bus: Callable[[MaxLenPolicy | None], EventBus]


def make_event(n: int) -> Event:
    data = any_pb2.Any()
    data.Pack(wrappers_pb2.StringValue(value=f"payload {n}"))
    return Event(
        id=f"{uuid.uuid4()}",
        type="test.happened",
        source="tests",
        time=timestamp_pb2.Timestamp(seconds=1_700_000_000 + n),
        subject=f"things/{n}",
        correlation_id=f"corr-{n}",
        data=data,
    )


async def _publish_all(bus: EventBus, events: Sequence[Event], stream: str = STREAM) -> list[str]:
    return [await bus.publish(stream, event) for event in events]


async def _drain(bus: EventBus, after: str | None, count: int = 100) -> list[tuple[str, Event]]:
    """Everything after `after`, following positions batch by batch."""
    seen: list[tuple[str, Event]] = []
    while batch := await bus.read(STREAM, after=after, count=count):
        seen.extend(batch)
        after = batch[-1][0]
    return seen


async def check_read_of_unknown_stream_is_empty(harness: BusHarness) -> None:
    bus = harness.new_bus(None)
    assert await bus.read("events:never-used") == []
    start = await bus.latest_position("events:never-used")
    assert await bus.read("events:never-used", after=start) == []


async def check_read_returns_events_in_publish_order(harness: BusHarness) -> None:
    bus = harness.new_bus(None)
    events = [make_event(n) for n in range(5)]
    positions = await _publish_all(bus, events)
    assert len(set(positions)) == len(positions)
    batch = await bus.read(STREAM)
    assert [position for position, _ in batch] == positions
    # Equal after the round trip through serialization, field for field.
    assert [event for _, event in batch] == events


async def check_read_after_position_returns_only_newer(harness: BusHarness) -> None:
    bus = harness.new_bus(None)
    events = [make_event(n) for n in range(6)]
    positions = await _publish_all(bus, events)
    for index, position in enumerate(positions):
        newer = await bus.read(STREAM, after=position)
        assert [event for _, event in newer] == events[index + 1 :]


async def check_count_limits_a_batch(harness: BusHarness) -> None:
    bus = harness.new_bus(None)
    events = [make_event(n) for n in range(5)]
    await _publish_all(bus, events)
    batch = await bus.read(STREAM, count=2)
    assert [event for _, event in batch] == events[:2]


async def check_resume_has_no_gap_and_no_duplicate(harness: BusHarness) -> None:
    bus = harness.new_bus(None)
    published = [make_event(n) for n in range(4)]
    await _publish_all(bus, published)
    seen: list[tuple[str, Event]] = []
    after: str | None = None
    # A reader in small batches while a producer keeps publishing between its reads.
    for n in range(4, 12):
        batch = await bus.read(STREAM, after=after, count=3)
        seen.extend(batch)
        if batch:
            after = batch[-1][0]
        event = make_event(n)
        await bus.publish(STREAM, event)
        published.append(event)
    seen.extend(await _drain(bus, after, count=3))
    assert [event for _, event in seen] == published
    assert len({position for position, _ in seen}) == len(published)


async def check_latest_position_starts_a_tail(harness: BusHarness) -> None:
    bus = harness.new_bus(None)
    start = await bus.latest_position(STREAM)
    old = [make_event(n) for n in range(3)]
    positions = await _publish_all(bus, old)
    assert await bus.latest_position(STREAM) == positions[-1]
    assert [event for _, event in await bus.read(STREAM, after=start)] == old
    tail_from = await bus.latest_position(STREAM)
    new = [make_event(n) for n in range(3, 5)]
    await _publish_all(bus, new)
    assert [event for _, event in await bus.read(STREAM, after=tail_from)] == new


async def check_blocking_read_wakes_on_publish(harness: BusHarness) -> None:
    bus = harness.new_bus(None)
    await bus.publish(STREAM, make_event(0))
    after = await bus.latest_position(STREAM)
    reader = asyncio.create_task(bus.read(STREAM, after=after, block=WAIT_FOREVER))
    # Give the reader a chance to block first; the check holds either way.
    await asyncio.sleep(0.05)
    assert not reader.done()
    event = make_event(1)
    await bus.publish(STREAM, event)
    batch = await asyncio.wait_for(reader, PATIENCE.total_seconds())
    assert [e for _, e in batch] == [event]


async def check_blocking_read_returns_empty_on_timeout(harness: BusHarness) -> None:
    bus = harness.new_bus(None)
    after = await bus.latest_position(STREAM)
    batch = await asyncio.wait_for(
        bus.read(STREAM, after=after, block=timedelta(milliseconds=100)),
        PATIENCE.total_seconds(),
    )
    assert batch == []


async def check_blocking_read_returns_at_once_when_events_exist(harness: BusHarness) -> None:
    bus = harness.new_bus(None)
    events = [make_event(n) for n in range(3)]
    await _publish_all(bus, events)
    batch = await asyncio.wait_for(bus.read(STREAM, block=WAIT_FOREVER), PATIENCE.total_seconds())
    assert [event for _, event in batch] == events


async def check_streams_are_independent(harness: BusHarness) -> None:
    bus = harness.new_bus(None)
    first, second = make_event(1), make_event(2)
    await bus.publish("events:one", first)
    await bus.publish("events:two", second)
    assert [event for _, event in await bus.read("events:one")] == [first]
    assert [event for _, event in await bus.read("events:two")] == [second]


async def check_max_length_keeps_newest_and_reports_trimmed_positions(
    harness: BusHarness,
) -> None:
    bound = 10
    bus = harness.new_bus(MaxLenPolicy(per_stream={STREAM: bound}))
    published = [make_event(n) for n in range(300)]
    positions = await _publish_all(bus, published)
    retained = await _drain(bus, None)
    # Redis trims approximately (whole nodes): at least `bound`, never everything.
    assert bound <= len(retained) < len(published)
    assert [event for _, event in retained] == published[-len(retained) :]
    assert [position for position, _ in retained] == positions[-len(retained) :]
    # Resuming where events were dropped would be a silent gap: the bus says so instead.
    with pytest.raises(StalePositionError):
        await bus.read(STREAM, after=positions[0])
    # Resuming from the event just before the oldest retained one loses nothing: fine.
    oldest_index = len(published) - len(retained)
    resumed = await bus.read(STREAM, after=positions[oldest_index - 1], count=1000)
    assert resumed == retained


async def check_position_of_a_lost_stream_is_stale(harness: BusHarness) -> None:
    bus = harness.new_bus(None)
    positions = await _publish_all(bus, [make_event(n) for n in range(3)], "events:one")
    # A position beyond anything the stream holds: its history is gone (or never was).
    with pytest.raises(StalePositionError):
        await bus.read("events:elsewhere", after=positions[-1])


async def check_malformed_arguments_are_rejected(harness: BusHarness) -> None:
    bus = harness.new_bus(None)
    with pytest.raises(ValueError, match="position"):
        await bus.read(STREAM, after="not-a-position")
    with pytest.raises(ValueError, match="count"):
        await bus.read(STREAM, count=0)
    with pytest.raises(ValueError, match="block"):
        await bus.read(STREAM, block=timedelta(seconds=-1))
    with pytest.raises(ValueError, match="stream"):
        await bus.publish("", make_event(0))


async def check_closed_bus_refuses_calls(harness: BusHarness) -> None:
    bus = harness.new_bus(None)
    await bus.publish(STREAM, make_event(0))
    await bus.close()
    await bus.close()
    with pytest.raises(EventBusClosedError):
        await bus.publish(STREAM, make_event(1))
    with pytest.raises(EventBusClosedError):
        await bus.read(STREAM)


BUS_CONTRACT: tuple[Callable[[BusHarness], Awaitable[None]], ...] = (
    check_read_of_unknown_stream_is_empty,
    check_read_returns_events_in_publish_order,
    check_read_after_position_returns_only_newer,
    check_count_limits_a_batch,
    check_resume_has_no_gap_and_no_duplicate,
    check_latest_position_starts_a_tail,
    check_blocking_read_wakes_on_publish,
    check_blocking_read_returns_empty_on_timeout,
    check_blocking_read_returns_at_once_when_events_exist,
    check_streams_are_independent,
    check_max_length_keeps_newest_and_reports_trimmed_positions,
    check_position_of_a_lost_stream_is_stale,
    check_malformed_arguments_are_rejected,
    check_closed_bus_refuses_calls,
)
