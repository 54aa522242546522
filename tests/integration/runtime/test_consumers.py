"""Consumers on real databases and real buses: handled once, retried, dead-lettered, reclaimed.

Every test that takes `database_url` runs on SQLite and on PostgreSQL; every test that takes
`bus` runs on the in-process bus and on Redis Streams. The handlers write an *effect* row per
call that commits (no unique key on it), so "applied once" is counted, not assumed. The Redis
restart test runs its own throwaway `redis-server`: the shared one on 6379 is never touched.
Waits are `eventually(...)` with generous deadlines; nothing asserts how fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf import any_pb2, wrappers_pb2
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sqlalchemy import Column, Integer, MetaData, String, Table, func, insert, select

from gatehouse.events.v1.envelope_pb2 import Event
from gatehouse.runtime.backbone_metrics import ConsumerMetrics
from gatehouse.runtime.bus import (
    DeadLetter,
    GroupEventBus,
    InProcessEventBus,
    RedisStreamsEventBus,
    dead_letter_stream,
    replay_dead_letter,
)
from gatehouse.runtime.consumers import (
    Consumer,
    ConsumerRunner,
    DeadLetterReason,
    ProcessedEventRow,
    RetryPolicy,
    RunnerOptions,
    UnreadableRule,
)
from gatehouse.runtime.db import Database, SqlAlchemyUnitOfWork, migrate
from gatehouse.runtime.events import new_event
from gatehouse.runtime.redis_connection import RedisConnection, RedisOptions
from tests.contracts.timing import eventually
from tests.integration.redis_fixtures import redis_prefix, redis_url  # noqa: F401
from tests.support.metrics import RecordedMetrics
from tests.support.redis_server import PrivateRedis, private_redis_fixture  # noqa: F401

BUSES = ("memory", pytest.param("redis", marks=pytest.mark.redis))
EVENT_TYPE = "widget.changed"
STREAM = "events.widget"
GROUP = "widgets-view"
DEAD = dead_letter_stream(STREAM, GROUP)
PATIENCE = timedelta(seconds=60)

# Quick reads and claims so the tests are short; correctness never depends on them.
FAST = RunnerOptions(
    block=timedelta(milliseconds=200),
    claim_interval=timedelta(milliseconds=200),
    claim_min_idle=timedelta(seconds=30),
    reconnect_first_backoff=timedelta(milliseconds=20),
    reconnect_max_backoff=timedelta(milliseconds=300),
)
QUICK_RETRIES = RetryPolicy(
    max_attempts=3, first_backoff=timedelta(milliseconds=5), max_backoff=timedelta(milliseconds=20)
)

effects_metadata = MetaData()
effects = Table(
    "consumer_test_effects",
    effects_metadata,
    # Deliberately no unique key: a second application of an event would show as a row.
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("consumer", String(64), nullable=False),
    Column("event_id", String(128), nullable=False),
)


class EffectsUnitOfWork(SqlAlchemyUnitOfWork):
    """What a service's unit of work is to its handlers, reduced to one table."""

    async def record(self, consumer: str, event_id: str) -> None:
        await self.session.execute(insert(effects).values(consumer=consumer, event_id=event_id))


@dataclass
class Calls:
    """What the handlers saw, committed or not."""

    attempts: Counter[str] = field(default_factory=Counter)
    spans: list[trace.SpanContext] = field(default_factory=list)


def widget_event(n: int, *, event_type: str = EVENT_TYPE, schema_version: int = 1) -> Event:
    return new_event(
        event_type,
        source="tests",
        subject=f"widgets/{n}",
        data=wrappers_pb2.StringValue(value=f"widget {n}"),
        schema_version=schema_version,
    )


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    await migrate(database_url, [])
    async with Database(database_url) as database:
        async with database.engine.begin() as connection:
            await connection.run_sync(effects_metadata.create_all)
        yield database


def _redis_connection(request: pytest.FixtureRequest, url: str | None = None) -> RedisConnection:
    run_prefix: str = request.getfixturevalue("redis_prefix")
    target: str = url or request.getfixturevalue("redis_url")
    options = RedisOptions(key_prefix=f"{run_prefix}{secrets.token_hex(4)}:")
    return RedisConnection.from_url(target, options)


@pytest.fixture(params=BUSES)
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[GroupEventBus]:
    if request.param == "memory":
        memory = InProcessEventBus()
        yield memory
        await memory.close()
        return
    async with _redis_connection(request) as connection:
        redis_bus = RedisStreamsEventBus(connection)
        yield redis_bus
        await redis_bus.close()


def make_consumer(
    database: Database,
    calls: Calls,
    *,
    name: str = GROUP,
    fails: Callable[[Event], bool] = lambda _event: False,
    unknown_type: UnreadableRule = UnreadableRule.SKIP,
    newer_schema: UnreadableRule = UnreadableRule.DEAD_LETTER,
    retry: RetryPolicy = QUICK_RETRIES,
    hold: asyncio.Event | None = None,
    pause: timedelta = timedelta(0),
) -> Consumer[EffectsUnitOfWork]:
    consumer = Consumer(
        name,
        lambda: EffectsUnitOfWork(database.sessionmaker),
        unknown_type=unknown_type,
        newer_schema=newer_schema,
        retry=retry,
    )

    @consumer.handles(EVENT_TYPE, wrappers_pb2.StringValue)
    async def on_widget(
        event: Event, payload: wrappers_pb2.StringValue, uow: EffectsUnitOfWork
    ) -> None:
        calls.attempts[event.id] += 1
        calls.spans.append(trace.get_current_span().get_span_context())
        assert payload.value.startswith("widget ")
        await uow.record(name, event.id)
        if hold is not None:
            await hold.wait()
        if pause:
            await asyncio.sleep(pause.total_seconds())
        if fails(event):
            raise RuntimeError(f"widget {event.subject} is poisoned")

    return consumer


async def count_effects(database: Database, consumer: str = GROUP) -> tuple[int, int]:
    """(rows, distinct event ids) committed by `consumer`."""
    async with database.sessionmaker() as session:
        row = (
            await session.execute(
                select(func.count(), func.count(effects.c.event_id.distinct())).where(
                    effects.c.consumer == consumer
                )
            )
        ).one()
    return int(row[0]), int(row[1])


async def count_markers(database: Database, consumer: str = GROUP) -> int:
    async with database.sessionmaker() as session:
        found = await session.scalar(
            select(func.count()).where(ProcessedEventRow.consumer == consumer)
        )
    return int(found or 0)


async def wait_for_effects(database: Database, expected: int, consumer: str = GROUP) -> None:
    async def all_there() -> bool:
        return (await count_effects(database, consumer))[1] >= expected

    await eventually(
        all_there,
        step=lambda: asyncio.sleep(0.05),
        what=f"{expected} events handled by {consumer}",
        patience=PATIENCE,
    )


async def wait_until_acked(bus: GroupEventBus, stream: str = STREAM, group: str = GROUP) -> None:
    async def nothing_pending() -> bool:
        return await bus.pending_count(stream, group) == 0

    await eventually(
        nothing_pending,
        step=lambda: asyncio.sleep(0.05),
        what="every delivery acknowledged",
        patience=PATIENCE,
    )


async def dead_letters(bus: GroupEventBus, stream: str = DEAD) -> list[DeadLetter]:
    return await bus.read_dead_letters(stream, count=1000)


@contextlib.asynccontextmanager
async def running(
    bus: GroupEventBus,
    consumer: Consumer[EffectsUnitOfWork],
    options: RunnerOptions = FAST,
    tracer_provider: trace.TracerProvider | None = None,
    metrics: ConsumerMetrics | None = None,
) -> AsyncIterator[ConsumerRunner[EffectsUnitOfWork]]:
    runner = ConsumerRunner(
        bus, consumer, options=options, tracer_provider=tracer_provider, metrics=metrics
    )
    await runner.start()
    try:
        yield runner
    finally:
        await runner.stop(grace=timedelta(seconds=5))


async def publish_all(bus: GroupEventBus, events: Sequence[Event]) -> None:
    for event in events:
        await bus.publish(STREAM, event)


# --- handled once -------------------------------------------------------------------------


async def test_every_event_is_handled_exactly_once_across_replicas(
    database: Database, bus: GroupEventBus
) -> None:
    calls = Calls()
    events = [widget_event(n) for n in range(200)]
    await publish_all(bus, events[:100])
    # Two replicas of the same consumer share the group: each event goes to one of them.
    async with (
        running(bus, make_consumer(database, calls)) as first,
        running(bus, make_consumer(database, calls)) as second,
    ):
        assert first.name != second.name
        await publish_all(bus, events[100:])
        await wait_for_effects(database, len(events))
        await wait_until_acked(bus)
    assert await count_effects(database) == (200, 200)
    assert await count_markers(database) == 200
    assert set(calls.attempts) == {event.id for event in events}
    assert await dead_letters(bus) == []


async def test_a_duplicate_event_is_acknowledged_without_being_applied_again(
    database: Database, bus: GroupEventBus
) -> None:
    calls = Calls()
    original = widget_event(1)
    # The relay published it twice (a lost reply), and an unrelated event sits in between.
    await publish_all(bus, [original, widget_event(2), original])
    async with running(bus, make_consumer(database, calls)):
        await wait_for_effects(database, 2)
        await wait_until_acked(bus)
        # Replayed later by an operator: still not applied again.
        await bus.publish(STREAM, original)
        await wait_until_acked(bus)
        fresh = widget_event(3)
        await bus.publish(STREAM, fresh)
        await wait_for_effects(database, 3)
        await wait_until_acked(bus)
    assert await count_effects(database) == (3, 3)
    assert calls.attempts[original.id] == 1


async def test_consumers_of_different_names_each_handle_every_event(
    database: Database, bus: GroupEventBus
) -> None:
    events = [widget_event(n) for n in range(20)]
    await publish_all(bus, events)
    async with (
        running(bus, make_consumer(database, Calls(), name="audit")),
        running(bus, make_consumer(database, Calls(), name="feed")),
    ):
        await wait_for_effects(database, 20, consumer="audit")
        await wait_for_effects(database, 20, consumer="feed")
    assert await count_effects(database, "audit") == (20, 20)
    assert await count_effects(database, "feed") == (20, 20)


# --- failures -----------------------------------------------------------------------------


async def test_a_poison_event_is_dead_lettered_and_later_events_still_flow(
    database: Database, bus: GroupEventBus
) -> None:
    calls = Calls()
    poison = widget_event(666)
    before = [widget_event(n) for n in range(3)]
    after = [widget_event(n) for n in range(3, 6)]
    await publish_all(bus, [*before, poison, *after])
    poison_position = (await bus.read(STREAM, count=10))[3][0]

    def is_poison(event: Event) -> bool:
        return event.id == poison.id

    async with running(bus, make_consumer(database, calls, fails=is_poison)) as runner:
        await wait_for_effects(database, 6)
        await wait_until_acked(bus)

        async def dead_lettered() -> bool:
            return len(await dead_letters(bus)) == 1

        await eventually(dead_lettered, step=lambda: asyncio.sleep(0.05), what="dead letter")
    # Every attempt rolled back: the poison left no effect and no marker.
    assert await count_effects(database) == (6, 6)
    assert await count_markers(database) == 6
    assert calls.attempts[poison.id] == QUICK_RETRIES.max_attempts
    [letter] = await dead_letters(bus)
    assert letter.event == poison
    assert letter.info is not None
    assert letter.info.stream == STREAM
    assert letter.info.group == GROUP
    assert letter.info.position == poison_position
    assert letter.info.reason == DeadLetterReason.HANDLER_FAILED
    assert letter.info.attempts == QUICK_RETRIES.max_attempts
    assert letter.info.consumer == runner.name
    assert letter.info.error == "RuntimeError: widget widgets/666 is poisoned"
    assert await bus.dead_letter_streams() == [DEAD]


async def test_a_replayed_dead_letter_is_handled_once_the_fault_is_fixed(
    database: Database, bus: GroupEventBus
) -> None:
    broken = True
    poison = widget_event(7)
    await bus.publish(STREAM, poison)
    async with running(bus, make_consumer(database, Calls(), fails=lambda _event: broken)):

        async def dead_lettered() -> bool:
            return len(await dead_letters(bus)) == 1

        await eventually(dead_lettered, step=lambda: asyncio.sleep(0.05), what="dead letter")
        broken = False
        [letter] = await dead_letters(bus)
        assert await replay_dead_letter(bus, DEAD, letter.position) is not None
        await wait_for_effects(database, 1)
        await wait_until_acked(bus)
    assert await count_effects(database) == (1, 1)
    assert await dead_letters(bus) == []


@pytest.mark.parametrize(
    ("unknown_type", "newer_schema"),
    [
        (UnreadableRule.SKIP, UnreadableRule.DEAD_LETTER),
        (UnreadableRule.DEAD_LETTER, UnreadableRule.SKIP),
    ],
    ids=["defaults", "inverted"],
)
async def test_unreadable_events_are_skipped_or_dead_lettered_by_rule(
    database: Database,
    bus: GroupEventBus,
    unknown_type: UnreadableRule,
    newer_schema: UnreadableRule,
) -> None:
    unknown = widget_event(1, event_type="widget.exploded")
    newer = widget_event(2, schema_version=2)
    wrong_payload = widget_event(3)
    wrong_payload.data.Pack(wrappers_pb2.Int64Value(value=3))
    no_id = widget_event(4)
    no_id.id = ""
    fine = widget_event(5)
    await publish_all(bus, [unknown, newer, wrong_payload, no_id, fine])
    consumer = make_consumer(
        database, Calls(), unknown_type=unknown_type, newer_schema=newer_schema
    )
    async with running(bus, consumer):
        await wait_for_effects(database, 1)
        await wait_until_acked(bus)
    expected = {
        DeadLetterReason.BAD_PAYLOAD: wrong_payload,
        DeadLetterReason.MALFORMED: no_id,
    }
    if unknown_type is UnreadableRule.DEAD_LETTER:
        expected[DeadLetterReason.UNKNOWN_TYPE] = unknown
    if newer_schema is UnreadableRule.DEAD_LETTER:
        expected[DeadLetterReason.NEWER_SCHEMA] = newer
    letters = await dead_letters(bus)
    assert {letter.info.reason: letter.event for letter in letters if letter.info} == expected
    assert await count_effects(database) == (1, 1)


async def test_an_event_with_an_empty_payload_is_dead_lettered(
    database: Database, bus: GroupEventBus
) -> None:
    empty = widget_event(1)
    empty.data.CopyFrom(any_pb2.Any())
    await bus.publish(STREAM, empty)
    async with running(bus, make_consumer(database, Calls())):
        await wait_until_acked(bus)

        async def dead_lettered() -> bool:
            return len(await dead_letters(bus)) == 1

        await eventually(dead_lettered, step=lambda: asyncio.sleep(0.05), what="dead letter")
    [letter] = await dead_letters(bus)
    assert letter.info is not None
    assert letter.info.reason == DeadLetterReason.BAD_PAYLOAD


# --- dead and restarted consumers ---------------------------------------------------------


async def test_a_killed_consumer_s_events_are_claimed_and_processed_once(
    database: Database, bus: GroupEventBus
) -> None:
    events = [widget_event(n) for n in range(5)]
    await publish_all(bus, events)
    stuck_calls = Calls()
    never = asyncio.Event()
    victim = ConsumerRunner(bus, make_consumer(database, stuck_calls, hold=never), options=FAST)
    await victim.start()

    async def victim_is_inside_the_handler() -> bool:
        return sum(stuck_calls.attempts.values()) == 1

    await eventually(
        victim_is_inside_the_handler, step=lambda: asyncio.sleep(0.02), what="handler entered"
    )
    # Killed mid-handler: its transaction rolls back, nothing is acknowledged.
    await victim.stop(grace=timedelta(0))
    assert await count_effects(database) == (0, 0)
    assert await bus.pending_count(STREAM, GROUP) == 5

    rescuer_calls = Calls()
    claiming = RunnerOptions(
        block=timedelta(milliseconds=100),
        claim_interval=timedelta(milliseconds=100),
        claim_min_idle=timedelta(milliseconds=500),
        reconnect_first_backoff=timedelta(milliseconds=20),
        reconnect_max_backoff=timedelta(milliseconds=300),
    )
    async with running(bus, make_consumer(database, rescuer_calls), options=claiming):
        await wait_for_effects(database, 5)
        await wait_until_acked(bus)
    assert await count_effects(database) == (5, 5)
    assert rescuer_calls.attempts == Counter({event.id: 1 for event in events})


async def test_a_consumer_group_lost_by_the_bus_is_recreated(
    database: Database, bus: GroupEventBus
) -> None:
    await publish_all(bus, [widget_event(n) for n in range(3)])
    async with running(bus, make_consumer(database, Calls())):
        await wait_for_effects(database, 3)
        await wait_until_acked(bus)
        # What a Redis restart without persistence does to a group.
        await bus.delete_group(STREAM, GROUP)
        await publish_all(bus, [widget_event(n) for n in range(3, 6)])
        await wait_for_effects(database, 6)
    # The recreated group re-read the first three from the oldest event: the markers held.
    assert await count_effects(database) == (6, 6)


async def test_stop_lets_the_event_in_hand_finish(database: Database, bus: GroupEventBus) -> None:
    release = asyncio.Event()
    calls = Calls()
    await bus.publish(STREAM, widget_event(1))
    runner = ConsumerRunner(bus, make_consumer(database, calls, hold=release), options=FAST)
    await runner.start()

    async def inside() -> bool:
        return sum(calls.attempts.values()) == 1

    await eventually(inside, step=lambda: asyncio.sleep(0.02), what="handler entered")
    stopping = asyncio.create_task(runner.stop(grace=timedelta(seconds=30)))
    await asyncio.sleep(0.1)
    assert not stopping.done()
    release.set()
    await asyncio.wait_for(stopping, PATIENCE.total_seconds())
    assert not runner.running
    assert await count_effects(database) == (1, 1)
    assert await bus.pending_count(STREAM, GROUP) == 0


# --- tracing ------------------------------------------------------------------------------


async def test_the_handler_span_continues_the_producers_trace(database: Database) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    bus = InProcessEventBus()
    with provider.get_tracer("tests").start_as_current_span("CreateWidget") as producer:
        event = widget_event(1)
    producer_context = producer.get_span_context()
    await bus.publish(STREAM, event)
    calls = Calls()
    async with running(bus, make_consumer(database, calls), tracer_provider=provider):
        await wait_for_effects(database, 1)
    [consumer_span] = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.CONSUMER]
    assert consumer_span.name == f"process {EVENT_TYPE}"
    assert consumer_span.attributes is not None
    assert consumer_span.attributes["messaging.consumer.group.name"] == GROUP
    assert consumer_span.attributes["messaging.message.id"] == event.id
    # A child of the producer's span, in its trace (and linked to it for tools that follow
    # links).
    [link] = consumer_span.links
    assert link.context.span_id == producer_context.span_id
    assert consumer_span.parent is not None
    assert consumer_span.parent.span_id == producer_context.span_id
    assert consumer_span.context is not None
    assert consumer_span.context.trace_id == producer_context.trace_id
    # The handler ran inside that span (its logs and child spans carry its ids).
    assert calls.spans == [consumer_span.context]


# --- retention ----------------------------------------------------------------------------


async def test_processed_markers_are_forgotten_after_the_retention(
    database: Database, bus: GroupEventBus
) -> None:
    now = [datetime.now(UTC)]
    runner = ConsumerRunner(
        bus,
        make_consumer(database, Calls()),
        options=replace(FAST, processed_retention=timedelta(days=30)),
        clock=lambda: now[0],
    )
    await publish_all(bus, [widget_event(n) for n in range(3)])
    await runner.start()
    try:
        await wait_for_effects(database, 3)
        # Within the retention nothing goes; past it, every marker does.
        now[0] += timedelta(days=29)
        assert await runner.sweep_processed() == 0
        assert await count_markers(database) == 3
        now[0] += timedelta(days=2)
        assert await runner.sweep_processed() == 3
        assert await count_markers(database) == 0
    finally:
        await runner.stop()


# --- metrics ------------------------------------------------------------------------------


async def test_outcomes_lag_and_dead_letters_are_counted(
    database: Database, bus: GroupEventBus
) -> None:
    recorded = RecordedMetrics()
    poison = widget_event(666)
    good = [widget_event(n) for n in range(3)]
    await publish_all(bus, [*good, poison, good[0]])  # the last one a redelivered duplicate
    consumer = make_consumer(database, Calls(), fails=lambda event: event.id == poison.id)
    metrics = ConsumerMetrics(GROUP, recorded.provider)
    async with running(bus, consumer, metrics=metrics):
        await wait_for_effects(database, 3)

        async def all_finished() -> bool:
            return sum(int(p.value) for p in recorded.points("gatehouse.consumer.events")) == 5

        await eventually(all_finished, step=lambda: asyncio.sleep(0.05), what="5 outcomes")
    labels = {"gatehouse.consumer": GROUP, "messaging.destination.name": STREAM}
    outcomes = {"handled": 3, "duplicate": 1, "dead_lettered": 1}
    for outcome, count in outcomes.items():
        value = recorded.value(
            "gatehouse.consumer.events", {**labels, "gatehouse.outcome": outcome}
        )
        assert value == count, outcome
    assert (
        recorded.value("gatehouse.consumer.dead_letters", {"gatehouse.reason": "handler_failed"})
        == 1
    )
    # One lag observation per handled event, measured from the event's commit time.
    assert recorded.value("gatehouse.consumer.lag", labels) == 3


# --- Redis restarted mid-run --------------------------------------------------------------


@pytest.mark.redis
async def test_consumers_catch_up_after_a_redis_restart(
    database: Database, private_redis: PrivateRedis
) -> None:
    options = RedisOptions(
        key_prefix="gatehouse-restart-test:",
        socket_timeout=timedelta(seconds=2),
        connect_timeout=timedelta(seconds=1),
        retries=1,
        backoff_cap=timedelta(milliseconds=200),
    )
    events = [widget_event(n) for n in range(300)]
    restarted = asyncio.Event()
    handled_before_the_crash: int | None = None
    async with RedisConnection.from_url(private_redis.url, options) as connection:
        bus = RedisStreamsEventBus(connection)
        recovering = RunnerOptions(
            block=timedelta(milliseconds=200),
            claim_interval=timedelta(milliseconds=300),
            # Replies lost in the crash leave events pending to a live consumer: claimed soon.
            claim_min_idle=timedelta(seconds=1),
            reconnect_first_backoff=timedelta(milliseconds=50),
            reconnect_max_backoff=timedelta(milliseconds=500),
        )

        async def produce() -> None:
            nonlocal handled_before_the_crash
            # What the outbox relay does: retry each event until the bus takes it.
            for index, event in enumerate(events):
                if index == 100:
                    handled_before_the_crash = (await count_effects(database))[1]
                    await private_redis.kill()
                    await asyncio.sleep(1.0)
                    await private_redis.start()
                    restarted.set()
                while True:
                    try:
                        await bus.publish(STREAM, event)
                        break
                    except Exception:  # any bus failure: retry, as a relay would
                        await asyncio.sleep(0.05)
                if index >= 100:
                    await asyncio.sleep(0.002)

        # Handlers slower than the producer: when Redis dies, events are pending, in flight
        # and not yet delivered.
        pause = timedelta(milliseconds=10)
        async with (
            running(bus, make_consumer(database, Calls(), pause=pause), options=recovering),
            running(bus, make_consumer(database, Calls(), pause=pause), options=recovering),
        ):
            await produce()
            assert restarted.is_set()
            assert handled_before_the_crash is not None
            assert handled_before_the_crash < 100
            await wait_for_effects(database, len(events))
            await wait_until_acked(bus)
        # Nothing lost, nothing applied twice (a publish retried after a lost reply may
        # have put an event on the stream twice; the markers absorbed it).
        assert await count_effects(database) == (300, 300)
        assert await count_markers(database) == 300
        assert await bus.read_dead_letters(DEAD) == []
        await bus.close()
