"""The event backbone end to end: outbox -> relay -> Redis Streams -> consumer, and live.

Real parts only. Producer tasks commit a door's new version and its `door.opened` event in
one unit of work (the outbox) on a real database (SQLite file, PostgreSQL); an `OutboxRelay`
publishes to a redis-server of the test's own (append-only file, fsync on every write, so a
SIGKILL loses nothing Redis acknowledged; the shared Redis on 6379 is never restarted); a
`ConsumerRunner` applies each event to a door view in the consumer's own database (a second
SQLite file, or the same PostgreSQL database); `LiveHub` subscribers on the same Redis watch
the stream. Every part has its own Redis connection (pool), as separate processes would.

Counted, never assumed: producers keep a ledger of what they committed, handlers write an
effect row per application that commits (no unique key, so a second application would show
as a second row), the stream is read back entry by entry, subscribers keep every position
they were handed. `Chain.verify` checks the same ledger after every scenario:

- N committed = N outbox rows, all marked published;
- every committed event is on the stream, first occurrences in commit order per door (a
  stream may hold an event twice: at least once);
- N effect rows for N distinct events (each applied exactly once), N processed markers, the
  view at each door's last version; nothing pending in the group, no dead letters;
- each live subscriber was handed exactly the stream's entries, in order: no gap, no
  duplicate position.

Faults: Redis SIGKILLed and restarted while producers commit; the relay cancelled between a
publish and its mark, a new relay taking over; a consumer cancelled inside a handler, another
claiming its pending events. Waits are `eventually(...)` with deadlines of tens of seconds;
nothing asserts how fast. Every task, runner, relay, hub, connection and database a test
starts is stopped by the `chain` fixture, whatever happens.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import NamedTuple

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, func, insert, select, update

from gatehouse.access.v1.events_pb2 import DoorOpened
from gatehouse.events.v1.envelope_pb2 import Event
from gatehouse.runtime.bus import EventBus, RedisStreamsEventBus
from gatehouse.runtime.consumers import (
    Consumer,
    ConsumerRunner,
    ProcessedEventRow,
    RunnerOptions,
)
from gatehouse.runtime.db import Database, SqlAlchemyUnitOfWork, migrate, sqlite_url
from gatehouse.runtime.events import new_event, stream_for
from gatehouse.runtime.live import LiveHub, LiveHubOptions, LiveItem, Subscription
from gatehouse.runtime.outbox import OutboxEventRow, OutboxRelay, OutboxUnitOfWork, RelayOptions
from gatehouse.runtime.redis_connection import RedisConnection, RedisOptions
from tests.contracts.timing import eventually
from tests.support.redis_server import PrivateRedis, private_redis_fixture  # noqa: F401

# Several patient waits in a row on a loaded 2-core machine: above the suite's 120 s default.
pytestmark = [pytest.mark.redis, pytest.mark.timeout(360)]

DOOR_OPENED = "door.opened"
STREAM = stream_for(DOOR_OPENED)
GROUP = "door-view"
DOORS = tuple(f"buildings/b1/doors/d{n}" for n in range(8))
# Each producer task owns DOORS[n::PRODUCER_TASKS]: writes to one door are serialised, which
# is what per-aggregate order needs (outbox module doc).
PRODUCER_TASKS = 4
# Between two commits of one producer task: a steady flow of a few hundred events per
# second, so every fault lands while events are committed, relayed, handled and watched.
PACE = timedelta(milliseconds=10)
PATIENCE = timedelta(seconds=60)

# Short waits and backoffs so the tests are quick; correctness never depends on them.
REDIS = RedisOptions(
    key_prefix="gatehouse-e2e:",
    socket_timeout=timedelta(seconds=2),
    connect_timeout=timedelta(seconds=1),
    retries=1,
    backoff_cap=timedelta(milliseconds=200),
)
RELAY = RelayOptions(
    poll_interval=timedelta(milliseconds=50),
    backoff_base=timedelta(milliseconds=20),
    backoff_cap=timedelta(milliseconds=500),
    leadership_retry=timedelta(milliseconds=100),
    stop_timeout=timedelta(seconds=5),
)
RUNNER = RunnerOptions(
    batch_size=50,
    block=timedelta(milliseconds=200),
    claim_interval=timedelta(milliseconds=300),
    # Far above a healthy batch here, so only dead consumers' events are claimed; replies
    # lost in a Redis crash leave events pending to live consumers too, claimed after this.
    claim_min_idle=timedelta(seconds=3),
    reconnect_first_backoff=timedelta(milliseconds=50),
    reconnect_max_backoff=timedelta(milliseconds=500),
)
LIVE = LiveHubOptions(
    read_block=timedelta(milliseconds=500),
    retry_min=timedelta(milliseconds=50),
    retry_max=timedelta(milliseconds=500),
)


# --- the producer's state and the consumer's view ------------------------------------------

producer_metadata = MetaData()
doors = Table(
    "e2e_doors",
    producer_metadata,
    Column("name", String(128), primary_key=True),
    Column("version", Integer, nullable=False),
)

consumer_metadata = MetaData()
door_effects = Table(
    "e2e_door_effects",
    consumer_metadata,
    # Deliberately no unique key: a second application of an event would be a second row.
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(26), nullable=False),
    Column("door", String(128), nullable=False),
    Column("version", Integer, nullable=False),
    Column("replica", String(32), nullable=False),
)
door_view = Table(
    "e2e_door_view",
    consumer_metadata,
    Column("door", String(128), primary_key=True),
    Column("version", Integer, nullable=False),
)


class DoorsUnitOfWork(OutboxUnitOfWork):
    """The producing service's unit of work: its door table plus the runtime's outbox."""

    async def open_door(self, door: str) -> int:
        """Bump the door's version; the UPDATE holds the row until commit (PostgreSQL)."""
        result = await self.session.execute(
            update(doors)
            .where(doors.c.name == door)
            .values(version=doors.c.version + 1)
            .returning(doors.c.version)
        )
        return int(result.scalar_one())


class DoorViewUnitOfWork(SqlAlchemyUnitOfWork):
    """The consuming service's unit of work: an effect log and a per-door view."""

    async def apply(self, event_id: str, door: str, version: int, replica: str) -> None:
        await self.session.execute(
            insert(door_effects).values(
                event_id=event_id, door=door, version=version, replica=replica
            )
        )
        # Forward only: an event claimed after later ones of its door must not roll back.
        await self.session.execute(
            update(door_view)
            .where(door_view.c.door == door, door_view.c.version < version)
            .values(version=version)
        )


def door_opened(door: str, version: int) -> Event:
    # The access-log entry is numbered per door: the consumer reads the version from it.
    data = DoorOpened(door=door, reason="badge", access_log_entry=f"{door}/accessLog/{version}")
    return new_event(DOOR_OPENED, source="access", subject=door, data=data)


def version_of(payload: DoorOpened) -> int:
    return int(payload.access_log_entry.rsplit("/", 1)[1])


Hook = Callable[[Event], Awaitable[None]]


def door_view_consumer(
    database: Database, replica: str, hook: Hook | None = None
) -> Consumer[DoorViewUnitOfWork]:
    consumer = Consumer(GROUP, lambda: DoorViewUnitOfWork(database.sessionmaker))

    @consumer.handles(DOOR_OPENED, DoorOpened)
    async def on_door_opened(event: Event, payload: DoorOpened, uow: DoorViewUnitOfWork) -> None:
        await uow.apply(event.id, payload.door, version_of(payload), replica)
        if hook is not None:
            await hook(event)

    return consumer


# --- the moving parts ----------------------------------------------------------------------


class RelaySwitch:
    """What producers notify after a commit: whichever relay runs now."""

    def __init__(self) -> None:
        self.relay: OutboxRelay | None = None

    def notify(self) -> None:
        if self.relay is not None:
            self.relay.notify()


class Producers:
    """Producer tasks committing door openings until stopped, and the ledger of what committed."""

    def __init__(self, database: Database, relay: RelaySwitch) -> None:
        self._database = database
        self._relay = relay
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        # Per door, the event ids in commit order (= version order).
        self.by_door: dict[str, list[str]] = {door: [] for door in DOORS}
        self.failures: list[BaseException] = []

    @property
    def committed(self) -> int:
        return sum(len(ids) for ids in self.by_door.values())

    def start(self) -> None:
        for n in range(PRODUCER_TASKS):
            self._tasks.append(
                asyncio.create_task(self._produce(DOORS[n::PRODUCER_TASKS]), name=f"producer {n}")
            )

    async def _produce(self, mine: Sequence[str]) -> None:
        uow = DoorsUnitOfWork(self._database.sessionmaker, relay=self._relay)
        turn = 0
        while not self._stopping.is_set():
            door = mine[turn % len(mine)]
            turn += 1
            try:
                async with uow:
                    version = await uow.open_door(door)
                    event = door_opened(door, version)
                    await uow.outbox.add(event)
                    await uow.commit()
            except Exception as error:
                # Producers only talk to their database; any failure is a finding.
                self.failures.append(error)
                return
            self.by_door[door].append(event.id)
            await asyncio.sleep(PACE.total_seconds())

    async def stop(self) -> None:
        self._stopping.set()
        if self._tasks:
            _, late = await asyncio.wait(self._tasks, timeout=PATIENCE.total_seconds())
            for task in late:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)


class Watcher:
    """A live subscriber, as a streaming RPC handler is one: keeps every item handed to it."""

    def __init__(self, subscription: Subscription) -> None:
        self.subscription = subscription
        self.items: list[LiveItem] = []
        self.error: BaseException | None = None
        self._task = asyncio.create_task(self._follow(), name="live watcher")

    async def _follow(self) -> None:
        try:
            async for message in self.subscription:
                if isinstance(message, LiveItem):
                    self.items.append(message)
        except Exception as error:
            self.error = error

    @property
    def positions(self) -> list[str]:
        return [item.position for item in self.items]

    async def close(self) -> None:
        """The client goes away (its connection dropped): the subscription ends."""
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self.subscription.aclose()


class CrashingBus:
    """The relay's bus, hanging for good right after its `crash_after`-th publish went through:
    the relay never hears back, as if its process died between a publish and the mark."""

    def __init__(self, inner: EventBus, crash_after: int) -> None:
        self._inner = inner
        self._crash_after = crash_after
        self.published: list[str] = []
        self.crashed = asyncio.Event()

    async def publish(self, stream: str, event: Event) -> str:
        position = await self._inner.publish(stream, event)
        self.published.append(event.id)
        if len(self.published) == self._crash_after:
            self.crashed.set()
            await asyncio.Event().wait()  # until the relay's task is cancelled
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


class Effect(NamedTuple):
    event_id: str
    door: str
    version: int
    replica: str


@dataclass(frozen=True)
class Ledger:
    """What `verify` read back: the stream entry by entry, and every effect in commit order."""

    entries: list[tuple[str, Event]]
    effects: list[Effect]

    def duplicated(self) -> Counter[str]:
        """Event ids on the stream more than once, with how many times."""
        counts = Counter(event.id for _, event in self.entries)
        return Counter({event_id: n for event_id, n in counts.items() if n > 1})


class Chain:
    """Producer database, private Redis, consumer database, and every part started on them."""

    def __init__(self, producer_url: str, consumer_url: str, redis: PrivateRedis) -> None:
        self.redis = redis
        self._producer_url = producer_url
        self._consumer_url = consumer_url
        self._databases: list[Database] = []
        self._connections: list[RedisConnection] = []
        self._relays: list[OutboxRelay] = []
        self._runners: list[ConsumerRunner[DoorViewUnitOfWork]] = []
        self._hubs: list[LiveHub] = []
        self._watchers: list[Watcher] = []
        self.producer_db = self._database(producer_url)
        self.consumer_db = self._database(consumer_url)
        self.switch = RelaySwitch()
        self.producers = Producers(self.producer_db, self.switch)
        # The test's own view of Redis, for reading the stream and the group back.
        self.observer_connection = self._connect()
        self.observer = RedisStreamsEventBus(self.observer_connection)

    # -- building -----------------------------------------------------------------------

    def _database(self, url: str) -> Database:
        database = Database(url)
        self._databases.append(database)
        return database

    def _connect(self) -> RedisConnection:
        connection = RedisConnection.from_url(self.redis.url, REDIS)
        self._connections.append(connection)
        return connection

    def bus(self) -> RedisStreamsEventBus:
        """A bus on a connection of its own, as another process would have."""
        return RedisStreamsEventBus(self._connect())

    async def setup(self) -> None:
        for database, metadata in (
            (self.producer_db, producer_metadata),
            (self.consumer_db, consumer_metadata),
        ):
            url = database.url.render_as_string(hide_password=False)
            await migrate(url, [])
            async with database.engine.begin() as connection:
                await connection.run_sync(metadata.create_all)
        async with self.producer_db.engine.begin() as connection:
            await connection.execute(insert(doors), [{"name": d, "version": 0} for d in DOORS])
        async with self.consumer_db.engine.begin() as connection:
            await connection.execute(insert(door_view), [{"door": d, "version": 0} for d in DOORS])

    async def start_relay(
        self, bus: EventBus | None = None, options: RelayOptions = RELAY
    ) -> OutboxRelay:
        """A relay replica: its own engine on the producer's database, its own connection."""
        relay = OutboxRelay(self._database(self._producer_url), bus or self.bus(), options)
        self._relays.append(relay)
        await relay.start()
        self.switch.relay = relay
        return relay

    async def start_consumer(
        self, replica: str, hook: Hook | None = None, options: RunnerOptions = RUNNER
    ) -> ConsumerRunner[DoorViewUnitOfWork]:
        """A consumer replica of the group: its own engine and its own Redis connection."""
        consumer = door_view_consumer(self._database(self._consumer_url), replica, hook)
        runner = ConsumerRunner(self.bus(), consumer, options=options)
        self._runners.append(runner)
        await runner.start()
        return runner

    async def watch(self, resume_after: str | None = None) -> Watcher:
        """A live subscriber on a hub of its own (another replica of a streaming service)."""
        hub = LiveHub(self.bus(), LIVE)
        self._hubs.append(hub)
        await hub.start()
        subscription = await hub.subscribe([STREAM], resume_after=resume_after)
        watcher = Watcher(subscription)
        self._watchers.append(watcher)
        return watcher

    async def close(self) -> None:
        # Upstream first, so nothing downstream is left waiting for work that never comes.
        await self.producers.stop()
        for watcher in self._watchers:
            await watcher.close()
        for hub in self._hubs:
            await hub.stop()
        for runner in self._runners:
            await runner.stop(grace=timedelta(seconds=5))
        for relay in self._relays:
            await relay.stop()
        for connection in self._connections:
            await connection.aclose()
        for database in self._databases:
            await database.dispose()

    # -- reading back ---------------------------------------------------------------------

    async def applied(self) -> int:
        """Distinct events applied by the consumer so far."""
        async with self.consumer_db.engine.connect() as connection:
            found = await connection.scalar(select(func.count(door_effects.c.event_id.distinct())))
        return int(found or 0)

    async def effects(self) -> list[Effect]:
        async with self.consumer_db.engine.connect() as connection:
            result = await connection.execute(
                select(
                    door_effects.c.event_id,
                    door_effects.c.door,
                    door_effects.c.version,
                    door_effects.c.replica,
                ).order_by(door_effects.c.id)
            )
            return [Effect(*row) for row in result.all()]

    async def view(self) -> dict[str, int]:
        async with self.consumer_db.engine.connect() as connection:
            result = await connection.execute(select(door_view.c.door, door_view.c.version))
            return {door: int(version) for door, version in result.all() if version}

    async def markers(self) -> int:
        async with self.consumer_db.engine.connect() as connection:
            found = await connection.scalar(
                select(func.count()).where(ProcessedEventRow.consumer == GROUP)
            )
        return int(found or 0)

    async def outbox(self) -> tuple[int, int]:
        """(rows, rows not yet marked published) in the producer's outbox."""
        async with self.producer_db.engine.connect() as connection:
            row = (
                await connection.execute(
                    select(
                        func.count(),
                        func.count().filter(OutboxEventRow.published_at.is_(None)),
                    ).select_from(OutboxEventRow)
                )
            ).one()
        return int(row[0]), int(row[1])

    async def marked_published(self) -> set[str]:
        async with self.producer_db.engine.connect() as connection:
            result = await connection.execute(
                select(OutboxEventRow.id).where(OutboxEventRow.published_at.is_not(None))
            )
            return set(result.scalars().all())

    async def stream_entries(self) -> list[tuple[str, Event]]:
        entries: list[tuple[str, Event]] = []
        after: str | None = None
        while batch := await self.observer.read(STREAM, after=after, count=1000):
            entries.extend(batch)
            after = batch[-1][0]
        return entries

    async def stream_length(self) -> int:
        return int(await self.observer_connection.client.xlen(self.observer_connection.key(STREAM)))

    async def pending_of(self, consumer_name: str) -> list[str]:
        """Positions pending to one consumer of the group (XPENDING)."""
        pending = await self.observer_connection.client.xpending_range(
            self.observer_connection.key(STREAM),
            GROUP,
            "-",
            "+",
            10_000,
            consumername=consumer_name,
        )
        ids: list[bytes | str | int] = [entry["message_id"] for entry in pending]
        return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]

    # -- waiting and checking -----------------------------------------------------------

    async def until(self, condition: Callable[[], Awaitable[bool]], what: str) -> None:
        await eventually(condition, step=lambda: asyncio.sleep(0.05), what=what, patience=PATIENCE)

    async def until_committed(self, count: int) -> None:
        async def enough() -> bool:
            assert self.producers.failures == []
            return self.producers.committed >= count

        await self.until(enough, f"{count} events committed")

    async def settle(self, watchers: Sequence[Watcher]) -> None:
        """Wait until everything committed went all the way through."""
        committed = self.producers.committed
        seen: dict[str, object] = {}

        async def through() -> bool:
            seen["outbox (rows, unpublished)"] = await self.outbox()
            seen["applied"] = await self.applied()
            seen["pending in the group"] = await self.observer.pending_count(STREAM, GROUP)
            latest = await self.observer.latest_position(STREAM)
            seen["stream at"] = latest
            seen["watchers at"] = [w.items[-1].position if w.items else None for w in watchers]
            seen["watcher errors"] = [repr(w.error) for w in watchers if w.error is not None]
            return (
                seen["outbox (rows, unpublished)"] == (committed, 0)
                and seen["applied"] == committed
                and seen["pending in the group"] == 0
                and all(w.items and w.items[-1].position == latest for w in watchers)
            )

        try:
            await eventually(
                through,
                step=lambda: asyncio.sleep(0.2),
                what=f"all {committed} committed events through the chain",
                patience=PATIENCE,
            )
        except AssertionError as error:
            raise AssertionError(f"{error}; last seen: {seen}") from None

    async def verify(self, watchers: Sequence[Watcher] = ()) -> Ledger:
        """The end-to-end count (module doc). Call after `producers.stop()` and `settle()`."""
        assert self.producers.failures == []
        produced = {door: ids for door, ids in self.producers.by_door.items() if ids}
        committed = self.producers.committed
        everything = {event_id for ids in produced.values() for event_id in ids}
        assert len(everything) == committed

        # Outbox: one row per committed event, every one marked published.
        assert await self.outbox() == (committed, 0)

        # Stream: every event, first occurrences in commit order per door.
        entries = await self.stream_entries()
        firsts: dict[str, list[str]] = {}
        seen: set[str] = set()
        for _, event in entries:
            if event.id not in seen:
                seen.add(event.id)
                firsts.setdefault(event.subject, []).append(event.id)
        assert seen == everything
        assert firsts == produced

        # Consumer: each event applied exactly once; the view at each door's last version.
        effects = await self.effects()
        assert len(effects) == committed
        assert {effect.event_id for effect in effects} == everything
        assert await self.markers() == committed
        assert await self.view() == {door: len(ids) for door, ids in produced.items()}
        assert await self.observer.pending_count(STREAM, GROUP) == 0
        assert await self.observer.dead_letter_streams() == []

        # Live: each subscriber was handed the stream itself, entry by entry.
        positions = [position for position, _ in entries]
        for watcher in watchers:
            assert watcher.error is None
            assert watcher.positions == positions
        return Ledger(entries, effects)


@pytest.fixture
async def chain(
    database_url: str, tmp_path: Path, private_redis: PrivateRedis
) -> AsyncIterator[Chain]:
    if database_url.startswith("sqlite"):
        consumer_url = sqlite_url(tmp_path / "consumer" / "door-view.db")
    else:
        # Other tables in the same database; the consumer's processed_events are its own.
        consumer_url = database_url
    chain = Chain(database_url, consumer_url, private_redis)
    try:
        await chain.setup()
        yield chain
    finally:
        await chain.close()


# --- the whole chain -----------------------------------------------------------------------


async def test_every_event_committed_is_handled_once_in_order_and_seen_live(
    chain: Chain,
) -> None:
    watcher = await chain.watch()
    await chain.start_relay()
    # A claim reorders: a batch slower than half of `claim_min_idle` leaves its rest to be
    # claimed after later events (which a loaded machine can cause with the short setting).
    # With the production setting nothing here is ever claimed.
    await chain.start_consumer("only", options=replace(RUNNER, claim_min_idle=timedelta(minutes=1)))
    chain.producers.start()
    await chain.until_committed(400)
    await chain.producers.stop()
    await chain.settle([watcher])

    ledger = await chain.verify([watcher])
    # Without faults the stream holds every event once, and one consumer reading it in
    # order, claiming nothing, applies each door's events in commit order.
    assert ledger.duplicated() == Counter()
    applied: dict[str, list[str]] = {}
    for effect in ledger.effects:
        applied.setdefault(effect.door, []).append(effect.event_id)
    assert applied == {door: ids for door, ids in chain.producers.by_door.items() if ids}


async def test_redis_killed_mid_run_loses_nothing_and_applies_nothing_twice(
    chain: Chain,
) -> None:
    steady = await chain.watch()
    # A client that goes away as Redis dies and comes back after, to another replica, with
    # the last event id it got (`steady` rides the outage out on its hub instead).
    dropping = await chain.watch()
    relay = await chain.start_relay()
    await chain.start_consumer("first")
    await chain.start_consumer("second")
    chain.producers.start()

    async def flowing() -> bool:
        return await chain.applied() >= 50 and len(dropping.items) >= 50

    await chain.until_committed(150)
    await chain.until(flowing, "events applied and watched before the crash")

    await dropping.close()
    assert dropping.items
    last_seen = dropping.items[-1].event.id
    await chain.redis.kill()
    committed_at_kill = chain.producers.committed

    async def relay_feels_it() -> bool:
        return relay.status().consecutive_failures > 0

    # Producers only need their database: they keep committing while Redis is down.
    await chain.until_committed(committed_at_kill + 100)
    await chain.until(relay_feels_it, "the relay failing to publish")
    committed_while_down = chain.producers.committed - committed_at_kill

    await chain.redis.start()
    resumed = await chain.watch(resume_after=last_seen)
    await chain.until_committed(chain.producers.committed + 150)
    await chain.producers.stop()
    await chain.settle([steady, resumed])

    ledger = await chain.verify([steady])
    assert committed_while_down >= 100
    assert relay.status().last_error is not None
    # Resumed from its last event id on another hub: the two parts are the stream, exactly.
    assert dropping.positions + resumed.positions == [position for position, _ in ledger.entries]
    assert resumed.error is None


async def test_a_crashed_relay_s_duplicates_are_absorbed_by_the_consumer(
    chain: Chain,
) -> None:
    watcher = await chain.watch()
    await chain.start_consumer("only")
    chain.producers.start()
    # A backlog of more than two full batches: the first relay publishes and marks one
    # batch, then dies half way through the next.
    batch = RELAY.batch_size
    await chain.until_committed(2 * batch + 50)
    crashing = CrashingBus(chain.bus(), crash_after=batch + batch // 2)
    doomed = await chain.start_relay(crashing, replace(RELAY, stop_timeout=timedelta(0)))
    await asyncio.wait_for(crashing.crashed.wait(), PATIENCE.total_seconds())

    # Published but never marked: what the next relay publishes again.
    marked = await chain.marked_published()
    unmarked = {event_id for event_id in crashing.published if event_id not in marked}
    await doomed.stop()  # no grace: its task is cancelled mid-publish
    assert not doomed.status().running
    assert len(marked) == batch
    assert len(unmarked) == batch // 2

    successor = await chain.start_relay()
    await chain.until_committed(chain.producers.committed + 150)
    await chain.producers.stop()
    await chain.settle([watcher])

    ledger = await chain.verify([watcher])
    # Exactly the unmarked ones went out twice; the marked ones were not published again.
    assert ledger.duplicated() == Counter(dict.fromkeys(unmarked, 2))
    assert successor.status().published == chain.producers.committed - batch


async def test_a_consumer_killed_mid_handler_has_its_events_claimed_by_another(
    chain: Chain,
) -> None:
    watcher = await chain.watch()
    await chain.start_relay()
    chain.producers.start()
    # A backlog on the stream, so the victim's first read takes a full batch.
    await chain.until_committed(RUNNER.batch_size + 50)

    async def backlog() -> bool:
        return await chain.stream_length() >= RUNNER.batch_size

    await chain.until(backlog, "a batch's worth of events on the stream")
    inside = asyncio.Event()
    held: list[Event] = []

    async def hang_on_the_tenth(event: Event) -> None:
        held.append(event)
        if len(held) == 10:
            inside.set()
            await asyncio.Event().wait()  # until the runner is cancelled

    # Patient, so that however slow the machine, it never leaves part of its batch early.
    patient = replace(RUNNER, claim_min_idle=timedelta(minutes=1))
    victim = await chain.start_consumer("victim", hang_on_the_tenth, patient)
    await asyncio.wait_for(inside.wait(), PATIENCE.total_seconds())

    # Killed inside the handler: its transaction rolls back, the rest of its batch was never
    # started; all of it stays pending to the dead consumer (the nine it committed are acked
    # on the way out).
    await victim.stop(grace=timedelta(0))
    orphans = set(await chain.pending_of(victim.name))
    assert len(orphans) == RUNNER.batch_size - 9
    # Only now another replica, so nobody could have claimed anything from a live victim.
    await chain.start_consumer("rescuer")

    await chain.until_committed(chain.producers.committed + 150)
    await chain.producers.stop()
    await chain.settle([watcher])

    ledger = await chain.verify([watcher])
    orphaned = {event.id for position, event in ledger.entries if position in orphans}
    assert held[-1].id in orphaned
    # Each orphan was applied once (verify), by the consumer that claimed it.
    assert {e.replica for e in ledger.effects if e.event_id in orphaned} == {"rescuer"}
    assert {e.event_id for e in ledger.effects if e.replica == "victim"} == {
        event.id for event in held[:9]
    }
    assert await chain.pending_of(victim.name) == []
