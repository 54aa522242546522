"""The transactional outbox and its relay, on real databases and real buses.

Every test that takes `database_url` runs on SQLite and on PostgreSQL; every test that takes
`bus` runs on the in-process bus and on Redis Streams. Faults are injected by wrapping the
real bus (`ScriptedBus`), never by mocking the relay. Waits are `eventually(...)` with
generous deadlines; nothing asserts how fast.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import format_span_id, format_trace_id
from sqlalchemy import String, func, inspect, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from gatehouse.events.v1.envelope_pb2 import Event
from gatehouse.payments.v1.events_pb2 import PaymentCreated
from gatehouse.runtime.backbone_metrics import OutboxMetrics
from gatehouse.runtime.bus import EventBus, InProcessEventBus, RedisStreamsEventBus
from gatehouse.runtime.config import Settings
from gatehouse.runtime.db import Database, DuplicateKeyError, alembic_config, migrate, new_registry
from gatehouse.runtime.events import InvalidEventError, new_event, producer_link, stream_for
from gatehouse.runtime.kv import InMemoryKeyValueStore
from gatehouse.runtime.live import LiveHub
from gatehouse.runtime.outbox import (
    InMemoryOutbox,
    OutboxEventRow,
    OutboxRelay,
    OutboxUnitOfWork,
    RelayOptions,
)
from gatehouse.runtime.redis_connection import RedisConnection, RedisOptions
from gatehouse.runtime.server import Lifecycle
from gatehouse.runtime.service_context import ServiceContext, ServiceDatabase
from tests.contracts.timing import eventually
from tests.integration.redis_fixtures import redis_prefix, redis_url  # noqa: F401
from tests.support.metrics import RecordedMetrics

BUSES = ("memory", pytest.param("redis", marks=pytest.mark.redis))
PAYMENTS = stream_for("payment.created")

# Short waits so the tests are quick; correctness never depends on them.
FAST = RelayOptions(
    poll_interval=timedelta(milliseconds=50),
    backoff_base=timedelta(milliseconds=10),
    backoff_cap=timedelta(milliseconds=100),
    leadership_retry=timedelta(milliseconds=50),
    purge_interval=timedelta(milliseconds=50),
    stop_timeout=timedelta(seconds=5),
)


# --- a service's own state, changed together with its events --------------------------------


class WidgetsBase(DeclarativeBase):
    registry = new_registry()


class WidgetRow(WidgetsBase):
    __tablename__ = "widgets"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    state: Mapped[str] = mapped_column(String(32))


class WidgetsUnitOfWork(OutboxUnitOfWork):
    """A service's unit of work: its own table plus the runtime's outbox."""

    def _create_repositories(self, session: AsyncSession) -> None:
        self.widgets = session


class CountingNotifier:
    def __init__(self) -> None:
        self.calls = 0

    def notify(self) -> None:
        self.calls += 1


def payment_event(subject: str, n: int) -> Event:
    data = PaymentCreated(payment=subject, description=f"#{n}")
    return new_event("payment.created", source="payments", subject=subject, data=data)


async def produce(
    database: Database,
    count: int,
    *,
    subject: str = "payments/a",
    relay: OutboxRelay | None = None,
) -> list[Event]:
    """`count` units of work, each changing a widget and adding one event."""
    events = []
    uow = WidgetsUnitOfWork(database.sessionmaker, relay=relay)
    for n in range(count):
        event = payment_event(subject, n)
        async with uow:
            await uow.widgets.merge(WidgetRow(name=subject, state=f"step {n}"))
            await uow.outbox.add(event)
            await uow.commit()
        events.append(event)
    return events


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    await migrate(database_url, [])
    async with Database(database_url) as database:
        async with database.engine.begin() as connection:
            await connection.run_sync(WidgetsBase.metadata.create_all)
        yield database


@pytest.fixture(params=BUSES)
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[EventBus]:
    if request.param == "memory":
        yield InProcessEventBus()
        return
    url: str = request.getfixturevalue("redis_url")
    prefix: str = request.getfixturevalue("redis_prefix")
    options = RedisOptions(key_prefix=f"{prefix}outbox:{secrets.token_hex(4)}:")
    async with RedisConnection.from_url(url, options) as connection:
        yield RedisStreamsEventBus(connection)


class ScriptedBus:
    """A real bus behind a wrapper that records, fails or stalls publishes on cue."""

    def __init__(
        self,
        inner: EventBus,
        *,
        fail_first: int = 0,
        fail_always: bool = False,
        stall_after: int | None = None,
        gate: asyncio.Event | None = None,
    ) -> None:
        self._inner = inner
        self._fail_first = fail_first
        self._fail_always = fail_always
        self._stall_after = stall_after
        self._gate = gate
        self.calls = 0
        # Ids the inner bus accepted, in order.
        self.published: list[str] = []
        self.waiting: list[str] = []
        self.stalled = asyncio.Event()

    async def publish(self, stream: str, event: Event) -> str:
        self.calls += 1
        if self._fail_always or self.calls <= self._fail_first:
            raise ConnectionError(f"scripted bus failure #{self.calls}")
        if self._gate is not None:
            self.waiting.append(event.id)
            await self._gate.wait()
        position = await self._inner.publish(stream, event)
        self.published.append(event.id)
        if self._stall_after is not None and len(self.published) == self._stall_after:
            # The publish went through, the relay never hears back: a crash right between
            # publish and mark, once the test cancels the relay.
            self.stalled.set()
            await asyncio.Event().wait()
        return position

    async def read(
        self,
        stream: str,
        after: str | None = None,
        count: int = 100,
        block: timedelta | None = None,
    ) -> list[tuple[str, Event]]:
        return await self._inner.read(stream, after, count, block)

    async def latest_position(self, stream: str) -> str:
        return await self._inner.latest_position(stream)

    async def close(self) -> None:
        await self._inner.close()


async def everything_in(bus: EventBus, stream: str = PAYMENTS) -> list[Event]:
    events: list[Event] = []
    after: str | None = None
    while batch := await bus.read(stream, after=after, count=500):
        events.extend(event for _, event in batch)
        after = batch[-1][0]
    return events


async def ids_in(bus: EventBus, stream: str = PAYMENTS) -> list[str]:
    return [event.id for event in await everything_in(bus, stream)]


async def rows(database: Database) -> list[OutboxEventRow]:
    async with database.sessionmaker() as session:
        result = await session.scalars(select(OutboxEventRow).order_by(OutboxEventRow.id))
        return list(result.all())


async def tick() -> None:
    await asyncio.sleep(0.02)


async def until_drained(relay: OutboxRelay, what: str = "every row published") -> None:
    async def drained() -> bool:
        return await relay.pending_count() == 0

    await eventually(drained, step=tick, what=what)


def leader_of(*relays: OutboxRelay) -> list[OutboxRelay]:
    return [relay for relay in relays if relay.status().leader]


# --- writing: one transaction for the state and its events -----------------------------------


async def test_state_change_and_event_commit_together(database: Database) -> None:
    event = payment_event("payments/a", 1)

    async with WidgetsUnitOfWork(database.sessionmaker) as uow:
        uow.widgets.add(WidgetRow(name="payments/a", state="created"))
        await uow.outbox.add(event)
        await uow.commit()

    async with database.sessionmaker() as session:
        widget = await session.get(WidgetRow, "payments/a")
    [row] = await rows(database)
    assert widget is not None
    assert widget.state == "created"
    assert row.id == event.id
    assert row.stream == "events.payment"
    assert row.aggregate == "payments/a"
    assert row.type == "payment.created"
    assert Event.FromString(row.payload) == event
    assert row.published_at is None
    assert row.attempts == 0
    assert row.last_error is None
    assert row.created_at.tzinfo is not None


async def test_a_rolled_back_unit_of_work_leaves_neither_state_nor_event(
    database: Database,
) -> None:
    notifier = CountingNotifier()
    uow = WidgetsUnitOfWork(database.sessionmaker, relay=notifier)

    async with uow:  # left without commit
        uow.widgets.add(WidgetRow(name="payments/a", state="created"))
        await uow.outbox.add(payment_event("payments/a", 1))
    with pytest.raises(RuntimeError, match="handler failed"):
        await failing_handler(uow)
    async with uow:
        uow.widgets.add(WidgetRow(name="payments/c", state="created"))
        await uow.outbox.add(payment_event("payments/c", 1))
        await uow.rollback()
        await uow.commit()  # commits nothing: the rollback discarded it

    async with database.sessionmaker() as session:
        widgets = await session.scalar(select(func.count()).select_from(WidgetRow))
    assert widgets == 0
    assert await rows(database) == []
    assert notifier.calls == 0


async def failing_handler(uow: WidgetsUnitOfWork) -> None:
    async with uow:
        uow.widgets.add(WidgetRow(name="payments/b", state="created"))
        await uow.outbox.add(payment_event("payments/b", 1))
        await uow.session.flush()  # the rows reached the database, then the handler fails
        raise RuntimeError("handler failed")


async def test_a_commit_with_events_wakes_the_relay_and_one_without_does_not(
    database: Database,
) -> None:
    notifier = CountingNotifier()
    uow = WidgetsUnitOfWork(database.sessionmaker, relay=notifier)

    async with uow:
        uow.widgets.add(WidgetRow(name="payments/a", state="created"))
        await uow.commit()
    assert notifier.calls == 0

    async with uow:
        await uow.outbox.add(payment_event("payments/a", 1))
        await uow.outbox.add(payment_event("payments/a", 2))
        await uow.commit()
    assert notifier.calls == 1


async def test_the_same_event_twice_fails_the_commit(database: Database) -> None:
    event = payment_event("payments/a", 1)
    await produce_one(database, event)

    with pytest.raises(DuplicateKeyError):
        await produce_one(database, event)
    assert [row.id for row in await rows(database)] == [event.id]


async def produce_one(database: Database, event: Event) -> None:
    async with WidgetsUnitOfWork(database.sessionmaker) as uow:
        await uow.outbox.add(event)
        await uow.commit()


async def test_envelopes_the_relay_could_not_order_are_refused() -> None:
    outbox = InMemoryOutbox()
    not_a_ulid = payment_event("payments/a", 1)
    not_a_ulid.id = "4f1c2a9e-5b7d-4e3f-9a1b-2c3d4e5f6a7b"
    no_subject = payment_event("payments/a", 1)
    no_subject.subject = ""
    bad_type = payment_event("payments/a", 1)
    bad_type.type = "PaymentCreated"

    for event in (not_a_ulid, no_subject, bad_type):
        with pytest.raises(InvalidEventError):
            await outbox.add(event)
    assert outbox.events == []


# --- relaying ------------------------------------------------------------------------------


async def test_the_relay_publishes_every_row_in_id_order_and_marks_it(
    database: Database, bus: EventBus
) -> None:
    # More than two batches, two streams, several aggregates.
    produced = []
    for n in range(3):
        produced += await produce(database, 90, subject=f"payments/{n}")
    device_events = [
        new_event(
            "device.status_changed",
            source="monitoring",
            subject=f"devices/{n}",
            data=PaymentCreated(),
        )
        for n in range(5)
    ]
    for event in device_events:
        await produce_one(database, event)
    relay = OutboxRelay(database, bus, FAST)

    async with relay:
        await until_drained(relay)

    assert await ids_in(bus) == [event.id for event in produced]
    assert await ids_in(bus, "events.device") == [event.id for event in device_events]
    stored = await rows(database)
    assert len(stored) == 275
    assert all(row.published_at is not None and row.attempts == 1 for row in stored)
    assert relay.status().published == 275
    assert relay.status().consecutive_failures == 0


async def test_a_row_is_marked_only_after_the_bus_accepted_it(
    database: Database, bus: EventBus
) -> None:
    [event] = await produce(database, 1)
    gate = asyncio.Event()
    scripted = ScriptedBus(bus, gate=gate)

    async with OutboxRelay(database, scripted, FAST) as relay:

        async def publish_started() -> bool:
            return scripted.waiting == [event.id]

        await eventually(publish_started, step=tick, what="the relay calls publish")
        await asyncio.sleep(0.2)  # give a wrongly ordered mark every chance to happen
        [row] = await rows(database)
        assert row.published_at is None
        assert await relay.pending_count() == 1

        gate.set()
        await until_drained(relay)

    [row] = await rows(database)
    assert row.published_at is not None
    assert await ids_in(bus) == [event.id]


async def test_a_bus_that_fails_then_recovers_gets_every_event_once_in_order(
    database: Database, bus: EventBus
) -> None:
    produced = await produce(database, 30)
    scripted = ScriptedBus(bus, fail_first=5)

    async with OutboxRelay(database, scripted, FAST) as relay:
        await until_drained(relay)
        status = relay.status()

    assert await ids_in(bus) == [event.id for event in produced]
    assert scripted.calls == 30 + 5
    assert status.consecutive_failures == 0
    assert status.last_error is not None
    assert "scripted bus failure #5" in status.last_error
    first, *rest = await rows(database)
    # The failed row blocked the others and kept its record of what happened.
    assert first.attempts == 6
    assert first.last_error is not None
    assert "ConnectionError" in first.last_error
    assert all(row.attempts == 1 and row.last_error is None for row in rest)


async def test_events_committed_while_the_bus_is_down_go_out_once_it_is_back(
    database: Database, bus: EventBus
) -> None:
    before = await produce(database, 10, subject="payments/a")
    scripted = ScriptedBus(bus, fail_first=20)

    async with OutboxRelay(database, scripted, FAST) as relay:
        during = await produce(database, 10, subject="payments/b", relay=relay)
        await until_drained(relay)

    assert await ids_in(bus) == [event.id for event in before + during]


async def test_a_crash_between_publish_and_mark_republishes_and_loses_nothing(
    database: Database, bus: EventBus
) -> None:
    produced = await produce(database, 10)
    ids = [event.id for event in produced]
    crashing = ScriptedBus(bus, stall_after=3)
    relay = OutboxRelay(database, crashing, replace(FAST, stop_timeout=timedelta(0)))

    await relay.start()
    await asyncio.wait_for(crashing.stalled.wait(), timeout=10)
    await relay.stop()  # no grace: cancelled with three events out and none marked

    assert await ids_in(bus) == ids[:3]
    assert await relay.pending_count() == 10

    async with OutboxRelay(database, bus, FAST) as restarted:
        await until_drained(restarted)

    # At least once: the three unmarked ones went out twice, then everything in order.
    assert await ids_in(bus) == ids[:3] + ids
    assert {row.id for row in await rows(database)} == set(ids)


async def test_events_written_while_the_relay_runs_all_arrive_exactly_once(
    database: Database, bus: EventBus
) -> None:
    # Five producers committing concurrently, the relay woken by their commits.
    async with OutboxRelay(database, bus, FAST) as relay:
        produced = await asyncio.gather(
            *(produce(database, 40, subject=f"payments/{n}", relay=relay) for n in range(5))
        )
        await until_drained(relay)
        published = relay.status().published

    written = [event for events in produced for event in events]
    out = await everything_in(bus)
    assert len(written) == 200
    assert published == 200
    assert sorted(event.id for event in out) == sorted(event.id for event in written)
    by_aggregate: dict[str, list[str]] = defaultdict(list)
    for event in out:
        by_aggregate[event.subject].append(event.id)
    for events in produced:
        assert by_aggregate[events[0].subject] == [event.id for event in events]


async def test_a_notified_relay_does_not_wait_for_its_poll(
    database: Database, bus: EventBus
) -> None:
    # A poll far beyond the test's patience: only the commit's notification can be in time.
    sleepy = replace(FAST, poll_interval=timedelta(minutes=10))
    async with OutboxRelay(database, bus, sleepy) as relay:

        async def idle_leader() -> bool:
            return relay.status().leader

        await eventually(idle_leader, step=tick, what="the relay leads")
        await asyncio.sleep(0.1)  # its first round found nothing; now it sleeps
        produced = await produce(database, 3, relay=relay)
        await until_drained(relay, "published on notification")

    assert await ids_in(bus) == [event.id for event in produced]


async def test_the_producing_span_travels_to_the_consumer(
    database: Database, bus: EventBus
) -> None:
    tracer = TracerProvider().get_tracer("tests")
    with tracer.start_as_current_span("PaymentsService/CreatePayment") as span:
        [event] = await produce(database, 1)
    produced_in = span.get_span_context()

    async with OutboxRelay(database, bus, FAST) as relay:
        await until_drained(relay)

    [received] = await everything_in(bus)
    assert received.id == event.id
    assert format_trace_id(produced_in.trace_id) in received.traceparent
    assert format_span_id(produced_in.span_id) in received.traceparent
    link = producer_link(received)
    assert link is not None
    assert link.context.trace_id == produced_in.trace_id
    assert link.context.span_id == produced_in.span_id


async def test_published_rows_are_purged_after_retention_and_pending_ones_never(
    database: Database,
) -> None:
    bus = InProcessEventBus()
    published = await produce(database, 5, subject="payments/a")
    options = replace(FAST, retention=timedelta(hours=1))
    async with OutboxRelay(database, bus, options) as relay:
        await until_drained(relay)
        await asyncio.sleep(0.2)  # several purge rounds: nothing is old enough yet
    assert len(await rows(database)) == 5

    [pending] = await produce(database, 1, subject="payments/b")
    later = datetime.now(UTC) + timedelta(hours=2)
    down = ScriptedBus(bus, fail_always=True)
    async with OutboxRelay(database, down, options, clock=lambda: later) as relay:

        async def only_pending_left() -> bool:
            return [row.id for row in await rows(database)] == [pending.id]

        await eventually(only_pending_left, step=tick, what="published rows purged")
        await asyncio.sleep(0.2)  # more rounds: the pending row must survive them
        assert relay.status().consecutive_failures > 0

    assert [row.id for row in await rows(database)] == [pending.id]
    assert await ids_in(bus) == [event.id for event in published]


# --- one relay per database ----------------------------------------------------------------


async def test_of_two_relays_on_one_database_one_publishes_and_the_other_takes_over(
    database: Database, database_url: str, bus: EventBus
) -> None:
    # Two replicas: separate engines, one database, one bus.
    async with Database(database_url) as other:
        first_bus, second_bus = ScriptedBus(bus), ScriptedBus(bus)
        first = OutboxRelay(database, first_bus, FAST)
        second = OutboxRelay(other, second_bus, FAST)
        await first.start()
        try:

            async def first_leads() -> bool:
                return first.status().leader

            await eventually(first_leads, step=tick, what="the first relay leads")
            await second.start()
            # Commits wake only the relay they are told about; telling the follower (or,
            # below, the stopped one) must not matter: the leader polls.
            early = await produce(database, 20, subject="payments/a", relay=second)
            await until_drained(first)
            await asyncio.sleep(0.3)  # several leadership retries of the second relay
            assert leader_of(first, second) == [first]
            assert second_bus.calls == 0

            await first.stop()

            async def second_leads() -> bool:
                return second.status().leader

            await eventually(second_leads, step=tick, what="the second relay takes over")
            late = await produce(other, 20, subject="payments/b", relay=first)
            await until_drained(second)
        finally:
            await first.stop()
            await second.stop()

    assert first_bus.published == [event.id for event in early]
    assert second_bus.published == [event.id for event in late]
    assert await ids_in(bus) == [event.id for event in early + late]


@pytest.mark.postgres
async def test_when_the_leaders_connection_dies_another_relay_takes_over(
    fresh_postgres_url: str,
) -> None:
    await migrate(fresh_postgres_url, [])
    bus = InProcessEventBus()
    async with Database(fresh_postgres_url) as one, Database(fresh_postgres_url) as two:
        async with one.engine.begin() as connection:
            await connection.run_sync(WidgetsBase.metadata.create_all)
        # The first relay, once it lost its lock, waits long enough for the second to win.
        slow_to_retry = replace(FAST, leadership_retry=timedelta(minutes=1))
        first = OutboxRelay(one, bus, slow_to_retry)
        second = OutboxRelay(two, bus, FAST)
        await first.start()
        try:

            async def first_leads() -> bool:
                return first.status().leader

            await eventually(first_leads, step=tick, what="the first relay leads")
            await second.start()
            early = await produce(one, 5, subject="payments/a")
            await until_drained(first)

            # The leader's session ends as if its process had been killed.
            async with two.engine.connect() as connection:
                terminated = await connection.scalar(
                    text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_locks"
                        " WHERE locktype = 'advisory' AND granted"
                        " AND database = (SELECT oid FROM pg_database"
                        " WHERE datname = current_database())"
                    )
                )
            assert terminated == 1

            async def second_leads() -> bool:
                return second.status().leader and not first.status().leader

            await eventually(second_leads, step=tick, what="the second relay takes over")
            late = await produce(one, 5, subject="payments/b")
            await until_drained(second)
        finally:
            await first.stop()
            await second.stop()

    assert await ids_in(bus) == [event.id for event in early + late]


# --- wiring and schema ---------------------------------------------------------------------


async def test_a_service_database_runs_its_relay_between_start_and_stop(
    database_url: str, bus: EventBus
) -> None:
    service_db = ServiceDatabase(database_url, bus=bus, relay_options=FAST)
    await service_db.start()
    try:
        assert service_db.relay is not None
        async with service_db.database.engine.begin() as connection:
            await connection.run_sync(WidgetsBase.metadata.create_all)
        produced = await produce(service_db.database, 3, relay=service_db.relay)
        await until_drained(service_db.relay)
        assert service_db.relay.status().running
    finally:
        await service_db.stop()

    assert not service_db.relay.status().running
    assert await ids_in(bus) == [event.id for event in produced]


async def test_a_service_database_without_a_bus_has_no_relay(database_url: str) -> None:
    service_db = ServiceDatabase(database_url)
    await service_db.start()
    await service_db.stop()

    assert service_db.relay is None


async def test_a_service_context_relays_to_its_bus_unless_told_not_to(
    settings: Settings, tmp_path: Path
) -> None:
    bus = InProcessEventBus()
    context = ServiceContext(
        name="payments",
        settings=settings.model_copy(
            update={"database_url": f"sqlite+aiosqlite:///{tmp_path}/{{service}}.db"}
        ),
        lifecycle=Lifecycle(),
        kv=InMemoryKeyValueStore(),
        bus=bus,
        live=LiveHub(bus),
    )
    relayed, silent = context.database(), context.database(outbox_relay=False)

    assert relayed.relay is not None
    assert silent.relay is None
    for service_db in (relayed, silent):
        await service_db.database.dispose()


async def test_the_outbox_migration_goes_down_and_up_again(database: Database) -> None:
    url = database.url.render_as_string(hide_password=False)

    async def tables() -> set[str]:
        async with database.engine.connect() as connection:
            names = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
        return set(names)

    assert "outbox_events" in await tables()
    await asyncio.to_thread(command.downgrade, alembic_config(url), "runtime_0001")
    assert "outbox_events" not in await tables()
    assert "idempotency_records" in await tables()
    await migrate(url, [])
    assert "outbox_events" in await tables()


# --- metrics --------------------------------------------------------------------------------


async def test_the_backlog_and_publications_are_measured(database: Database) -> None:
    recorded = RecordedMetrics()
    metrics = OutboxMetrics("widgets", recorded.provider)
    labels = {"gatehouse.database": "widgets"}
    measuring = replace(FAST, measure_interval=timedelta(milliseconds=20))
    await produce(database, 3)
    later = datetime.now(UTC) + timedelta(minutes=1)
    broken = ScriptedBus(InProcessEventBus(), fail_always=True)
    # The bus is down: the leader sees three events waiting, the oldest a minute old by its
    # clock.
    async with OutboxRelay(database, broken, measuring, clock=lambda: later, metrics=metrics):

        async def backlog_seen() -> bool:
            return recorded.value("gatehouse.outbox.pending", labels) == 3

        await eventually(backlog_seen, step=lambda: asyncio.sleep(0.02), what="a backlog of 3")
        age = recorded.value("gatehouse.outbox.oldest_pending_age", labels)
        assert age is not None
        assert age >= 59
    # A relay that is not the leader reports nothing rather than a stale figure.
    assert recorded.points("gatehouse.outbox.pending") == []
    async with OutboxRelay(database, InProcessEventBus(), measuring, metrics=metrics):

        async def drained() -> bool:
            return recorded.value("gatehouse.outbox.pending", labels) == 0

        await eventually(drained, step=lambda: asyncio.sleep(0.02), what="an empty backlog")
    assert recorded.value("gatehouse.outbox.published", labels) == 3
