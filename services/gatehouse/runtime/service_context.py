"""What a service's composition root is given: settings and the process's shared parts."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from opentelemetry import metrics, trace

from gatehouse.runtime.backbone_metrics import ConsumerMetrics, OutboxMetrics, RuntimeGauges
from gatehouse.runtime.bus import EventBus, GroupEventBus
from gatehouse.runtime.config import ServiceName, Settings
from gatehouse.runtime.consumers import Consumer, ConsumerRunner, RunnerOptions
from gatehouse.runtime.db import Database, SqlAlchemyUnitOfWork, migrate
from gatehouse.runtime.kv import KeyValueStore
from gatehouse.runtime.live import LiveHub
from gatehouse.runtime.outbox import OutboxRelay, RelayOptions
from gatehouse.runtime.server import Lifecycle

log = logging.getLogger("gatehouse.db")

U = TypeVar("U", bound=SqlAlchemyUnitOfWork)


class ServiceDatabase:
    """A service's database with its start/stop hooks: migrate (embedded mode), ping, start
    the outbox relay; on stop, stop the relay, dispose.

    With a `bus`, the database gets an `OutboxRelay` publishing its outbox there; pass
    `relay` to the service's `OutboxUnitOfWork` so commits wake it.
    """

    def __init__(
        self,
        url: str,
        *,
        migrations: Sequence[Path] = (),
        migrate_on_start: bool = True,
        bus: EventBus | None = None,
        relay_options: RelayOptions | None = None,
        name: str = "",
        gauges: RuntimeGauges | None = None,
    ) -> None:
        """`name` labels the database's metrics (the service's name); `gauges` are the
        process's (a private set when None)."""
        gauges = gauges or RuntimeGauges()
        self.database = Database(url)
        self._url = url
        self._migrations = tuple(migrations)
        self._migrate_on_start = migrate_on_start
        self.relay: OutboxRelay | None = (
            None
            if bus is None
            else OutboxRelay(
                self.database, bus, relay_options, metrics=OutboxMetrics(name, gauges=gauges)
            )
        )
        pool = self.database.engine.sync_engine.pool
        checked_out = getattr(pool, "checkedout", None)
        if callable(checked_out):  # SQLite's single-connection pools have no count
            gauges.pool(name, checked_out)

    async def start(self) -> None:
        if self._migrate_on_start:
            await migrate(self._url, self._migrations)
            log.info("migrated %r", self.database)
        # A service that cannot reach its database must not report SERVING.
        await self.database.ping()
        # Last: the relay needs the outbox table, and a failed start must leave no task.
        if self.relay is not None:
            await self.relay.start()

    async def stop(self) -> None:
        try:
            if self.relay is not None:
                # Before dispose, so its last round can still mark what it published.
                await self.relay.stop()
        finally:
            await self.database.dispose()


@dataclass(frozen=True)
class ServiceContext:
    name: ServiceName
    settings: Settings
    lifecycle: Lifecycle
    kv: KeyValueStore
    bus: GroupEventBus
    live: LiveHub
    # The process's OpenTelemetry providers (the mesh's); None: the global ones.
    tracer_provider: trace.TracerProvider | None = None
    meter_provider: metrics.MeterProvider | None = None
    # The process's runtime gauges (one set for all its databases); None: a private set.
    gauges: RuntimeGauges | None = None

    def consumer_runner(
        self, consumer: Consumer[U], *, options: RunnerOptions | None = None
    ) -> ConsumerRunner[U]:
        """A runner for one of this service's consumers on the process's bus, tracing and
        counting through the process's providers."""
        return ConsumerRunner(
            self.bus,
            consumer,
            options=options,
            tracer_provider=self.tracer_provider,
            metrics=ConsumerMetrics(consumer.name, self.meter_provider),
        )

    @property
    def database_url(self) -> str:
        return self.settings.database_url_for(self.name)

    def database(
        self, migrations: Sequence[Path] = (), *, outbox_relay: bool = True
    ) -> ServiceDatabase:
        """This service's database; `migrations` are its own Alembic version folders (the
        runtime's chain is always included). With `outbox_relay`, its outbox is published
        to this process's bus (one relay per database wins, see `OutboxRelay`)."""
        return ServiceDatabase(
            self.database_url,
            migrations=migrations,
            migrate_on_start=self.settings.migrate_on_start,
            bus=self.bus if outbox_relay else None,
            name=self.name,
            gauges=self.gauges,
        )
