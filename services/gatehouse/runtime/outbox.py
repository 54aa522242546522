"""Transactional outbox: events are committed with the state change, then relayed to the bus.

A service never publishes to the bus from a handler: between its commit and a publish the
process may die (the event is lost) or the publish may succeed and the commit fail (an event
about something that never happened). Instead, inside the unit of work that makes the
change::

    async with uow:
        payment.mark_processed()
        await uow.outbox.add(new_event("payment.processed", source="payments",
                                       subject=payment.name, data=PaymentProcessed(...)))
        await uow.commit()          # state and event, both or neither

and `OutboxRelay` publishes committed rows to `stream_for(event.type)`.

Guarantees and their limits:

- **Nothing is lost.** A row is marked published only after `EventBus.publish` returned for
  it. A failing bus is retried with capped exponential backoff and jitter, never skipped;
  the row that failed keeps blocking the ones after it (order beats progress).
- **At least once, not exactly once.** If the relay dies after `publish` returned and before
  the mark committed, the event is published again by the next leader. Consumers must
  deduplicate on `Event.id` (ARCHITECTURE §7); every other event is published once.
- **Order.** The leader publishes pending rows in id order, one at a time, so events
  committed one after another go out in the order they were built (ids are ULIDs). A row
  that commits late with a smaller id (a concurrent transaction) is still published, after
  larger ids already out: pending rows are selected by state, never by a high-water mark.
  Per-aggregate order therefore needs what correctness needs anyway: writes to one
  aggregate serialised (row lock or version check) and the event built after that point.
  Across replicas, ids made within the hosts' clock skew of each other can still invert.
- **One relay per database.** On PostgreSQL the relays of all replicas race for a
  session-level advisory lock held on a dedicated connection; the others retry every
  `leadership_retry` and take over when the leader stops or its connection dies (PostgreSQL
  drops a dead client's locks when it notices the connection is gone: at once for a killed
  process, after TCP keepalive for a vanished host). A leader whose lock connection fails
  steps down before its next batch; in the gap two relays may publish the same rows
  (duplicates again, never losses). On SQLite one process owns the file: an `flock` on
  `<database>.outbox-relay.lock` makes that so even if two are started.
- **Retention.** Published rows stay `retention` (24 h by default) for forensics and replay,
  then the leader deletes them in batches between publishing rounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import random
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self, cast

from sqlalchemy import (
    CursorResult,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    delete,
    func,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from gatehouse.events.v1.envelope_pb2 import Event
from gatehouse.runtime.backbone_metrics import OutboxBacklog, OutboxMetrics
from gatehouse.runtime.bus import EventBus
from gatehouse.runtime.db import (
    _SQLITE_BEGIN_OPTION,
    Database,
    RuntimeBase,
    SqlAlchemyUnitOfWork,
    UtcDateTime,
)
from gatehouse.runtime.events import InvalidEventError, stream_for
from gatehouse.runtime.ids import is_ulid

log = logging.getLogger("gatehouse.outbox")

# Every replica must use the same key; advisory locks are scoped to one database, so services
# sharing a PostgreSQL server but not a database do not compete. ("gateoutb")
RELAY_LOCK_KEY = 0x6761_7465_6F75_7462

_LAST_ERROR_MAX_CHARS = 2000
# Column widths; checked on `add` so SQLite (which ignores them) fails like PostgreSQL.
_MAX_AGGREGATE_CHARS = 512
_MAX_TYPE_CHARS = 255


def _utc_now() -> datetime:
    return datetime.now(UTC)


# --- the table ----------------------------------------------------------------------------


class OutboxEventRow(RuntimeBase):
    """Table `outbox_events` (created by migration `runtime_0002`)."""

    __tablename__ = "outbox_events"
    __table_args__ = (
        # The relay's query: pending rows in id order. Published rows pile up for the
        # retention period and come first in id order; without this partial index every poll
        # would walk past all of them.
        Index(
            "ix_outbox_events_unpublished",
            "id",
            postgresql_where=text("published_at IS NULL"),
            sqlite_where=text("published_at IS NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    stream: Mapped[str] = mapped_column(String(255))
    aggregate: Mapped[str] = mapped_column(String(_MAX_AGGREGATE_CHARS))
    type: Mapped[str] = mapped_column(String(_MAX_TYPE_CHARS))
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    # Indexed for the retention sweep.
    published_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), index=True)
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    last_error: Mapped[str | None] = mapped_column(Text)


_table = cast("Table", OutboxEventRow.__table__)
_columns = _table.c


# --- writing: the repository a unit of work exposes ------------------------------------------


class Outbox(Protocol):
    """The events of the caller's transaction, published once it commits."""

    async def add(self, event: Event) -> None:
        """Store `event` in the current transaction (see `gatehouse.runtime.events.new_event`).

        Raises `InvalidEventError` for an envelope the relay could not publish in order: its
        `id` must be a ULID, its `type` well formed, its `subject` set. Adding the same id
        twice fails at commit with `DuplicateKeyError`.
        """
        ...


def _check_publishable(event: Event) -> str:
    if not is_ulid(event.id):
        raise InvalidEventError(f"event id {event.id!r} is not a ULID (use new_event())")
    if not event.subject:
        raise InvalidEventError("event subject must name the aggregate it is about")
    if len(event.subject) > _MAX_AGGREGATE_CHARS or len(event.type) > _MAX_TYPE_CHARS:
        raise InvalidEventError("event subject or type is too long for the outbox")
    return stream_for(event.type)


class SqlAlchemyOutbox:
    """`Outbox` on a unit of work's session; the row commits or rolls back with it."""

    def __init__(self, session: AsyncSession, clock: Callable[[], datetime] = _utc_now) -> None:
        self._session = session
        self._clock = clock
        self._added = 0

    async def add(self, event: Event) -> None:
        stream = _check_publishable(event)
        self._session.add(
            OutboxEventRow(
                id=event.id,
                stream=stream,
                aggregate=event.subject,
                type=event.type,
                payload=event.SerializeToString(),
                created_at=self._clock(),
                published_at=None,
                attempts=0,
                last_error=None,
            )
        )
        self._added += 1

    def take_added(self) -> int:
        """How many events were added since the last call (the unit of work's commit hook)."""
        added, self._added = self._added, 0
        return added


class InMemoryOutbox:
    """`Outbox` in a list, for unit tests of services: events appear at once (no transaction)."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    async def add(self, event: Event) -> None:
        _check_publishable(event)
        self.events.append(event)


class RelayNotifier(Protocol):
    """Whatever publishes the outbox; told when new rows were committed."""

    def notify(self) -> None: ...


class OutboxUnitOfWork(SqlAlchemyUnitOfWork):
    """A unit of work with an `outbox`; after a commit that added events, wakes the relay.

    Services derive their unit of work from it (repositories as with `SqlAlchemyUnitOfWork`)::

        class PaymentsUnitOfWork(OutboxUnitOfWork):
            payments: PaymentRepository

            def _create_repositories(self, session: AsyncSession) -> None:
                self.payments = SqlAlchemyPaymentRepository(session)

        uow = PaymentsUnitOfWork(service_db.database.sessionmaker, relay=service_db.relay)

    Without a relay (or with one in another process) the events are still committed and a
    relay finds them on its next poll; the notification only saves that wait.
    """

    outbox: Outbox

    def __init__(
        self,
        session_factory: async_sessionmaker[AsyncSession],
        *,
        relay: RelayNotifier | None = None,
    ) -> None:
        super().__init__(session_factory)
        self._relay = relay
        self._sql_outbox: SqlAlchemyOutbox | None = None

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        self._sql_outbox = SqlAlchemyOutbox(self.session)
        self.outbox = self._sql_outbox
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._sql_outbox = None
        await super().__aexit__(exc_type, exc, traceback)

    async def commit(self) -> None:
        outbox = self._sql_outbox
        try:
            await super().commit()
        except BaseException:
            if outbox is not None:
                outbox.take_added()
            raise
        if outbox is not None and outbox.take_added() and self._relay is not None:
            self._relay.notify()

    async def rollback(self) -> None:
        if self._sql_outbox is not None:
            self._sql_outbox.take_added()
        await super().rollback()


# --- leadership ---------------------------------------------------------------------------


class RelayLease(Protocol):
    """The right to be the one relay of a database. Not reentrant; one holder at a time."""

    async def try_acquire(self) -> bool:
        """Take the lease if nobody holds it; `False` if someone does. Never waits long."""
        ...

    async def still_held(self) -> bool:
        """Whether the lease taken by `try_acquire` is still ours (it can be lost)."""
        ...

    async def release(self) -> None:
        """Give the lease up (no-op if not held). Must not raise."""
        ...


class PostgresAdvisoryLease:
    """A session-level advisory lock on a connection kept for as long as the lease is held.

    The connection runs in autocommit: an idle transaction held for hours would hold back
    vacuum and trip `idle_in_transaction_session_timeout`.
    """

    def __init__(self, engine: AsyncEngine, key: int = RELAY_LOCK_KEY) -> None:
        self._engine = engine
        self._key = key
        self._connection: AsyncConnection | None = None

    async def try_acquire(self) -> bool:
        if self._connection is not None:
            raise RuntimeError("lease already held")
        connection = await self._engine.connect()
        try:
            await connection.execution_options(isolation_level="AUTOCOMMIT")
            result = await connection.execute(
                text("SELECT pg_try_advisory_lock(:key)"), {"key": self._key}
            )
            acquired = bool(result.scalar_one())
        except BaseException:
            await _discard(connection)
            raise
        if not acquired:
            await connection.close()
            return False
        self._connection = connection
        return True

    async def still_held(self) -> bool:
        connection = self._connection
        if connection is None:
            return False
        try:
            # A live session keeps its session locks; nobody else can take them from it.
            await connection.execute(text("SELECT 1"))
        except Exception:
            log.warning("the relay's lock connection failed: leadership lost", exc_info=True)
            self._connection = None
            await _discard(connection)
            return False
        return True

    async def release(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            await connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": self._key})
        except BaseException as error:
            # Back in the pool with the lock still held, the connection would block every
            # other relay for good; ending the session is what frees the lock then.
            await _discard(connection)
            if not isinstance(error, Exception):
                raise
            log.warning("could not unlock the relay lease; closed its connection", exc_info=True)
            return
        with contextlib.suppress(Exception):
            await connection.close()


async def _discard(connection: AsyncConnection) -> None:
    """Close the underlying DBAPI connection instead of returning it to the pool."""
    with contextlib.suppress(Exception):
        await connection.invalidate()
    with contextlib.suppress(Exception):
        await connection.close()


class FileLease:
    """An exclusive `flock` on a lock file: one holder per file across processes and within one.

    The kernel drops the lock when the holder's process dies, so a crashed relay never blocks
    its successor.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._fd: int | None = None

    async def try_acquire(self) -> bool:
        return self._try_acquire()

    # Synchronous on purpose: a local open and a non-blocking flock never wait.
    def _try_acquire(self) -> bool:
        if self._fd is not None:
            raise RuntimeError("lease already held")
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return True

    async def still_held(self) -> bool:
        return self._fd is not None

    async def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            # Closing the last descriptor of the open file releases the lock.
            os.close(fd)


class ProcessLease:
    """A lease that only excludes holders in this process (in-memory SQLite databases)."""

    _held: set[str] = set()  # noqa: RUF012 - deliberately shared by every instance

    def __init__(self, name: str) -> None:
        self._name = name
        self._holding = False

    async def try_acquire(self) -> bool:
        if self._holding:
            raise RuntimeError("lease already held")
        if self._name in ProcessLease._held:
            return False
        ProcessLease._held.add(self._name)
        self._holding = True
        return True

    async def still_held(self) -> bool:
        return self._holding

    async def release(self) -> None:
        if self._holding:
            self._holding = False
            ProcessLease._held.discard(self._name)


def lease_for(database: Database) -> RelayLease:
    """The lease that makes a relay the only one publishing `database`'s outbox."""
    if database.dialect_name == "postgresql":
        return PostgresAdvisoryLease(database.engine)
    url = database.url
    path = url.database
    if not path or path == ":memory:":
        # Every engine on ":memory:" has a database of its own.
        return ProcessLease(f"sqlite-memory:{id(database.engine)}")
    if url.query.get("uri"):
        # A URI may name a shared in-memory database; engines naming it share one lease.
        return ProcessLease(url.render_as_string(hide_password=False))
    return FileLease(Path(f"{path}.outbox-relay.lock"))


# --- publishing: the relay ----------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class RelayOptions:
    """How the relay paces itself. The defaults suit production; tests shrink the waits."""

    # Rows per round: one SELECT and one UPDATE per batch, whatever its size.
    batch_size: int = 100
    # How long an idle relay sleeps when nobody calls `notify()` (commits in other replicas
    # cannot notify this one).
    poll_interval: timedelta = timedelta(milliseconds=500)
    backoff_base: timedelta = timedelta(milliseconds=100)
    backoff_cap: timedelta = timedelta(seconds=30)
    retention: timedelta = timedelta(hours=24)
    purge_interval: timedelta = timedelta(minutes=1)
    purge_batch_size: int = 1000
    # How often a relay that is not the leader tries to become it.
    leadership_retry: timedelta = timedelta(seconds=1)
    # How long `stop()` lets the current round finish before cancelling it.
    stop_timeout: timedelta = timedelta(seconds=5)
    # How often the leader counts the unpublished rows for the backlog metrics.
    measure_interval: timedelta = timedelta(seconds=15)

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.purge_batch_size < 1:
            raise ValueError("batch sizes must be >= 1")
        for name in (
            "poll_interval",
            "backoff_base",
            "purge_interval",
            "leadership_retry",
            "measure_interval",
        ):
            if getattr(self, name) <= timedelta(0):
                raise ValueError(f"{name} must be positive")
        if self.backoff_cap < self.backoff_base:
            raise ValueError("backoff_cap must be >= backoff_base")
        if self.retention < timedelta(0) or self.stop_timeout < timedelta(0):
            raise ValueError("retention and stop_timeout must not be negative")


@dataclass(frozen=True, slots=True)
class RelayStatus:
    """A snapshot for health checks and tests."""

    running: bool
    leader: bool
    # Rows this relay published (and marked) since it was built.
    published: int
    # Failed rounds in a row; 0 once a round succeeds.
    consecutive_failures: int
    # The most recent failure ("<ExceptionType>: <message>"), kept after recovery.
    last_error: str | None
    last_error_at: datetime | None


class OutboxRelay:
    """Publishes committed outbox rows to the bus, in id order, at least once (module doc).

    `start()` returns at once; the relay becomes the leader in the background (or waits for
    the current one to go). `notify()` wakes it for rows just committed in this process; it
    polls for the others. `stop()` lets the current round finish (up to `stop_timeout`),
    then releases leadership. All methods must be called from the same event loop.
    """

    def __init__(
        self,
        database: Database,
        bus: EventBus,
        options: RelayOptions | None = None,
        *,
        lease: RelayLease | None = None,
        clock: Callable[[], datetime] = _utc_now,
        jitter: Callable[[], float] = random.random,
        metrics: OutboxMetrics | None = None,
    ) -> None:
        self._database = database
        self._metrics = metrics
        self._bus = bus
        self._options = options or RelayOptions()
        self._lease = lease if lease is not None else lease_for(database)
        self._clock = clock
        self._jitter = jitter
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._leader = False
        self._published = 0
        self._failures = 0
        self._last_error: str | None = None
        self._last_error_at: datetime | None = None

    # -- control --

    def notify(self) -> None:
        """New rows were committed: publish them now instead of at the next poll."""
        self._wake.set()

    async def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("the relay is already running")
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(), name="gatehouse-outbox-relay")

    async def stop(self) -> None:
        """Finish the current round, release leadership; cancel after `stop_timeout`."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping.set()
        self._wake.set()
        try:
            await asyncio.wait({task}, timeout=self._options.stop_timeout.total_seconds())
        finally:
            if not task.done():
                # Mid-publish: the rows published so far in this round stay unmarked and are
                # published again by the next leader (at least once).
                task.cancel()
            await asyncio.wait({task})
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("the outbox relay ended with an error", exc_info=error)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- observation --

    def status(self) -> RelayStatus:
        return RelayStatus(
            running=self._task is not None and not self._task.done(),
            leader=self._leader,
            published=self._published,
            consecutive_failures=self._failures,
            last_error=self._last_error,
            last_error_at=self._last_error_at,
        )

    async def pending_count(self) -> int:
        """Committed rows not yet marked published (from the database: any relay's view)."""
        async with self._read() as connection:
            result = await connection.execute(
                select(func.count()).select_from(_table).where(_columns.published_at.is_(None))
            )
            return int(result.scalar_one())

    # -- the loop --

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                acquired = await self._lease.try_acquire()
            except Exception as error:
                self._failed(error, "could not take the relay leadership")
                await self._sleep(self._backoff())
                continue
            if not acquired:
                await self._sleep(self._options.leadership_retry.total_seconds())
                continue
            log.info("outbox relay is the leader for %r", self._database)
            self._leader = True
            try:
                await self._lead()
            except Exception as error:
                # `_lead` handles round failures itself, so this is a bug; still, a relay
                # that quietly died would strand every later event.
                self._failed(error, "outbox relay leader loop failed; starting over")
            finally:
                self._leader = False
                if self._metrics is not None:
                    self._metrics.backlog.measured = False
                await self._lease.release()
            # Leadership lost (or the loop failed): give another replica the first chance
            # instead of flapping between two.
            await self._sleep(self._options.leadership_retry.total_seconds())

    async def _lead(self) -> None:
        loop = asyncio.get_running_loop()
        next_purge = next_measure = loop.time()
        while not self._stopping.is_set():
            if not await self._lease.still_held():
                return
            more_work = False
            try:
                if self._metrics is not None and loop.time() >= next_measure:
                    await self._measure_backlog(self._metrics.backlog)
                    next_measure = loop.time() + self._options.measure_interval.total_seconds()
                # Before publishing, so a bus outage does not also stop the sweep.
                if loop.time() >= next_purge:
                    more_work = await self._purge()
                    next_purge = loop.time() + (
                        0.0 if more_work else self._options.purge_interval.total_seconds()
                    )
                # Cleared before reading: a commit notified while this round runs is picked
                # up by the next round instead of waiting for the poll.
                self._wake.clear()
                more_work = await self._publish_batch() or more_work
            except Exception as error:
                self._failed(error, "outbox relay round failed; backing off")
                await self._sleep(self._backoff())
                continue
            self._failures = 0
            if not more_work:
                await self._wait_for_work()

    async def _publish_batch(self) -> bool:
        """Publish one batch of pending rows in id order; whether the batch was full."""
        async with self._read() as connection:
            result = await connection.execute(
                select(_columns.id, _columns.stream, _columns.payload)
                .where(_columns.published_at.is_(None))
                .order_by(_columns.id)
                .limit(self._options.batch_size)
            )
            rows = result.all()
        published: list[str] = []
        try:
            for row_id, stream, payload in rows:
                await self._bus.publish(stream, Event.FromString(payload))
                published.append(row_id)
        except Exception as error:
            # Keep what did go out, then stop at the failed row: the next round starts with
            # it, so nothing after it overtakes it.
            await self._mark_published(published)
            await self._record_failure(rows[len(published)].id, error)
            raise
        await self._mark_published(published)
        return len(rows) == self._options.batch_size

    async def _measure_backlog(self, backlog: OutboxBacklog) -> None:
        async with self._read() as connection:
            result = await connection.execute(
                select(func.count(), func.min(_columns.created_at)).where(
                    _columns.published_at.is_(None)
                )
            )
            pending, oldest = result.one()
        backlog.pending = int(pending)
        backlog.oldest_age_seconds = (
            0.0 if oldest is None else max((self._clock() - oldest).total_seconds(), 0.0)
        )
        backlog.measured = True

    async def _mark_published(self, ids: Sequence[str]) -> None:
        if not ids:
            return
        async with self._database.engine.begin() as connection:
            await connection.execute(
                update(_table)
                # Another relay may have got there first during a change of leadership:
                # keep the first publication time.
                .where(_columns.id.in_(ids), _columns.published_at.is_(None))
                .values(published_at=self._clock(), attempts=_columns.attempts + 1)
            )
        self._published += len(ids)
        if self._metrics is not None:
            self._metrics.published(len(ids))

    async def _record_failure(self, row_id: str, error: Exception) -> None:
        try:
            async with self._database.engine.begin() as connection:
                await connection.execute(
                    update(_table)
                    .where(_columns.id == row_id)
                    .values(attempts=_columns.attempts + 1, last_error=_describe(error))
                )
        except Exception:
            # The bus failure is what matters and is raised by the caller; the database may
            # be down as well.
            log.warning("could not record the failure of outbox row %s", row_id, exc_info=True)

    async def _purge(self) -> bool:
        """Delete one batch of rows published before the retention window; whether full."""
        cutoff = self._clock() - self._options.retention
        expired = (
            select(_columns.id)
            .where(_columns.published_at < cutoff)
            .limit(self._options.purge_batch_size)
        )
        async with self._database.engine.begin() as connection:
            result = await connection.execute(delete(_table).where(_columns.id.in_(expired)))
        deleted = cast("CursorResult[Any]", result).rowcount
        if deleted:
            log.debug("purged %d published outbox rows", deleted)
        return deleted >= self._options.purge_batch_size

    # -- helpers --

    def _read(self) -> contextlib.AbstractAsyncContextManager[AsyncConnection]:
        return _read_only(self._database.engine)

    def _failed(self, error: Exception, message: str) -> None:
        self._failures += 1
        self._last_error = _describe(error)
        self._last_error_at = self._clock()
        # The traceback once per streak; a Redis outage must not flood the log.
        log.warning(
            "%s (failure %d in a row): %s",
            message,
            self._failures,
            self._last_error,
            exc_info=error if self._failures == 1 else None,
        )

    def _backoff(self) -> float:
        base = self._options.backoff_base.total_seconds()
        cap = self._options.backoff_cap.total_seconds()
        ceiling = min(cap, base * 2.0 ** min(self._failures - 1, 32))
        # "Equal jitter": spread replicas apart but never retry at once.
        return ceiling / 2 + ceiling / 2 * self._jitter()

    async def _sleep(self, seconds: float) -> None:
        """Wait `seconds` or until `stop()`; notifications do not cut a backoff short."""
        await _wait(self._stopping, seconds)

    async def _wait_for_work(self) -> None:
        await _wait(self._wake, self._options.poll_interval.total_seconds())


@contextlib.asynccontextmanager
async def _read_only(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection for reads: on SQLite a deferred transaction, so the relay's polls never
    queue for the write lock behind (or ahead of) the service's own writers."""
    async with engine.connect() as connection:
        await connection.execution_options(**{_SQLITE_BEGIN_OPTION: "DEFERRED"})
        yield connection


async def _wait(event: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:_LAST_ERROR_MAX_CHARS]
