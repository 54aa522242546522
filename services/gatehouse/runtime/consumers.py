"""Event consumers: declared handlers, processed once, retried, dead-lettered, run in groups.

A service declares a `Consumer`: its name (the consumer group on every stream it reads, e.g.
`notifications`) and, per event type, the payload message and an async handler::

    consumer = Consumer("notifications", unit_of_work=lambda: NotificationsUnitOfWork(db))

    @consumer.handles("payment.processed", PaymentProcessed)
    async def send_receipt(event: Event, payment: PaymentProcessed,
                           uow: NotificationsUnitOfWork) -> None:
        await uow.notifications.add(...)   # no commit: the runner commits

The streams follow from the types (`payment.processed` -> `events.payment`). A
`ConsumerRunner` reads them through the bus's consumer groups (ARCHITECTURE §7).

What a handler can rely on:
- *Once with effect.* The handler runs inside a unit of work whose first statement inserts
  `(consumer, event id)` into `processed_events`; the runner commits after the handler
  returns, so the marker and the handler's writes commit together or not at all. An event
  seen again (redelivered, published twice, replayed) hits the primary key and is
  acknowledged without running the handler. On PostgreSQL two consumers racing on the same
  event serialise on that insert (the second waits, then sees the duplicate); SQLite
  transactions are serialised anyway (`BEGIN IMMEDIATE`). Handlers must not commit
  themselves.
- *Ack after commit.* An event is acknowledged only after its transaction committed (or it
  was skipped or dead-lettered). Acks are sent once per batch: an ack lost to a crash or a
  Redis outage only means a redelivery, which the marker absorbs.
- *Retries.* A handler that raises is retried in the runner up to `RetryPolicy.max_attempts`
  times (default 5), sleeping an exponentially growing, jittered backoff between attempts;
  each attempt is a fresh transaction. Then the event goes to the dead-letter stream
  `dead.<stream>.<consumer>` with the error's type and first message line (truncated; for
  SQLAlchemy errors only the type names, since their text carries SQL and values) and is
  acknowledged, and the runner moves on: a poison event costs its retries, never the stream.
  An event delivered more than `RetryPolicy.max_deliveries` times (its consumers keep dying
  on it before they can record a failure) is dead-lettered without running the handler.
- *Unreadable events never crash a consumer.* An event type without a handler is skipped
  (acknowledged and logged) or dead-lettered, by the consumer's `unknown_type` rule (default
  skip: a stream carries a whole family and most consumers want part of it). A
  `schema_version` newer than the handler declares follows `newer_schema` (default
  dead-letter, so the events can be replayed once the consumer is upgraded). A payload of
  the wrong message type, an event without an id, or an entry that is not an `Event` at all
  is always dead-lettered.
- *Tracing.* Each event is handled in a span (kind CONSUMER) that is a child of, and links to,
  the producer's span from the envelope's `traceparent`/`tracestate`: one trace follows a
  request from the edge across the bus into every consumer (decision 0005).

The runner: one task per stream, reading batches of `batch_size` (100) with a blocking
XREADGROUP, handling them one by one in order. Every `claim_interval` it also claims pending
events idle for `claim_min_idle` (their consumer died, or a reply was lost in a Redis
restart) and handles them the same way. A batch that runs past half of `claim_min_idle`
stops early and leaves its rest pending for a later claim, so a slow batch is not handled by
two consumers at once. Each runner has a unique consumer name (host, pid, random suffix). Any
failure of the bus or the database around the handlers (Redis down, restarting, failing
over) is retried with capped exponential backoff; the group's cursor and pending lists live
in Redis, so the runner catches up where the group left off. A group Redis lost (restart
without persistence) is recreated from the oldest retained event; the markers absorb the
re-reads.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
import secrets
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum, StrEnum
from typing import Any, Generic, Protocol, TypeVar, cast

from google.protobuf.message import Message
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from sqlalchemy import CursorResult, String, delete, insert, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from gatehouse.events.v1.envelope_pb2 import Event
from gatehouse.runtime.backbone_metrics import ConsumerMetrics
from gatehouse.runtime.bus import (
    FROM_OLDEST,
    DeadLetterInfo,
    Delivery,
    GroupEventBus,
    UnknownGroupError,
)
from gatehouse.runtime.db import (
    DuplicateKeyError,
    RuntimeBase,
    SqlAlchemyUnitOfWork,
    UtcDateTime,
    translate_integrity_errors,
)
from gatehouse.runtime.events import (
    check_event_type,
    extract_trace_context,
    producer_link,
    stream_for,
)

log = logging.getLogger("gatehouse.events")

MAX_ERROR_LENGTH = 300

# Consumer names become group names and the last segment of dead-letter stream names
# (`dead.<stream>.<consumer>`), so they must not contain dots.
_CONSUMER_NAME = re.compile(r"[a-z][a-z0-9_-]{0,62}")

U = TypeVar("U", bound=SqlAlchemyUnitOfWork)
M = TypeVar("M", bound=Message)


class UnreadableRule(StrEnum):
    """What a consumer does with an event it cannot read (unknown type, newer schema)."""

    SKIP = "skip"
    DEAD_LETTER = "dead_letter"


class DeadLetterReason(StrEnum):
    """Why an event was dead-lettered (`DeadLetterInfo.reason`)."""

    HANDLER_FAILED = "handler_failed"
    TOO_MANY_DELIVERIES = "too_many_deliveries"
    UNKNOWN_TYPE = "unknown_type"
    NEWER_SCHEMA = "newer_schema"
    BAD_PAYLOAD = "bad_payload"
    MALFORMED = "malformed"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently a failing handler is retried before its event is dead.

    The backoff before attempt n+1 is `first_backoff * multiplier**(n-1)`, capped at
    `max_backoff`, times a random factor in [0.5, 1] so that replicas failing on the same
    cause do not retry in lockstep.
    """

    max_attempts: int = 5
    first_backoff: timedelta = timedelta(milliseconds=100)
    max_backoff: timedelta = timedelta(seconds=5)
    multiplier: float = 2.0
    # Deliveries, not attempts: only grows when consumers die holding the event.
    max_deliveries: int = 10

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.max_deliveries < 1:
            raise ValueError("max_attempts and max_deliveries must be >= 1")
        if self.first_backoff < timedelta(0) or self.max_backoff < self.first_backoff:
            raise ValueError("need 0 <= first_backoff <= max_backoff")
        if self.multiplier < 1:
            raise ValueError("multiplier must be >= 1")

    def backoff(self, failed_attempts: int, rng: random.Random) -> timedelta:
        """How long to wait after the `failed_attempts`-th failure."""
        grown = self.first_backoff * self.multiplier ** max(0, failed_attempts - 1)
        return min(grown, self.max_backoff) * rng.uniform(0.5, 1.0)


Handler = Callable[[Event, M, U], Awaitable[None]]
"""`(event, payload, uow) -> None`: the payload is `event.data` unpacked to the declared type."""


@dataclass(frozen=True, slots=True)
class Route(Generic[U]):
    """One declared event type: the payload type it carries and who handles it."""

    event_type: str
    payload_type: type[Message]
    handler: Callable[[Event, Any, U], Awaitable[None]]
    schema_version: int


class Consumer(Generic[U]):
    """A named consumer (one consumer group per stream) and the event types it handles.

    `unit_of_work` builds a fresh unit of work per attempt; its session is where the runner
    records processed events, so it must be a `SqlAlchemyUnitOfWork` on the service database
    (which the runtime migrations give a `processed_events` table).
    """

    def __init__(
        self,
        name: str,
        unit_of_work: Callable[[], U],
        *,
        unknown_type: UnreadableRule = UnreadableRule.SKIP,
        newer_schema: UnreadableRule = UnreadableRule.DEAD_LETTER,
        retry: RetryPolicy | None = None,
    ) -> None:
        if _CONSUMER_NAME.fullmatch(name) is None:
            raise ValueError(
                f"consumer name {name!r} must be lowercase letters, digits, '-' or '_' "
                "(no dots: it ends dead-letter stream names)"
            )
        self.name = name
        self.unit_of_work = unit_of_work
        self.unknown_type = unknown_type
        self.newer_schema = newer_schema
        self.retry = retry or RetryPolicy()
        self._routes: dict[str, Route[U]] = {}

    def add_handler(
        self,
        event_type: str,
        payload_type: type[M],
        handler: Handler[M, U],
        *,
        schema_version: int = 1,
    ) -> None:
        """Handle `event_type`, whose payload is `payload_type` up to `schema_version`."""
        check_event_type(event_type)
        if event_type in self._routes:
            raise ValueError(f"{self.name}: event type {event_type!r} already has a handler")
        if schema_version < 1:
            raise ValueError("schema_version starts at 1")
        self._routes[event_type] = Route(
            event_type,
            payload_type,
            cast("Callable[[Event, Any, U], Awaitable[None]]", handler),
            schema_version,
        )

    def handles(
        self, event_type: str, payload_type: type[M], *, schema_version: int = 1
    ) -> Callable[[Handler[M, U]], Handler[M, U]]:
        """Decorator form of `add_handler`."""

        def register(handler: Handler[M, U]) -> Handler[M, U]:
            self.add_handler(event_type, payload_type, handler, schema_version=schema_version)
            return handler

        return register

    def route(self, event_type: str) -> Route[U] | None:
        return self._routes.get(event_type)

    @property
    def event_types(self) -> tuple[str, ...]:
        return tuple(self._routes)

    @property
    def streams(self) -> tuple[str, ...]:
        """Every stream one of the handled types travels on, in declaration order."""
        return tuple(dict.fromkeys(stream_for(event_type) for event_type in self._routes))


# --- processed events ---------------------------------------------------------------------


class ProcessedEventRow(RuntimeBase):
    """Table `processed_events` (created by migration `runtime_0003`)."""

    __tablename__ = "processed_events"

    consumer: Mapped[str] = mapped_column(String(64), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    event_type: Mapped[str] = mapped_column(String(255))
    # Indexed for the retention sweep, which deletes by age across consumers.
    processed_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)


class ProcessedEvents(Protocol):
    """Which events each consumer has processed, seen through the caller's transaction."""

    async def mark(self, consumer: str, event: Event, now: datetime) -> bool:
        """Record `event` as processed by `consumer`; False if it already was.

        After False the transaction is unusable (PostgreSQL aborted it): roll back.
        """
        ...

    async def contains(self, consumer: str, event_id: str) -> bool: ...

    async def delete_older_than(self, cutoff: datetime) -> int:
        """Forget markers older than `cutoff` (a retention sweep); returns how many went.

        Keep markers longer than an event can come back: the streams' retention, and the
        time within which an operator may replay a dead letter.
        """
        ...


class SqlAlchemyProcessedEvents:
    """`ProcessedEvents` on a unit of work's session; commits are the unit of work's."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def mark(self, consumer: str, event: Event, now: datetime) -> bool:
        try:
            with translate_integrity_errors():
                await self._session.execute(
                    insert(ProcessedEventRow).values(
                        consumer=consumer,
                        event_id=event.id,
                        event_type=event.type,
                        processed_at=now,
                    )
                )
        except DuplicateKeyError:
            return False
        return True

    async def contains(self, consumer: str, event_id: str) -> bool:
        found = await self._session.scalar(
            select(ProcessedEventRow.event_id).where(
                ProcessedEventRow.consumer == consumer, ProcessedEventRow.event_id == event_id
            )
        )
        return found is not None

    async def delete_older_than(self, cutoff: datetime) -> int:
        result = await self._session.execute(
            delete(ProcessedEventRow)
            .where(ProcessedEventRow.processed_at < cutoff)
            .execution_options(synchronize_session=False)
        )
        return cast("CursorResult[Any]", result).rowcount


# --- the runner ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunnerOptions:
    """How a `ConsumerRunner` reads, reclaims and reconnects. Defaults suit production."""

    batch_size: int = 100
    # How long one read waits for new events before the runner looks at reclaiming.
    block: timedelta = timedelta(seconds=2)
    claim_interval: timedelta = timedelta(seconds=30)
    # Longer than any healthy batch takes; a consumer silent this long is presumed dead.
    claim_min_idle: timedelta = timedelta(seconds=60)
    reconnect_first_backoff: timedelta = timedelta(milliseconds=100)
    reconnect_max_backoff: timedelta = timedelta(seconds=5)
    # Where a group that does not exist yet starts (the first deployment of a consumer).
    start: str = FROM_OLDEST
    # Bounds the last ack flush on stop, so a dead Redis cannot hold up a shutdown.
    final_ack_timeout: timedelta = timedelta(seconds=2)
    # How long "already processed" markers are kept: longer than an event can come back (the
    # streams keep events for days; an operator replays dead letters within weeks).
    processed_retention: timedelta = timedelta(days=30)
    # How often a runner sweeps markers past the retention (every replica may; it is idempotent).
    sweep_interval: timedelta = timedelta(hours=1)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if self.processed_retention <= timedelta(0) or self.sweep_interval <= timedelta(0):
            raise ValueError("processed_retention and sweep_interval must be positive")
        if self.claim_min_idle <= timedelta(0) or self.block <= timedelta(0):
            raise ValueError("claim_min_idle and block must be positive")


def default_consumer_name() -> str:
    """Unique per runner: host and pid say whose it was, the suffix tells restarts apart."""
    host = socket.gethostname().split(".")[0] or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"


def describe_error(error: BaseException, limit: int = MAX_ERROR_LENGTH) -> str:
    """Type and first message line of `error`, truncated: safe for a dead letter or a log.

    SQLAlchemy's message embeds the statement and its parameters, so only type names are
    kept for it.
    """
    kind = type(error).__name__
    if isinstance(error, SQLAlchemyError):
        original = getattr(error, "orig", None)
        return kind if original is None else f"{kind} ({type(original).__name__})"
    lines = str(error).strip().splitlines()
    text = f"{kind}: {lines[0]}" if lines else kind
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Outcome(Enum):
    DONE = "done"
    DUPLICATE = "duplicate"
    TOO_MANY_DELIVERIES = "too_many_deliveries"


@dataclass(slots=True)
class _StreamState:
    acks: list[str] = field(default_factory=list)
    busy: bool = False
    needs_group: bool = False


class ConsumerRunner(Generic[U]):
    """Runs one `Consumer` against a `GroupEventBus` until stopped (see the module docstring).

    `start()` creates the groups (failing fast if the bus is unreachable) and one task per
    stream; `stop(grace)` lets each task finish the event in hand (up to `grace`), sends the
    outstanding acks and ends. Events read but not handled stay pending and are claimed by
    another replica after `claim_min_idle`.
    """

    def __init__(
        self,
        bus: GroupEventBus,
        consumer: Consumer[U],
        *,
        options: RunnerOptions | None = None,
        consumer_name: str | None = None,
        tracer_provider: trace.TracerProvider | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], datetime] | None = None,
        metrics: ConsumerMetrics | None = None,
    ) -> None:
        if not consumer.streams:
            raise ValueError(f"consumer {consumer.name!r} handles no event types")
        self._metrics = metrics or ConsumerMetrics(consumer.name)
        self._bus = bus
        self._consumer = consumer
        self._options = options or RunnerOptions()
        self.name = consumer_name or default_consumer_name()
        provider = tracer_provider or trace.get_tracer_provider()
        self._tracer = provider.get_tracer("gatehouse.events")
        self._rng = rng or random.Random()  # noqa: S311 (jitter, not secrets)
        self._now = clock or (lambda: datetime.now(UTC))
        self._streams: dict[str, _StreamState] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def consumer(self) -> Consumer[U]:
        return self._consumer

    @property
    def running(self) -> bool:
        return any(not task.done() for task in self._tasks.values())

    async def start(self) -> None:
        if self._tasks:
            raise RuntimeError("the runner is already started")
        self._stopping = False
        for stream in self._consumer.streams:
            await self._bus.ensure_group(stream, self._consumer.name, self._options.start)
        for stream in self._consumer.streams:
            self._streams[stream] = _StreamState()
            self._tasks[stream] = asyncio.create_task(
                self._run_stream(stream), name=f"consumer {self._consumer.name} {stream}"
            )
        self._sweeper = asyncio.create_task(
            self._sweep_forever(), name=f"consumer {self._consumer.name} sweep"
        )
        log.info(
            "consumer %s started as %s on %s",
            self._consumer.name,
            self.name,
            ", ".join(self._consumer.streams),
        )

    async def stop(self, grace: timedelta = timedelta(seconds=10)) -> None:
        """Stop reading; give in-flight handlers `grace`, then cancel. Idempotent.

        `grace=timedelta(0)` cancels at once, as a crash would (handlers in flight roll back
        and their events stay pending).
        """
        self._stopping = True
        sweeper, self._sweeper = self._sweeper, None
        if sweeper is not None:
            sweeper.cancel()
            await asyncio.gather(sweeper, return_exceptions=True)
        tasks = list(self._tasks.values())
        for stream, task in self._tasks.items():
            # A task waiting in a read holds no work: no need to wait for its slice to end.
            if grace <= timedelta(0) or not self._streams[stream].busy:
                task.cancel()
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=grace.total_seconds() or None)
            for task in late:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        self._streams.clear()

    async def sweep_processed(self) -> int:
        """Forget the "already processed" markers older than the retention (every consumer's
        of this database); how many went."""
        cutoff = self._now() - self._options.processed_retention
        uow = self._consumer.unit_of_work()
        async with uow:
            swept = await SqlAlchemyProcessedEvents(uow.session).delete_older_than(cutoff)
            await uow.commit()
        if swept:
            log.info("consumer %s: forgot %d processed-event markers", self.name, swept)
        return swept

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self._options.sweep_interval.total_seconds())
            try:
                await self.sweep_processed()
            except Exception:
                # The database is away: the markers wait for the next round.
                log.warning("consumer %s: sweeping markers failed", self.name, exc_info=True)

    # -- per-stream loop ------------------------------------------------------------------

    async def _run_stream(self, stream: str) -> None:
        state = self._streams[stream]
        loop = asyncio.get_running_loop()
        options = self._options
        failures = 0
        # Claim at once on start: a predecessor that died left work behind.
        next_claim = loop.time()
        try:
            while not self._stopping:
                try:
                    if state.needs_group:
                        await self._bus.ensure_group(stream, self._consumer.name, options.start)
                        state.needs_group = False
                        log.warning(
                            "consumer group %s on %s was missing; recreated",
                            self._consumer.name,
                            stream,
                        )
                    await self._flush_acks(stream, state)
                    if loop.time() >= next_claim:
                        next_claim = loop.time() + options.claim_interval.total_seconds()
                        claimed = await self._bus.claim_idle(
                            stream,
                            self._consumer.name,
                            self.name,
                            options.claim_min_idle,
                            options.batch_size,
                        )
                        if claimed:
                            log.info(
                                "%s claimed %d idle events on %s", self.name, len(claimed), stream
                            )
                            await self._handle_batch(stream, state, claimed)
                            await self._flush_acks(stream, state)
                            failures = 0
                            if len(claimed) == options.batch_size:
                                # A full batch: a dead consumer left more; claim on now.
                                next_claim = loop.time()
                            continue
                    deliveries = await self._bus.read_group(
                        stream,
                        self._consumer.name,
                        self.name,
                        count=options.batch_size,
                        block=options.block,
                    )
                    await self._handle_batch(stream, state, deliveries)
                    await self._flush_acks(stream, state)
                    failures = 0
                except UnknownGroupError:
                    state.needs_group = True
                except Exception as error:
                    failures += 1
                    delay = self._reconnect_delay(failures)
                    log.warning(
                        "consumer %s on %s: %s; retrying in %.2fs",
                        self.name,
                        stream,
                        describe_error(error),
                        delay.total_seconds(),
                    )
                    await asyncio.sleep(delay.total_seconds())
        finally:
            await self._final_flush(stream, state)

    async def _handle_batch(
        self, stream: str, state: _StreamState, deliveries: Sequence[Delivery]
    ) -> None:
        if not deliveries:
            return
        loop = asyncio.get_running_loop()
        # Past this, the batch's unhandled events near the idle time after which other
        # consumers may claim them: leave them pending instead of racing a claimer.
        give_up_at = loop.time() + self._options.claim_min_idle.total_seconds() / 2
        state.busy = True
        try:
            for index, delivery in enumerate(deliveries):
                if self._stopping:
                    return
                if loop.time() > give_up_at:
                    log.warning(
                        "%s: batch on %s too slow; %d events left pending for a later claim",
                        self.name,
                        stream,
                        len(deliveries) - index,
                    )
                    return
                await self._process(stream, delivery)
                state.acks.append(delivery.position)
        finally:
            state.busy = False

    async def _flush_acks(self, stream: str, state: _StreamState) -> None:
        if state.acks:
            positions = list(state.acks)
            await self._bus.ack(stream, self._consumer.name, positions)
            del state.acks[: len(positions)]

    async def _final_flush(self, stream: str, state: _StreamState) -> None:
        try:
            async with asyncio.timeout(self._options.final_ack_timeout.total_seconds()):
                await self._flush_acks(stream, state)
        except Exception as error:
            # The events stay pending; whoever claims them finds their markers and acks.
            log.warning(
                "consumer %s on %s: last acks not sent (%s)",
                self.name,
                stream,
                describe_error(error),
            )

    def _reconnect_delay(self, failures: int) -> timedelta:
        options = self._options
        grown = options.reconnect_first_backoff * (1 << min(failures - 1, 30))
        return min(grown, options.reconnect_max_backoff) * self._rng.uniform(0.5, 1.0)

    # -- one event ------------------------------------------------------------------------

    async def _process(self, stream: str, delivery: Delivery) -> None:
        """Handle, skip or dead-letter one delivery; returns once it may be acknowledged.

        Raises only if the bus failed while dead-lettering (the event stays pending).
        """
        event = delivery.event
        if event is None or not event.id:
            what = "the entry is not a serialized Event" if event is None else "event has no id"
            await self._dead_letter(stream, delivery, DeadLetterReason.MALFORMED, what, 0)
            return
        attributes: Mapping[str, str | int] = {
            "messaging.operation.type": "process",
            "messaging.destination.name": stream,
            "messaging.consumer.group.name": self._consumer.name,
            "messaging.message.id": event.id,
            "gatehouse.event.type": event.type,
            "gatehouse.event.delivery_count": delivery.delivery_count,
            "gatehouse.consumer": self.name,
        }
        with self._tracer.start_as_current_span(
            f"process {event.type}",
            # Part of the producing request's trace (a new root when the envelope has none).
            context=extract_trace_context(event),
            kind=SpanKind.CONSUMER,
            links=[link] if (link := producer_link(event)) is not None else [],
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            await self._process_event(stream, delivery, event, span)

    async def _process_event(
        self, stream: str, delivery: Delivery, event: Event, span: trace.Span
    ) -> None:
        route = self._consumer.route(event.type)
        if route is None:
            await self._unreadable(
                stream,
                delivery,
                self._consumer.unknown_type,
                DeadLetterReason.UNKNOWN_TYPE,
                f"no handler for event type {event.type!r}",
                span,
            )
            return
        version = event.schema_version or 1
        if version > route.schema_version:
            await self._unreadable(
                stream,
                delivery,
                self._consumer.newer_schema,
                DeadLetterReason.NEWER_SCHEMA,
                f"{event.type} schema version {version} is newer than the handler's "
                f"{route.schema_version}",
                span,
            )
            return
        payload = route.payload_type()
        if not event.data.Unpack(payload):
            await self._dead_letter(
                stream,
                delivery,
                DeadLetterReason.BAD_PAYLOAD,
                f"payload {event.data.type_url!r} is not {payload.DESCRIPTOR.full_name}",
                0,
                span,
            )
            return
        await self._handle_with_retries(stream, delivery, event, route, payload, span)

    async def _handle_with_retries(
        self,
        stream: str,
        delivery: Delivery,
        event: Event,
        route: Route[U],
        payload: Message,
        span: trace.Span,
    ) -> None:
        policy = self._consumer.retry
        error: Exception | None = None
        for attempt in range(1, policy.max_attempts + 1):
            try:
                outcome = await self._attempt(delivery, event, route, payload)
            except Exception as failure:
                error = failure
                span.add_event(
                    "attempt failed",
                    {"attempt": attempt, "error.type": type(failure).__name__},
                )
                log.warning(
                    "consumer %s: %s %s attempt %d/%d failed: %s",
                    self.name,
                    event.type,
                    event.id,
                    attempt,
                    policy.max_attempts,
                    describe_error(failure),
                )
                if attempt < policy.max_attempts:
                    await asyncio.sleep(policy.backoff(attempt, self._rng).total_seconds())
                continue
            if outcome is _Outcome.DONE:
                lag = self._now() - event.time.ToDatetime(tzinfo=UTC)
                self._metrics.finished(stream, "handled", lag.total_seconds())
            elif outcome is _Outcome.DUPLICATE:
                span.set_attribute("gatehouse.event.duplicate", True)
                log.debug("consumer %s: %s already processed", self.name, event.id)
                self._metrics.finished(stream, "duplicate", None)
            elif outcome is _Outcome.TOO_MANY_DELIVERIES:
                await self._dead_letter(
                    stream,
                    delivery,
                    DeadLetterReason.TOO_MANY_DELIVERIES,
                    f"delivered {delivery.delivery_count} times without being acknowledged",
                    delivery.delivery_count,
                    span,
                )
            return
        assert error is not None
        await self._dead_letter(
            stream,
            delivery,
            DeadLetterReason.HANDLER_FAILED,
            describe_error(error),
            policy.max_attempts,
            span,
        )

    async def _attempt(
        self, delivery: Delivery, event: Event, route: Route[U], payload: Message
    ) -> _Outcome:
        uow = self._consumer.unit_of_work()
        async with uow:
            processed = SqlAlchemyProcessedEvents(uow.session)
            # Marker first: a duplicate is found before any work, and on PostgreSQL a twin
            # handling the same event concurrently waits here until the first one finishes.
            if not await processed.mark(self._consumer.name, event, self._now()):
                return _Outcome.DUPLICATE
            if delivery.delivery_count > self._consumer.retry.max_deliveries:
                return _Outcome.TOO_MANY_DELIVERIES
            await route.handler(event, payload, uow)
            await uow.commit()
        return _Outcome.DONE

    async def _unreadable(
        self,
        stream: str,
        delivery: Delivery,
        rule: UnreadableRule,
        reason: DeadLetterReason,
        description: str,
        span: trace.Span,
    ) -> None:
        if rule is UnreadableRule.SKIP:
            span.set_attribute("gatehouse.event.skipped", reason.value)
            log.info("consumer %s: skipping %s: %s", self.name, delivery.position, description)
            self._metrics.finished(stream, "skipped", None)
            return
        await self._dead_letter(stream, delivery, reason, description, 0, span)

    async def _dead_letter(
        self,
        stream: str,
        delivery: Delivery,
        reason: DeadLetterReason,
        error: str,
        attempts: int,
        span: trace.Span | None = None,
    ) -> None:
        info = DeadLetterInfo(
            stream=stream,
            group=self._consumer.name,
            position=delivery.position,
            reason=reason.value,
            error=error[:MAX_ERROR_LENGTH],
            attempts=attempts,
            consumer=self.name,
            time=self._now(),
        )
        dead_position = await self._bus.dead_letter(delivery.event, info)
        self._metrics.finished(stream, "dead_lettered", None)
        self._metrics.dead_lettered(stream, reason.value)
        if span is not None:
            span.set_status(Status(StatusCode.ERROR, reason.value))
        log.error(
            "consumer %s: dead-lettered %s of %s to %s %s (%s): %s",
            self.name,
            delivery.position,
            stream,
            info.dead_letter_stream,
            dead_position,
            reason.value,
            info.error,
        )
