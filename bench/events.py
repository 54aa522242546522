"""Event backbone: throughput, live fan-out and memory, as ratios to baselines from one run.

    .venv/bin/python -m bench.events [--events 1000] [--subscribers 100] [--memory-events 100000]

Against the shared Redis (`--redis-url`, default 127.0.0.1:6379) under a random key prefix,
deleted at the end; PostgreSQL is used if it answers (`--postgres-url`, or the local server as
`postgres`/`root`), in a throwaway database dropped at the end. Three measurements:

a) outbox -> relay -> Redis -> consumer, events/s. Per database (SQLite files in a temporary
   directory; PostgreSQL if reachable): each stage alone from a backlog (producers committing
   a state change plus its event per unit of work; the relay publishing the backlog; a
   consumer handling it, one effect row plus its processed-event marker per transaction),
   then all of it at once, with commit -> handled latency. Baseline: raw redis-py XADD one at
   a time + XREADGROUP COUNT 100 + XACK of the same serialized envelope, in the same process,
   measured before and after the rest (ratios against the mean of the two).
b) live fan-out: a `LiveHub` in a server process with 100 subscribers on one stream, another
   process publishing. Deliveries/s in total for a burst put on the stream while the server's
   event loop is held (timed from the release, so the publisher's speed does not count), and
   p50/p99 delivery latency (envelope time, set right before the publish -> the subscriber
   taking it) for events published one at a time at a paced rate. Baseline: one bare
   subscriber (an XREAD BLOCK loop decoding envelopes, no hub); the hub with one subscriber is
   shown as well.
c) memory: the server process (fresh per run) while 100k events flow past one reading
   subscriber, with and without one stalled subscriber (never reads). Peak RSS (VmHWM) and
   RSS sampled at each quarter of the flow; the stalled one must end with
   RESOURCE_EXHAUSTED once its buffer is full, and memory must stay flat.

Everything in one process competes for one core (the machine has two; the server side runs on
CPU 0, the publisher/orchestrator on CPU 1, Redis and PostgreSQL wherever the kernel puts
them). Absolute numbers move 10-20% between runs here; the ratios are the result.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import multiprocessing
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import Column, Integer, MetaData, String, Table, insert, make_url, text, update
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from gatehouse.access.v1.events_pb2 import DoorOpened
from gatehouse.events.v1.envelope_pb2 import Event
from gatehouse.runtime.bus import MaxLenPolicy, RedisStreamsEventBus
from gatehouse.runtime.consumers import Consumer, ConsumerRunner, RunnerOptions
from gatehouse.runtime.db import Database, SqlAlchemyUnitOfWork, migrate, sqlite_url
from gatehouse.runtime.errors import ResourceExhausted
from gatehouse.runtime.events import new_event, stream_for
from gatehouse.runtime.live import LiveHub, LiveHubOptions, LiveItem, Subscription
from gatehouse.runtime.outbox import OutboxRelay, OutboxUnitOfWork
from gatehouse.runtime.redis_connection import RedisConnection, RedisOptions

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
POSTGRES_ADMIN_URLS = (
    "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres",
    "postgresql+asyncpg://root@127.0.0.1:5432/postgres",
)
EVENT_TYPE = "door.opened"
STREAM = stream_for(EVENT_TYPE)
GROUP = "bench-view"
DOORS = 16
PRODUCER_TASKS = 4
SERVER_CPU, CLIENT_CPU = 0, 1
# Each phase waits at most this long; the whole run stays under two minutes at the defaults.
PHASE_TIMEOUT = 40.0
RSS_SAMPLE_SECONDS = 0.05
PIPELINE = 100
# Streams keep their newest 10k events by default; a live reader briefly behind a fast
# publisher must not be trimmed past, or the benchmark would measure resume errors.
BENCH_MAX_LEN = MaxLenPolicy(default=1_000_000)


def make_event(n: int) -> Event:
    door = f"buildings/b1/doors/d{n % DOORS}"
    data = DoorOpened(
        door=door,
        reason="badge",
        device=f"{door}/devices/reader",
        access_log_entry=f"{door}/accessLog/{n}",
    )
    return new_event(EVENT_TYPE, source="access", subject=door, data=data)


def percentile(values: Sequence[float], fraction: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def rss_kib() -> tuple[int, int]:
    """(VmRSS, VmHWM) of this process in KiB."""
    found: dict[str, int] = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            found[name] = int(value.split()[0])
    return found["VmRSS"], found["VmHWM"]


def pin(cpu: int | None) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


async def until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    # In-memory conditions only: polling them costs nothing next to the work measured.
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout:g}s: {what}")
        await asyncio.sleep(0.005)


@dataclass(frozen=True)
class Rate:
    name: str
    count: int
    seconds: float
    p50_ms: float = math.nan
    p99_ms: float = math.nan

    @property
    def per_second(self) -> float:
        return self.count / self.seconds


# --- a) outbox -> relay -> Redis -> consumer ------------------------------------------------


async def raw_redis_baseline(url: str, prefix: str, count: int, payload: bytes) -> Rate:
    """XADD one at a time (as the relay publishes) while a reader XREADGROUPs and XACKs."""
    client = Redis.from_url(url)
    key = f"{prefix}raw"
    try:
        await client.xgroup_create(key, "raw", id="0", mkstream=True)

        async def produce() -> None:
            for _ in range(count):
                await client.xadd(key, {b"e": payload})

        async def consume() -> None:
            handled = 0
            while handled < count:
                reply: Any = await client.xreadgroup("raw", "c1", {key: ">"}, count=100, block=1000)
                for _key, entries in reply or ():
                    ids = [entry_id for entry_id, _fields in entries]
                    await client.xack(key, "raw", *ids)
                    handled += len(ids)

        began = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(produce(), consume()), PHASE_TIMEOUT)
        return Rate("raw XADD+XREADGROUP/XACK", count, time.perf_counter() - began)
    finally:
        await client.delete(key)
        await client.aclose()


metadata = MetaData()
doors = Table(
    "bench_doors",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("version", Integer, nullable=False),
)
effects = Table(
    "bench_effects",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(26), nullable=False),
)


class DoorsUnitOfWork(OutboxUnitOfWork):
    async def open_door(self, door: str) -> int:
        result = await self.session.execute(
            update(doors)
            .where(doors.c.name == door)
            .values(version=doors.c.version + 1)
            .returning(doors.c.version)
        )
        return int(result.scalar_one())


@dataclass
class Handled:
    """Commit times of the consumer's transactions, by event id."""

    at: dict[str, float] = field(default_factory=dict)


class EffectsUnitOfWork(SqlAlchemyUnitOfWork):
    """The consumer's unit of work; records when each handled event's transaction committed."""

    def __init__(self, database: Database, handled: Handled) -> None:
        super().__init__(database.sessionmaker)
        self._handled = handled
        self.event_id = ""

    async def commit(self) -> None:
        await super().commit()
        if self.event_id:
            self._handled.at[self.event_id] = time.perf_counter()


def effects_consumer(database: Database, handled: Handled) -> Consumer[EffectsUnitOfWork]:
    consumer = Consumer(GROUP, lambda: EffectsUnitOfWork(database, handled))

    @consumer.handles(EVENT_TYPE, DoorOpened)
    async def on_door_opened(event: Event, _payload: DoorOpened, uow: EffectsUnitOfWork) -> None:
        await uow.session.execute(insert(effects).values(event_id=event.id))
        uow.event_id = event.id

    return consumer


async def produce(
    database: Database, relay: OutboxRelay | None, count: int, committed: dict[str, float]
) -> None:
    """`count` units of work over PRODUCER_TASKS tasks, each owning some doors."""

    async def worker(task: int) -> None:
        uow = DoorsUnitOfWork(database.sessionmaker, relay=relay)
        for n in range(task, count, PRODUCER_TASKS):
            door = f"buildings/b1/doors/d{n % DOORS}"
            async with uow:
                await uow.open_door(door)
                event = make_event(n)
                await uow.outbox.add(event)
                await uow.commit()
            committed[event.id] = time.perf_counter()

    await asyncio.gather(*(worker(task) for task in range(PRODUCER_TASKS)))


async def prepare(database: Database) -> None:
    await migrate(database.url.render_as_string(hide_password=False), [])
    async with database.engine.begin() as connection:
        await connection.run_sync(metadata.create_all)
        await connection.execute(
            insert(doors),
            [{"name": f"buildings/b1/doors/d{n}", "version": 0} for n in range(DOORS)],
        )


async def outbox_pipeline(
    label: str, producer_url: str, consumer_url: str, redis_url: str, prefix: str, count: int
) -> list[Rate]:
    """Each stage alone from a backlog, then the whole chain with producers committing."""
    options = RedisOptions(key_prefix=f"{prefix}{label}:")
    producer_db, consumer_db = Database(producer_url), Database(consumer_url)
    relay_connection = RedisConnection.from_url(redis_url, options)
    consumer_connection = RedisConnection.from_url(redis_url, options)
    relay: OutboxRelay | None = None
    runner: ConsumerRunner[EffectsUnitOfWork] | None = None
    try:
        await prepare(producer_db)
        if consumer_url != producer_url:
            await migrate(consumer_url, [])
            async with consumer_db.engine.begin() as connection:
                await connection.run_sync(metadata.create_all)
        relay = OutboxRelay(producer_db, RedisStreamsEventBus(relay_connection, BENCH_MAX_LEN))
        handled = Handled()
        runner = ConsumerRunner(
            RedisStreamsEventBus(consumer_connection, BENCH_MAX_LEN),
            effects_consumer(consumer_db, handled),
            options=RunnerOptions(block=timedelta(milliseconds=500)),
        )
        rates: list[Rate] = []

        committed: dict[str, float] = {}
        began = time.perf_counter()
        await asyncio.wait_for(produce(producer_db, None, count, committed), PHASE_TIMEOUT)
        rates.append(Rate(f"{label}: commit (state + outbox row)", count, _since(began)))

        began = time.perf_counter()
        await relay.start()
        await until(
            lambda: relay is not None and relay.status().published >= count, PHASE_TIMEOUT, "relay"
        )
        rates.append(Rate(f"{label}: relay backlog -> Redis", count, _since(began)))

        began = time.perf_counter()
        await runner.start()
        await until(lambda: len(handled.at) >= count, PHASE_TIMEOUT, "consumer")
        rates.append(Rate(f"{label}: consumer backlog", count, _since(began)))

        # The whole chain: producers notify the running relay; the consumer waits in its read.
        handled.at.clear()
        committed.clear()
        began = time.perf_counter()
        await asyncio.wait_for(produce(producer_db, relay, count, committed), PHASE_TIMEOUT)
        await until(lambda: len(handled.at) >= count, PHASE_TIMEOUT, "end to end")
        latencies = [(handled.at[i] - committed[i]) * 1000 for i in committed if i in handled.at]
        rates.append(
            Rate(
                f"{label}: end to end",
                count,
                _since(began),
                percentile(latencies, 0.50),
                percentile(latencies, 0.99),
            )
        )
        return rates
    finally:
        if runner is not None:
            await runner.stop()
        if relay is not None:
            await relay.stop()
        await relay_connection.aclose()
        await consumer_connection.aclose()
        await producer_db.dispose()
        await consumer_db.dispose()


def _since(began: float) -> float:
    return time.perf_counter() - began


async def _admin_execute(url: str, *statements: str) -> None:
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        async with asyncio.timeout(5), engine.connect() as connection:
            for statement in statements:
                await connection.execute(text(statement))
    finally:
        await engine.dispose()


async def reachable_postgres(configured: str | None) -> str | None:
    for candidate in (configured,) if configured else POSTGRES_ADMIN_URLS:
        try:
            await _admin_execute(candidate, "SELECT 1")
        except Exception:  # noqa: S112 - any failure means "try the next one"
            continue
        return candidate
    return None


# --- b) and c): the live server process -------------------------------------------------------


@dataclass(frozen=True)
class LiveRun:
    """One server process's job. `bare`: XREAD loops instead of a hub."""

    name: str
    redis_url: str
    key_prefix: str
    stream: str
    subscribers: int
    burst: int
    paced: int
    bare: bool = False
    stalled: int = 0
    buffer_size: int = 1000
    sample_rss: bool = False
    # Hold the server while the burst is published, then time it from the release: the
    # server side alone is measured, whatever the publisher's speed.
    hold: bool = False
    # Set by the parent, which knows the CPUs before it pinned itself (a child inherits that).
    cpu: int | None = None


@dataclass
class Tally:
    """One subscriber's view: counts, when the burst's last event arrived, paced latencies."""

    burst: int
    count: int = 0
    first_sent: float = math.inf
    burst_done_at: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)

    def take(self, event: Event) -> None:
        now = time.time()
        sent = event.time.seconds + event.time.nanos / 1e9
        if self.count < self.burst:
            self.first_sent = min(self.first_sent, sent)
            if self.count == self.burst - 1:
                self.burst_done_at = now
        else:
            self.latencies_ms.append((now - sent) * 1000)
        self.count += 1


@dataclass
class LiveResult:
    name: str
    subscribers: int
    deliveries: int = 0
    burst_seconds: float = math.nan
    latencies_ms: list[float] = field(default_factory=list)
    rss_start_kib: int = 0
    rss_quarters_kib: list[int] = field(default_factory=list)
    rss_peak_kib: int = 0
    hwm_kib: int = 0
    largest_buffer: int = 0
    stalled_outcome: str = ""

    @property
    def deliveries_per_second(self) -> float:
        return self.deliveries / self.burst_seconds

    @property
    def events_per_second(self) -> float:
        """Burst events per second that reached every subscriber."""
        return self.deliveries / self.subscribers / self.burst_seconds


def live_server(conn: Connection, run: LiveRun) -> None:
    """Entry point of the server process (spawned): subscribe, say ready, report."""
    pin(run.cpu)
    try:
        result = asyncio.run(_serve(conn, run))
    except BaseException as error:
        conn.send(("error", f"{type(error).__name__}: {error}"))
        raise
    conn.send(("done", asdict(result)))


async def _serve(conn: Connection, run: LiveRun) -> LiveResult:
    server = LiveServer(run)
    try:
        await server.subscribe()
        conn.send(("ready", None))
        if run.hold:
            # Blocks the event loop on purpose: no reader runs until the whole burst is on
            # the stream, as if it had arrived in one instant.
            if not conn.poll(PHASE_TIMEOUT):
                raise TimeoutError("no go from the publisher")
            conn.recv()
            server.released_at = time.time()
        await asyncio.wait_for(server.burst_done.wait(), PHASE_TIMEOUT)
        conn.send(("burst", None))
        await asyncio.wait_for(server.all_done.wait(), PHASE_TIMEOUT)
        return await server.result()
    finally:
        await server.close()


class LiveServer:
    """The server side of a live run: subscribers (hub or bare), their tallies, RSS samples."""

    def __init__(self, run: LiveRun) -> None:
        self.run = run
        self.connection = RedisConnection.from_url(
            run.redis_url, RedisOptions(key_prefix=run.key_prefix)
        )
        self.bus = RedisStreamsEventBus(self.connection, BENCH_MAX_LEN)
        self.hub = LiveHub(self.bus, LiveHubOptions(heartbeat_interval=timedelta(minutes=10)))
        self.tallies = [Tally(run.burst) for _ in range(run.subscribers)]
        self.expected = run.burst + run.paced
        self.burst_done, self.all_done = asyncio.Event(), asyncio.Event()
        self._burst_count = self._all_count = 0
        self._stalled: list[Subscription] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._quarters = [self.expected * q // 4 for q in (1, 2, 3, 4)]
        self._result = LiveResult(run.name, run.subscribers)
        self.released_at = 0.0

    async def subscribe(self) -> None:
        run = self.run
        await self.hub.start()
        if run.bare:
            start = await self.bus.latest_position(run.stream)
            followers = [self._follow_bare(tally, start) for tally in self.tallies]
        else:
            subscriptions = [
                await self.hub.subscribe([run.stream], buffer_size=run.buffer_size)
                for _ in self.tallies
            ]
            self._stalled = [await self.hub.subscribe([run.stream]) for _ in range(run.stalled)]
            followers = [
                self._follow_hub(subscription, tally)
                for subscription, tally in zip(subscriptions, self.tallies, strict=True)
            ]
        self._tasks = [asyncio.create_task(follower) for follower in followers]
        self._result.rss_start_kib = rss_kib()[0]
        if run.sample_rss:
            self._tasks.append(asyncio.create_task(self._sample_rss()))

    async def result(self) -> LiveResult:
        result, tallies = self._result, self.tallies
        rss, result.hwm_kib = rss_kib()
        result.rss_peak_kib = max(result.rss_peak_kib, rss)
        if self.run.sample_rss and len(result.rss_quarters_kib) < 4:
            # The sampler's last tick came before the last event: this is the 100% mark.
            result.rss_quarters_kib.append(rss)
        result.deliveries = self.run.burst * self.run.subscribers
        began = self.released_at or min(tally.first_sent for tally in tallies)
        result.burst_seconds = max(tally.burst_done_at for tally in tallies) - began
        result.latencies_ms = [ms for tally in tallies for ms in tally.latencies_ms]
        result.largest_buffer = self.hub.stats().largest_buffer_high_water
        for subscription in self._stalled:
            result.stalled_outcome = await _outcome(subscription)
        return result

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.hub.stop()
        await self.connection.aclose()

    def _note(self, tally: Tally, event: Event) -> None:
        tally.take(event)
        if tally.count == self.run.burst:
            self._burst_count += 1
            if self._burst_count == self.run.subscribers:
                self.burst_done.set()
        if tally.count == self.expected:
            self._all_count += 1
            if self._all_count == self.run.subscribers:
                self.all_done.set()

    async def _follow_hub(self, subscription: Subscription, tally: Tally) -> None:
        async for message in subscription:
            if isinstance(message, LiveItem):
                self._note(tally, message.event)
                if tally.count >= self.expected:
                    return

    async def _follow_bare(self, tally: Tally, after: str) -> None:
        key = self.connection.key(self.run.stream)
        while tally.count < self.expected:
            # RESP2 reply: [[key, [(id, {field: value}), ...]]], or None on timeout.
            reply: Any = await self.connection.client.xread({key: after}, count=500, block=1000)
            for _key, entries in reply or ():
                for entry_id, fields in entries:
                    self._note(tally, Event.FromString(fields[b"e"]))
                    after = entry_id

    async def _sample_rss(self) -> None:
        result, quarters = self._result, self._quarters
        while True:
            rss, _ = rss_kib()
            result.rss_peak_kib = max(result.rss_peak_kib, rss)
            # The reading subscriber's count marks each quarter of the flow.
            while quarters and self.tallies[0].count >= quarters[0]:
                quarters.pop(0)
                result.rss_quarters_kib.append(rss)
            await asyncio.sleep(RSS_SAMPLE_SECONDS)


async def _outcome(subscription: Subscription) -> str:
    """What a subscriber that never read finds when it finally does."""
    try:
        message = await asyncio.wait_for(anext(subscription), 5)
    except ResourceExhausted as error:
        last = error.metadata.get("last_event_id") or "(start)"
        return f"RESOURCE_EXHAUSTED ({error.reason}), may resume after {last}"
    except StopAsyncIteration:
        return "ended"
    return f"still open ({type(message).__name__})"


async def _recv(conn: Connection) -> tuple[str, Any]:
    def wait() -> tuple[str, Any]:
        if not conn.poll(PHASE_TIMEOUT):
            raise TimeoutError(f"server process said nothing for {PHASE_TIMEOUT:g}s")
        message: tuple[str, Any] = conn.recv()
        return message

    kind, payload = await asyncio.to_thread(wait)
    if kind == "error":
        raise RuntimeError(f"server process failed: {payload}")
    return kind, payload


async def publish_burst(connection: RedisConnection, stream: str, count: int) -> None:
    """`count` events in pipelines of `PIPELINE` XADDs (entries exactly as the bus writes them):
    a publisher far faster than one relay, so the server side is what the burst measures."""
    key = connection.key(stream)
    batches = iter(range(0, count, PIPELINE))

    async def worker() -> None:
        for first in batches:
            async with connection.client.pipeline(transaction=False) as pipe:
                for n in range(first, min(first + PIPELINE, count)):
                    pipe.xadd(key, {b"e": make_event(n).SerializeToString()}, id="0-*")
                await pipe.execute()

    # Two in flight: one is built while the other travels.
    await asyncio.gather(worker(), worker())


async def publish_paced(bus: RedisStreamsEventBus, stream: str, count: int, rate: float) -> None:
    """`count` events one `publish` at a time (as the relay does), `rate` per second."""
    began = time.perf_counter()
    for n in range(count):
        delay = began + n / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await bus.publish(stream, make_event(n))


async def live_run(
    run: LiveRun, connection: RedisConnection, rate: float, *, pinned: bool
) -> LiveResult:
    """Start a server process for `run`, publish its burst then its paced events, collect."""
    run = replace(run, cpu=SERVER_CPU if pinned else None)
    bus = RedisStreamsEventBus(connection, BENCH_MAX_LEN)
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    process = context.Process(target=live_server, args=(theirs, run), name=f"live {run.name}")
    process.start()
    try:
        await _expect(ours, "ready")
        await asyncio.wait_for(publish_burst(connection, run.stream, run.burst), PHASE_TIMEOUT)
        if run.hold:
            ours.send(("go", None))
        await _expect(ours, "burst")
        if run.paced:
            await asyncio.wait_for(publish_paced(bus, run.stream, run.paced, rate), PHASE_TIMEOUT)
        _, payload = await _recv(ours)
        return LiveResult(**payload)
    finally:
        await asyncio.to_thread(process.join, 10)
        if process.is_alive():
            process.kill()
            await asyncio.to_thread(process.join)
        # The run's events are not needed again: free Redis' memory now, not at the end.
        await connection.client.delete(connection.key(run.stream))


async def _expect(conn: Connection, kind: str) -> None:
    got, _ = await _recv(conn)
    if got != kind:
        raise RuntimeError(f"server process said {got!r}, expected {kind!r}")


# --- the run ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Args:
    redis_url: str
    postgres_url: str | None
    events: int
    raw_events: int
    subscribers: int
    burst: int
    paced: int
    rate: float
    memory_events: int
    usable_cpus: int
    pinned: bool


async def run(args: Args) -> None:
    prefix = f"gatehouse-bench:{secrets.token_hex(6)}:"
    payload = make_event(0).SerializeToString()
    redis = Redis.from_url(args.redis_url)
    info = await redis.info("server")
    _header(args, prefix, len(payload), str(info.get("redis_version", "?")))
    try:
        await _section_a(args, prefix, payload)
        await _section_b(args, prefix)
        await _section_c(args, prefix)
    finally:
        deleted = 0
        async for key in redis.scan_iter(match=f"{prefix}*", count=1000):
            deleted += int(await redis.unlink(key))
        await redis.aclose()
        print(f"\ncleaned up: {deleted} Redis keys under {prefix}")


def _header(args: Args, prefix: str, payload_size: int, redis_version: str) -> None:
    print("gatehouse event backbone benchmark")
    placement = (
        f"server side on CPU {SERVER_CPU}, publisher and a) on CPU {CLIENT_CPU}"
        if args.pinned
        else "not pinned (one CPU usable)"
    )
    print(
        f"machine: {os.cpu_count()} cores, {args.usable_cpus} usable; Python"
        f" {sys.version.split()[0]}; Redis {redis_version}; {placement}"
    )
    print(
        f"parameters: envelope {payload_size} B ({EVENT_TYPE}); outbox {args.events} events"
        f" x {PRODUCER_TASKS} producer tasks; raw baseline {args.raw_events}; fan-out"
        f" {args.subscribers} subscribers, burst {args.burst}, paced {args.paced} at"
        f" {args.rate:g}/s; memory {args.memory_events} events; bursts published in pipelines"
        f" of {PIPELINE} XADDs; key prefix {prefix}"
    )


async def _section_a(args: Args, prefix: str, payload: bytes) -> None:
    print("\na) outbox -> relay -> Redis -> consumer (one process, one core)")
    # Measured before and after the rest: the machine is shared, and the mean of the two is
    # fairer to every row than whichever moment the baseline happened to hit.
    before = await raw_redis_baseline(args.redis_url, prefix, args.raw_events, payload)
    rates: list[Rate] = []
    with tempfile.TemporaryDirectory(prefix="gatehouse-bench-") as tmp:
        rates += await outbox_pipeline(
            "sqlite",
            sqlite_url(Path(tmp) / "producer.db"),
            sqlite_url(Path(tmp) / "consumer.db"),
            args.redis_url,
            prefix,
            args.events,
        )
    admin = await reachable_postgres(args.postgres_url)
    if admin is None:
        print("   (PostgreSQL not reachable: its rows are skipped)")
    else:
        name = f"gatehouse_bench_{secrets.token_hex(4)}"
        await _admin_execute(admin, f'CREATE DATABASE "{name}"')
        try:
            url = make_url(admin).set(database=name).render_as_string(hide_password=False)
            rates += await outbox_pipeline(
                "postgres", url, url, args.redis_url, prefix, args.events
            )
        finally:
            await _admin_execute(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    after = await raw_redis_baseline(args.redis_url, prefix, args.raw_events, payload)
    baseline = Rate(
        "raw baseline (mean)", before.count + after.count, before.seconds + after.seconds
    )
    rates = [
        replace(before, name=f"{before.name}, before"),
        replace(after, name=f"{after.name}, after"),
        *rates,
    ]
    print(
        f"   {'measurement':<40} {'events':>7} {'events/s':>9} {'x raw':>6}"
        f" {'p50 ms':>7} {'p99 ms':>7}"
    )
    for rate in rates:
        print(
            f"   {rate.name:<40} {rate.count:>7} {rate.per_second:>9.0f}"
            f" {rate.per_second / baseline.per_second:>6.2f} {_ms(rate.p50_ms)} {_ms(rate.p99_ms)}"
        )
    print(
        "   (x raw: against the mean of the two raw runs. End-to-end latency: producer's commit"
        " -> consumer's commit of the same event)"
    )


def _ms(value: float) -> str:
    return f"{'-':>7}" if math.isnan(value) else f"{value:>7.1f}"


async def _section_b(args: Args, prefix: str) -> None:
    print(f"\nb) live fan-out (server process on CPU {SERVER_CPU}, publisher on CPU {CLIENT_CPU})")
    connection = RedisConnection.from_url(args.redis_url, RedisOptions(key_prefix=prefix))
    buffer = args.burst + args.paced + 1
    runs = [
        LiveRun(
            "bare XREAD, 1 subscriber",
            args.redis_url,
            prefix,
            "events.benchbare",
            1,
            args.burst,
            args.paced,
            bare=True,
            hold=True,
        ),
        LiveRun(
            "LiveHub, 1 subscriber",
            args.redis_url,
            prefix,
            "events.benchone",
            1,
            args.burst,
            args.paced,
            buffer_size=buffer,
            hold=True,
        ),
        LiveRun(
            f"LiveHub, {args.subscribers} subscribers",
            args.redis_url,
            prefix,
            "events.benchfan",
            args.subscribers,
            args.burst,
            args.paced,
            buffer_size=buffer,
            hold=True,
        ),
    ]
    try:
        results = [await live_run(r, connection, args.rate, pinned=args.pinned) for r in runs]
    finally:
        await connection.aclose()
    base = results[0]
    print(
        f"   {'mode':<28} {'deliveries/s':>12} {'x bare':>7} {'events/s':>9} {'x bare':>7}"
        f" {'p50 ms':>7} {'p99 ms':>7} {'p50 x':>6} {'p99 x':>6}"
    )
    for result in results:
        p50 = percentile(result.latencies_ms, 0.50)
        p99 = percentile(result.latencies_ms, 0.99)
        print(
            f"   {result.name:<28} {result.deliveries_per_second:>12.0f}"
            f" {result.deliveries_per_second / base.deliveries_per_second:>7.2f}"
            f" {result.events_per_second:>9.0f}"
            f" {result.events_per_second / base.events_per_second:>7.2f}"
            f" {_ms(p50)} {_ms(p99)}"
            f" {p50 / percentile(base.latencies_ms, 0.50):>6.2f}"
            f" {p99 / percentile(base.latencies_ms, 0.99):>6.2f}"
        )
    print(
        f"   (burst of {args.burst}, on the stream before the server is released:"
        " deliveries/s = events x subscribers / release -> last receive; events/s = events"
        " that reached every subscriber per second."
        f" Latency: {args.paced} events published one at a time at {args.rate:g}/s)"
    )


async def _section_c(args: Args, prefix: str) -> None:
    print(f"\nc) server memory while {args.memory_events} events flow (fresh process per run)")
    connection = RedisConnection.from_url(args.redis_url, RedisOptions(key_prefix=prefix))
    runs = [
        LiveRun(
            "1 reading subscriber",
            args.redis_url,
            prefix,
            "events.benchmemplain",
            1,
            args.memory_events,
            0,
            sample_rss=True,
        ),
        LiveRun(
            "+ 1 stalled subscriber",
            args.redis_url,
            prefix,
            "events.benchmemstalled",
            1,
            args.memory_events,
            0,
            stalled=1,
            sample_rss=True,
        ),
    ]
    try:
        results = [await live_run(r, connection, args.rate, pinned=args.pinned) for r in runs]
    finally:
        await connection.aclose()
    base = results[0]
    print(
        f"   {'run':<24} {'start MiB':>9} {'25/50/75/100% MiB':>22} {'peak MiB':>9}"
        f" {'peak x':>7} {'growth MiB':>10} {'max buffer':>10}"
    )
    for result in results:
        quarters = "/".join(f"{kib / 1024:.1f}" for kib in result.rss_quarters_kib)
        growth = (result.hwm_kib - result.rss_start_kib) / 1024
        print(
            f"   {result.name:<24} {result.rss_start_kib / 1024:>9.1f} {quarters:>22}"
            f" {result.hwm_kib / 1024:>9.1f} {result.hwm_kib / base.hwm_kib:>7.2f}"
            f" {growth:>10.1f} {result.largest_buffer:>10}"
        )
    for result in results:
        if result.stalled_outcome:
            print(f"   stalled subscriber: {result.stalled_outcome}")
    print(
        "   (events/s through the reading subscriber: "
        + ", ".join(f"{r.name}: {r.deliveries_per_second:.0f}" for r in results)
        + ")"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    parser.add_argument(
        "--postgres-url",
        help="an admin URL (any database) used to create and drop the benchmark's database;"
        " default: the local server as postgres or root",
    )
    parser.add_argument("--events", type=int, default=1000, help="events per outbox stage")
    parser.add_argument("--raw-events", type=int, default=5000, help="raw Redis baseline")
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--burst", type=int, default=10_000, help="fan-out burst, events")
    parser.add_argument("--paced", type=int, default=500, help="fan-out latency, events")
    parser.add_argument("--rate", type=float, default=200.0, help="paced events per second")
    parser.add_argument("--memory-events", type=int, default=100_000)
    parsed = parser.parse_args()
    args = Args(
        redis_url=parsed.redis_url,
        postgres_url=parsed.postgres_url,
        events=parsed.events,
        raw_events=parsed.raw_events,
        subscribers=parsed.subscribers,
        burst=parsed.burst,
        paced=parsed.paced,
        rate=parsed.rate,
        memory_events=parsed.memory_events,
        usable_cpus=len(os.sched_getaffinity(0)),
        pinned=len(os.sched_getaffinity(0)) >= 2,
    )
    pin(CLIENT_CPU if args.pinned else None)
    began = time.monotonic()
    asyncio.run(run(args))
    print(f"total {time.monotonic() - began:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
