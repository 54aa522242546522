"""LiveHub on the in-process bus: the shared scenarios (`LIVE_SCENARIOS`, also run against Redis
by `tests/integration/runtime/test_live_redis.py`) plus what needs a scripted bus: the seam
when the hub's reader is behind, bus failures, and programming errors.

No assertion depends on how fast anything is: waits have generous deadlines, counts are exact.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import itertools
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from google.protobuf import any_pb2, timestamp_pb2, wrappers_pb2

from gatehouse.events.v1.envelope_pb2 import Event
from gatehouse.runtime.bus import EventBus, InProcessEventBus, MaxLenPolicy
from gatehouse.runtime.errors import (
    FailedPrecondition,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
)
from gatehouse.runtime.live import (
    META_LAST_EVENT_ID,
    META_RESUME_CURSOR,
    RESUME_POINT_UNAVAILABLE,
    STREAM_BUFFER_OVERFLOW,
    UNKNOWN_RESUME_POINT,
    EndReason,
    LiveHeartbeat,
    LiveHub,
    LiveHubOptions,
    LiveItem,
    LiveSource,
    Subscription,
    encode_cursor,
)
from tests.contracts.timing import PATIENCE

ALERTS = "events.alert"
DEVICES = "events.device"
ACCESS = "events.access"
FEED = (ALERTS, DEVICES, ACCESS)
# Long flows (20k events, thousands of resumes) on a loaded 2-core box: far above real need.
LONG_PATIENCE = timedelta(seconds=90)
SENTINEL = "test.sentinel"

TEST_OPTIONS = LiveHubOptions(
    read_block=timedelta(milliseconds=200),
    retry_min=timedelta(milliseconds=5),
    retry_max=timedelta(milliseconds=50),
    # Heartbeats would only get in the way, except where a test asks for them.
    heartbeat_interval=timedelta(minutes=10),
)


# --- events ----------------------------------------------------------------------------------

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_ulid_state = {"millis": 0, "counter": 0}


def new_ulid() -> str:
    """Strictly increasing ULIDs, as one producer's monotonic generator makes them."""
    millis = max(int(time.time() * 1000), _ulid_state["millis"])
    if millis == _ulid_state["millis"]:
        _ulid_state["counter"] += 1
    else:
        _ulid_state["millis"], _ulid_state["counter"] = millis, secrets.randbits(40)
    value = (millis << 80) | _ulid_state["counter"]
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


def make_event(family: str, n: int, subject: str = "buildings/b1") -> Event:
    data = any_pb2.Any()
    data.Pack(wrappers_pb2.Int64Value(value=n))
    return Event(
        id=new_ulid(),
        type=f"{family}.happened",
        source="tests",
        time=timestamp_pb2.Timestamp(seconds=1_700_000_000 + n),
        subject=subject,
        data=data,
    )


def family(stream: str) -> str:
    return stream.removeprefix("events.")


def sentinel(stream: str) -> Event:
    event = make_event(family(stream), -1, subject="sentinel")
    event.type = SENTINEL
    return event


def is_sentinel(item: LiveItem) -> bool:
    return item.event.type == SENTINEL


# --- harness ---------------------------------------------------------------------------------


@dataclass
class LiveHarness:
    """`new_bus` returns another process's view of the same streams: a second hub built on it
    is another replica. The first call's policy applies to the streams (in memory)."""

    new_bus: Callable[[MaxLenPolicy | None], EventBus]
    hubs: list[LiveHub] = field(default_factory=list)

    async def hub(self, bus: EventBus | None = None, **changes: Any) -> LiveHub:
        options = dataclasses.replace(TEST_OPTIONS, **changes)
        hub = LiveHub(bus if bus is not None else self.new_bus(None), options)
        await hub.start()
        self.hubs.append(hub)
        return hub

    async def close(self) -> None:
        for hub in self.hubs:
            await hub.stop()


@asynccontextmanager
async def memory_harness() -> AsyncIterator[LiveHarness]:
    shared: list[InProcessEventBus] = []

    def new_bus(policy: MaxLenPolicy | None) -> EventBus:
        if not shared:
            shared.append(InProcessEventBus(policy))
        return shared[0]

    harness = LiveHarness(new_bus)
    try:
        yield harness
    finally:
        await harness.close()


# --- helpers ---------------------------------------------------------------------------------


async def take(sub: Subscription, count: int, *, patience: timedelta = PATIENCE) -> list[LiveItem]:
    """The next `count` events (heartbeats skipped)."""
    items: list[LiveItem] = []
    async with asyncio.timeout(patience.total_seconds()):
        while len(items) < count:
            message = await anext(sub)
            if isinstance(message, LiveItem):
                items.append(message)
    return items


async def take_until_sentinels(
    sub: Subscription, streams: int = 1, *, patience: timedelta = LONG_PATIENCE
) -> list[LiveItem]:
    """Events up to and including one sentinel per stream (sentinels not returned)."""
    items: list[LiveItem] = []
    seen = 0
    async with asyncio.timeout(patience.total_seconds()):
        while seen < streams:
            message = await anext(sub)
            if isinstance(message, LiveItem):
                if is_sentinel(message):
                    seen += 1
                else:
                    items.append(message)
    return items


async def history(bus: EventBus, stream: str) -> list[Event]:
    """Everything retained in `stream`, in bus order."""
    events: list[Event] = []
    after: str | None = None
    while batch := await bus.read(stream, after=after, count=1000):
        events.extend(event for _, event in batch)
        after = batch[-1][0]
    return events


def after_id(events: Sequence[Event], event_id: str) -> list[str]:
    ids = [event.id for event in events if event.type != SENTINEL]
    return ids[ids.index(event_id) + 1 :]


async def publish_many(
    bus: EventBus, stream: str, count: int, *, subject: str = "buildings/b1"
) -> list[Event]:
    events = [make_event(family(stream), n, subject) for n in range(count)]
    for event in events:
        await bus.publish(stream, event)
    return events


async def publish_concurrently(
    bus: EventBus, streams: Sequence[str], per_stream: int, publishers: int = 3
) -> None:
    """`publishers` tasks per stream, yielding between events so subscribers interleave."""

    async def publisher(stream: str, count: int) -> None:
        for n in range(count):
            await bus.publish(stream, make_event(family(stream), n))
            if n % 7 == 0:
                await asyncio.sleep(0)

    share = per_stream // publishers
    async with asyncio.TaskGroup() as group:
        for stream in streams:
            for _ in range(publishers):
                group.create_task(publisher(stream, share))


async def eventually(condition: Callable[[], bool], what: str) -> None:
    give_up_at = time.monotonic() + PATIENCE.total_seconds()
    while not condition():
        assert time.monotonic() < give_up_at, f"not within {PATIENCE}: {what}"
        await asyncio.sleep(0.01)


def ids(items: Sequence[LiveItem]) -> list[str]:
    return [item.event_id for item in items]


# --- the scenarios (in memory here, on Redis in the integration tests) -----------------------


async def check_filter_delivers_only_matching_events_in_order(harness: LiveHarness) -> None:
    bus = harness.new_bus(None)
    hub = await harness.hub(bus)
    sub = await hub.subscribe([ALERTS], filter=lambda event: event.subject == "buildings/b2")
    mine: list[Event] = []
    for n in range(60):
        subject = "buildings/b2" if n % 3 == 0 else "buildings/b1"
        event = make_event("alert", n, subject)
        await bus.publish(ALERTS, event)
        if subject == "buildings/b2":
            mine.append(event)
    items = await take(sub, len(mine))
    assert [item.event for item in items] == mine
    assert all(item.stream == ALERTS for item in items)


async def check_one_reader_fans_out_to_many_subscribers(harness: LiveHarness) -> None:
    counting = CountingBus(harness.new_bus(None))
    hub = await harness.hub(counting)
    subs = [await hub.subscribe([ALERTS]) for _ in range(40)]
    publisher = harness.new_bus(None)
    events = await publish_many(publisher, ALERTS, 300)
    results = await asyncio.gather(*(take(sub, len(events)) for sub in subs))
    for items in results:
        assert [item.event_id for item in items] == [event.id for event in events]
    # 40 subscribers, one blocking read at a time on the stream: one pooled connection.
    assert counting.max_blocking[ALERTS] == 1
    assert hub.reading() == (ALERTS,)
    assert hub.stats().subscriptions == 40


async def check_resume_on_another_replica_while_publishers_run(harness: LiveHarness) -> None:
    bus = harness.new_bus(None)
    first = await harness.hub(bus)
    second = await harness.hub(harness.new_bus(None))
    sub = await first.subscribe([ALERTS])
    await publish_concurrently(bus, [ALERTS], 900)
    seen = await take(sub, 300)
    await sub.aclose()
    last = seen[-1].event_id

    resumed = await second.subscribe([ALERTS], resume_after=last)
    # More events arrive while the resumed subscription replays and crosses the seam.
    collecting = asyncio.create_task(take_until_sentinels(resumed))
    await publish_concurrently(bus, [ALERTS], 1500)
    await bus.publish(ALERTS, sentinel(ALERTS))
    received = await collecting

    expected = after_id(await history(bus, ALERTS), last)
    assert len(expected) == 900 + 1500 - 300
    assert ids(received) == expected  # every one, in order, once


async def check_resume_on_the_same_replica_while_publishers_run(harness: LiveHarness) -> None:
    bus = harness.new_bus(None)
    hub = await harness.hub(bus)
    for round_ in range(3):
        sub = await hub.subscribe([ALERTS])
        publishing = asyncio.create_task(publish_concurrently(bus, [ALERTS], 600))
        seen = await take(sub, 100 + 50 * round_)
        await sub.aclose()
        # Reconnect mid-flow: the id is in this hub's index, and events keep arriving.
        resumed = await hub.subscribe([ALERTS], resume_after=seen[-1].event_id)
        collecting = asyncio.create_task(take_until_sentinels(resumed))
        await publishing
        await bus.publish(ALERTS, sentinel(ALERTS))
        received = await collecting
        await resumed.aclose()
        expected = after_id(await history(bus, ALERTS), seen[-1].event_id)
        assert ids(received) == expected


async def check_merged_streams_resume_exactly_from_the_cursor(harness: LiveHarness) -> None:
    bus = harness.new_bus(None)
    first = await harness.hub(bus)
    second = await harness.hub(harness.new_bus(None))
    sub = await first.subscribe(FEED)
    publishing = asyncio.create_task(publish_concurrently(bus, FEED, 600))
    seen = await take(sub, 700)
    cursor = sub.cursor
    await sub.aclose()

    resumed = await second.subscribe(FEED, resume_after=cursor)
    collecting = asyncio.create_task(take_until_sentinels(resumed, streams=len(FEED)))
    await publishing
    for stream in FEED:
        await bus.publish(stream, sentinel(stream))
    received = await collecting

    for stream in FEED:
        mine = [item for item in seen if item.stream == stream]
        everything = [event.id for event in await history(bus, stream) if event.type != SENTINEL]
        expected = everything[everything.index(mine[-1].event_id) + 1 :] if mine else everything
        assert [item.event_id for item in received if item.stream == stream] == expected
    assert len(ids(received)) == len(set(ids(received)))
    assert not set(ids(received)) & set(ids(seen))


async def check_merged_streams_resume_from_a_plain_id_misses_nothing(
    harness: LiveHarness,
) -> None:
    bus = harness.new_bus(None)
    first = await harness.hub(bus)
    second = await harness.hub(harness.new_bus(None))
    sub = await first.subscribe(FEED)
    # One producer, so ids follow publication order across the streams.
    for n in range(300):
        stream = FEED[n % len(FEED)]
        await bus.publish(stream, make_event(family(stream), n))
    seen = await take(sub, 200)
    await sub.aclose()
    last = seen[-1]

    resumed = await second.subscribe(FEED, resume_after=last.event_id)
    for n in range(300, 450):
        stream = FEED[n % len(FEED)]
        await bus.publish(stream, make_event(family(stream), n))
    for stream in FEED:
        await bus.publish(stream, sentinel(stream))
    received = await take_until_sentinels(resumed, streams=len(FEED))

    got = ids(received)
    assert len(got) == len(set(got)), "no event twice within one subscription"
    # Its own stream resumes exactly after the id.
    own = [item.event_id for item in received if item.stream == last.stream]
    assert own == after_id(await history(bus, last.stream), last.event_id)
    # No other stream misses anything; what comes again is only what the client already had.
    seen_ids = set(ids(seen))
    for stream in FEED:
        everything = [event.id for event in await history(bus, stream) if event.type != SENTINEL]
        assert {event_id for event_id in everything if event_id not in seen_ids} <= set(got)
        # Per stream, still in bus order.
        mine = [item.event_id for item in received if item.stream == stream]
        assert mine == [event_id for event_id in everything if event_id in set(mine)]


async def check_slow_subscriber_is_cut_off_and_resumes(harness: LiveHarness) -> None:
    bus = harness.new_bus(None)
    hub = await harness.hub(bus, read_batch=100)
    slow = await hub.subscribe([ALERTS], buffer_size=50)
    fast = await hub.subscribe([ALERTS])
    events = await publish_many(bus, ALERTS, 10)
    early = await take(slow, 10)
    fast_items = asyncio.create_task(take(fast, 2010, patience=LONG_PATIENCE))
    events += await publish_many(bus, ALERTS, 2000)

    with pytest.raises(ResourceExhausted) as cut:
        await take(slow, 2000)
    assert cut.value.reason == STREAM_BUFFER_OVERFLOW
    assert cut.value.retry_after is not None
    assert cut.value.retry_after > timedelta(0)
    assert cut.value.metadata[META_LAST_EVENT_ID] == early[-1].event_id
    assert slow.ended_by is None
    # The fast one got everything, and the hub let go of the slow one.
    assert ids(await fast_items) == [event.id for event in events]
    assert hub.stats().subscriptions == 1
    assert hub.stats().largest_buffer_high_water <= 1000

    # Both resume points carry on exactly where the slow one stopped.
    for resume_after in (
        cut.value.metadata[META_LAST_EVENT_ID],
        cut.value.metadata[META_RESUME_CURSOR],
    ):
        again = await hub.subscribe([ALERTS], resume_after=resume_after, buffer_size=50)
        assert ids(await take(again, 2000)) == [event.id for event in events[10:]]
        await again.aclose()


async def check_memory_stays_bounded_with_a_stalled_subscriber(harness: LiveHarness) -> None:
    bus = harness.new_bus(None)
    hub = await harness.hub(bus, read_batch=200)
    stalled = await hub.subscribe([ALERTS], buffer_size=100)
    fast = await hub.subscribe([ALERTS], buffer_size=500)
    total = 20_000
    counted = asyncio.create_task(_count_until_sentinel(fast))
    samples: list[int] = []

    async def sample() -> None:
        while not counted.done():
            samples.append(hub.stats().buffered)
            await asyncio.sleep(0.01)

    sampler = asyncio.create_task(sample())
    await publish_concurrently(bus, [ALERTS], total, publishers=4)
    await bus.publish(ALERTS, sentinel(ALERTS))
    async with asyncio.timeout(LONG_PATIENCE.total_seconds()):
        assert await counted == total
    await sampler

    stats = hub.stats()
    # Bounded at every moment, not only at the end: high-water marks are never reset.
    assert stats.largest_buffer_high_water <= 500
    assert stats.buffered_high_water <= 100 + 500
    assert stats.read_batch_high_water <= 200
    assert max(samples) <= 600
    # The stalled one was cut off (and dropped its buffer) instead of growing.
    with pytest.raises(ResourceExhausted):
        await anext(stalled)
    assert stats.subscriptions == 1
    assert stats.buffered == 0


async def _count_until_sentinel(sub: Subscription) -> int:
    count = 0
    async for message in sub:
        if isinstance(message, LiveItem):
            if is_sentinel(message):
                return count
            count += 1
    raise AssertionError(f"ended after {count} events: {sub.ended_by}")


async def check_heartbeats_on_an_idle_stream_move_past_filtered_events(
    harness: LiveHarness,
) -> None:
    bus = harness.new_bus(None)
    hub = await harness.hub(bus, heartbeat_interval=timedelta(milliseconds=50))
    sub = await hub.subscribe([ALERTS], filter=lambda event: event.subject == "buildings/b2")
    beat = await anext(sub)
    assert isinstance(beat, LiveHeartbeat)
    assert beat.last_delivered_id == ""
    assert beat.to_proto().time.seconds > 0

    skipped = await publish_many(bus, ALERTS, 5, subject="buildings/b1")
    async with asyncio.timeout(PATIENCE.total_seconds()):
        while True:
            beat = await anext(sub)
            assert isinstance(beat, LiveHeartbeat)
            if beat.last_event_id == skipped[-1].id:
                break
    assert beat.last_delivered_id == ""
    assert beat.to_proto().last_event_id == skipped[-1].id

    # Resuming from the heartbeat (id or cursor) on another replica starts after what it passed.
    other = await harness.hub(harness.new_bus(None))
    by_id = await other.subscribe(
        [ALERTS], resume_after=beat.last_event_id, filter=lambda event: True
    )
    by_cursor = await other.subscribe([ALERTS], resume_after=beat.cursor, filter=lambda event: True)
    wanted = make_event("alert", 99, "buildings/b2")
    await bus.publish(ALERTS, wanted)
    assert ids(await take(by_id, 1)) == [wanted.id]
    assert ids(await take(by_cursor, 1)) == [wanted.id]
    assert ids(await take(sub, 1)) == [wanted.id]


async def check_lifecycle_stop_ends_subscriptions_cleanly(harness: LiveHarness) -> None:
    bus = harness.new_bus(None)
    hub = await harness.hub(bus)
    stopping = asyncio.Event()
    busy = await hub.subscribe([ALERTS], stopping=stopping)
    idle = await hub.subscribe([DEVICES], stopping=stopping)
    other = await hub.subscribe([ALERTS])

    async def drain(sub: Subscription) -> int:
        count = 0
        async for _ in sub:
            count += 1
        return count

    tasks = [asyncio.create_task(drain(sub)) for sub in (busy, idle)]
    publishing = asyncio.create_task(publish_many(bus, ALERTS, 500))
    await asyncio.sleep(0)
    stopping.set()
    async with asyncio.timeout(PATIENCE.total_seconds()):
        await asyncio.gather(*tasks)  # ended without an error
    await publishing
    assert busy.ended_by is EndReason.STOPPING
    assert idle.ended_by is EndReason.STOPPING
    assert hub.stats().subscriptions == 1
    assert len(await take(other, 500)) == 500

    await hub.stop()
    async with asyncio.timeout(PATIENCE.total_seconds()):
        assert [message async for message in other] == []
    assert other.ended_by is EndReason.HUB_STOPPED
    with pytest.raises(Unavailable):
        await hub.subscribe([ALERTS])


async def check_consumer_that_goes_away_is_unsubscribed(harness: LiveHarness) -> None:
    bus = harness.new_bus(None)
    hub = await harness.hub(bus)
    waiting = await hub.subscribe([ALERTS])

    async def first(sub: Subscription) -> object:
        return await anext(sub)

    consumer = asyncio.create_task(first(waiting))
    await asyncio.sleep(0.05)
    consumer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await consumer
    assert waiting.ended_by is EndReason.CLOSED

    async with await hub.subscribe([ALERTS]) as scoped:
        await bus.publish(ALERTS, make_event("alert", 1))
        await take(scoped, 1)
    assert scoped.ended_by is EndReason.CLOSED

    forgotten = await hub.subscribe([ALERTS])
    del forgotten
    gc.collect()

    await eventually(lambda: hub.stats().subscriptions == 0, "every subscription let go")
    # With nobody left, the reader ends too (after its current blocking read).
    await eventually(lambda: hub.reading() == (), "the reader ended")
    assert hub.stats().buffered == 0


async def check_resume_errors(harness: LiveHarness) -> None:
    bus = harness.new_bus(MaxLenPolicy(default=10))
    hub = await harness.hub(bus)
    events = await publish_many(bus, ALERTS, 1000)
    retained = await history(bus, ALERTS)
    assert events[0].id not in {event.id for event in retained}

    async def refused(resume_after: str, streams: Sequence[str] = (ALERTS,)) -> Exception:
        with pytest.raises((InvalidArgument, FailedPrecondition)) as raised:
            await hub.subscribe(streams, resume_after=resume_after)
        return raised.value

    for malformed in ("not an id!", "x" * 300, "lc1.%%%", "lc1.bm90IGpzb24"):
        error = await refused(malformed)
        assert isinstance(error, InvalidArgument), malformed
        assert error.reason == UNKNOWN_RESUME_POINT
        assert error.violations[0].field == "resume_after"
    # Well-formed, newer than the oldest retained event, but not there: never existed.
    unknown = await refused(new_ulid())
    assert isinstance(unknown, InvalidArgument)
    assert unknown.reason == UNKNOWN_RESUME_POINT
    # Trimmed away.
    gone = await refused(events[0].id)
    assert isinstance(gone, FailedPrecondition)
    assert gone.reason == RESUME_POINT_UNAVAILABLE
    # A cursor: of other streams, or pointing at trimmed history.
    sub = await hub.subscribe([ALERTS])
    foreign = await refused(sub.cursor, streams=[ALERTS, DEVICES])
    assert isinstance(foreign, InvalidArgument)
    stale = sub.cursor
    await publish_many(bus, ALERTS, 1000)
    expired = await refused(stale)
    assert isinstance(expired, FailedPrecondition)
    assert expired.reason == RESUME_POINT_UNAVAILABLE
    # An empty resume point means "live only".
    assert isinstance(await hub.subscribe([ALERTS], resume_after=""), Subscription)


LIVE_SCENARIOS: list[Callable[[LiveHarness], Awaitable[None]]] = [
    check_filter_delivers_only_matching_events_in_order,
    check_one_reader_fans_out_to_many_subscribers,
    check_resume_on_another_replica_while_publishers_run,
    check_resume_on_the_same_replica_while_publishers_run,
    check_merged_streams_resume_exactly_from_the_cursor,
    check_merged_streams_resume_from_a_plain_id_misses_nothing,
    check_slow_subscriber_is_cut_off_and_resumes,
    check_memory_stays_bounded_with_a_stalled_subscriber,
    check_heartbeats_on_an_idle_stream_move_past_filtered_events,
    check_lifecycle_stop_ends_subscriptions_cleanly,
    check_consumer_that_goes_away_is_unsubscribed,
    check_resume_errors,
]


@pytest.mark.parametrize("check", LIVE_SCENARIOS, ids=lambda check: check.__name__)
async def test_scenario(check: Callable[[LiveHarness], Awaitable[None]]) -> None:
    async with memory_harness() as harness:
        await check(harness)


# --- scripted buses --------------------------------------------------------------------------


class CountingBus:
    """Counts blocking reads in flight per stream (each would hold a Redis connection)."""

    def __init__(self, inner: EventBus) -> None:
        self.inner = inner
        self.blocking: Counter[str] = Counter()
        self.max_blocking: Counter[str] = Counter()

    async def publish(self, stream: str, event: Event) -> str:
        return await self.inner.publish(stream, event)

    async def read(
        self,
        stream: str,
        after: str | None = None,
        count: int = 100,
        block: timedelta | None = None,
    ) -> list[tuple[str, Event]]:
        if block is None:
            return await self.inner.read(stream, after, count)
        self.blocking[stream] += 1
        self.max_blocking[stream] = max(self.max_blocking[stream], self.blocking[stream])
        try:
            return await self.inner.read(stream, after, count, block)
        finally:
            self.blocking[stream] -= 1

    async def latest_position(self, stream: str) -> str:
        return await self.inner.latest_position(stream)

    async def close(self) -> None:
        await self.inner.close()


class ScriptedBus(CountingBus):
    """Blocking reads (the hub's reader) wait for `gate`; the first `failures` of them fail."""

    def __init__(self, inner: EventBus, failures: int = 0) -> None:
        super().__init__(inner)
        self.gate = asyncio.Event()
        self.gate.set()
        self.failures = failures

    async def read(
        self,
        stream: str,
        after: str | None = None,
        count: int = 100,
        block: timedelta | None = None,
    ) -> list[tuple[str, Event]]:
        if block is not None:
            await self.gate.wait()
            if self.failures > 0:
                self.failures -= 1
                raise ConnectionError("the bus is down (scripted)")
        return await super().read(stream, after, count, block)


@asynccontextmanager
async def running(bus: EventBus, **changes: Any) -> AsyncIterator[LiveHub]:
    hub = LiveHub(bus, dataclasses.replace(TEST_OPTIONS, **changes))
    await hub.start()
    try:
        yield hub
    finally:
        await hub.stop()


def lane_modes(sub: Subscription) -> list[str]:
    """White-box: how each stream of `sub` is fed right now (replay, wait, live)."""
    return [lane.mode.value for lane in sub._state.lanes]


async def take_nothing_yet(sub: Subscription) -> None:
    """Pull once more: the replay finds the end of the stream, and a heartbeat comes instead.

    (Not a timeout: cancelling a pending `anext` ends the subscription, as a client that goes
    away does.)"""
    assert isinstance(await anext(sub), LiveHeartbeat)


# --- the seam, position by position ----------------------------------------------------------


@pytest.mark.parametrize(
    ("resume_index", "replayed_before_reader_moves", "expected_mode", "case"),
    [
        (4, 5, "live", "the replay meets the reader's position"),
        (9, 0, "replay", "the resume point is the reader's position"),
        (14, 5, "wait", "the reader is behind the replay and is waited for"),
    ],
)
async def test_seam_has_no_gap_and_no_duplicate(
    resume_index: int, replayed_before_reader_moves: int, expected_mode: str, case: str
) -> None:
    inner = InProcessEventBus()
    bus = ScriptedBus(inner)
    events = await publish_many(inner, ALERTS, 10)
    async with running(bus, heartbeat_interval=timedelta(milliseconds=100)) as hub:
        bus.gate.clear()  # the reader starts at the 10th event and then stays there
        live = await hub.subscribe([ALERTS])
        events += await publish_many(inner, ALERTS, 10)
        resumed = await hub.subscribe([ALERTS], resume_after=events[resume_index].id)
        # The replay runs to the end of the stream while the reader is held back.
        replayed = await take(resumed, replayed_before_reader_moves)
        if resume_index > 9:
            await take_nothing_yet(resumed)
        assert lane_modes(resumed) == [expected_mode], case
        bus.gate.set()
        events += await publish_many(inner, ALERTS, 10)
        rest = await take(resumed, 30 - resume_index - 1 - len(replayed))
        assert ids(replayed + rest) == [event.id for event in events[resume_index + 1 :]], case
        assert ids(await take(live, 20)) == [event.id for event in events[10:]]
        await inner.publish(ALERTS, sentinel(ALERTS))
        assert await take_until_sentinels(resumed) == []


async def test_reader_survives_bus_failures_without_losing_events() -> None:
    bus = ScriptedBus(InProcessEventBus(), failures=5)
    async with running(bus) as hub:
        sub = await hub.subscribe([ALERTS])
        events = await publish_many(bus, ALERTS, 50)
        assert ids(await take(sub, 50)) == [event.id for event in events]
        assert bus.failures == 0


async def test_a_failing_filter_ends_only_its_own_subscription() -> None:
    bus = InProcessEventBus()

    def broken(event: Event) -> bool:
        raise KeyError("bug in a filter")

    async with running(bus) as hub:
        bad = await hub.subscribe([ALERTS], filter=broken)
        good = await hub.subscribe([ALERTS])
        events = await publish_many(bus, ALERTS, 3)
        with pytest.raises(KeyError):
            await anext(bad)
        assert ids(await take(good, 3)) == [event.id for event in events]
        with pytest.raises(StopAsyncIteration):
            await anext(bad)


async def test_resume_finds_the_first_copy_of_a_republished_event() -> None:
    # A relay that crashed after publishing but before marking sent publishes again.
    bus = InProcessEventBus()
    events = await publish_many(bus, ALERTS, 6)
    await bus.publish(ALERTS, events[2])
    async with running(bus) as hub:
        sub = await hub.subscribe([ALERTS], resume_after=events[2].id)
        assert ids(await take(sub, 4)) == [event.id for event in events[3:]] + [events[2].id]


async def test_replay_is_pulled_so_a_resumed_subscriber_never_overflows() -> None:
    bus = InProcessEventBus()
    events = await publish_many(bus, ALERTS, 3000)
    async with running(bus, replay_batch=64) as hub:
        sub = await hub.subscribe([ALERTS], resume_after=events[0].id, buffer_size=10)
        assert ids(await take(sub, 2999)) == [event.id for event in events[1:]]
        assert hub.stats().largest_buffer_high_water <= 10


async def test_a_live_subscription_starts_with_new_events_only() -> None:
    bus = InProcessEventBus()
    await publish_many(bus, ALERTS, 5)
    async with running(bus) as hub:
        sub = await hub.subscribe([ALERTS])
        new = await publish_many(bus, ALERTS, 2)
        assert ids(await take(sub, 2)) == [event.id for event in new]


async def test_cursor_is_opaque_and_never_an_event_id() -> None:
    token = encode_cursor({ALERTS: "00000000000000000007", DEVICES: None}, "01ABC")
    assert token.startswith("lc1.")
    assert "." in token
    assert " " not in token


async def test_programming_errors_are_not_domain_errors() -> None:
    hub = LiveHub(InProcessEventBus(), TEST_OPTIONS)
    with pytest.raises(RuntimeError):
        await hub.subscribe([ALERTS])
    await hub.start()
    try:
        for streams in ([], [ALERTS, ALERTS], [""]):
            with pytest.raises(ValueError, match="streams"):
                await hub.subscribe(streams)
        with pytest.raises(ValueError, match="buffer_size"):
            await hub.subscribe([ALERTS], buffer_size=0)
        with pytest.raises(TypeError):
            await hub.subscribe(ALERTS)
    finally:
        await hub.stop()


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="read_batch"):
        LiveHubOptions(read_batch=0)
    with pytest.raises(ValueError, match="heartbeat_interval"):
        LiveHubOptions(heartbeat_interval=timedelta(0))


def test_the_hub_is_a_live_source() -> None:
    source: LiveSource = LiveHub(InProcessEventBus())
    assert source is not None


def test_ulids_sort_in_creation_order() -> None:
    made = [new_ulid() for _ in range(1000)]
    assert made == sorted(made)
    assert len(set(made)) == len(made)
    assert all(len(value) == 26 for value in itertools.islice(made, 10))
