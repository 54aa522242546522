"""Composition root of the monitoring service: the one place its parts are created and wired.

`create_service(context)` is what the mesh calls. Nothing connects, reads a file or starts a
task before the server starts: `MonitoringApp.start` (an on_start hook) migrates, loads the
secret key, starts the session hub's inbox, the feed projection and the background checker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from opentelemetry import metrics

from gatehouse.monitoring.adapters.feed import BusFeedHeads, feed_consumer
from gatehouse.monitoring.adapters.heartbeats import HeartbeatBuffer
from gatehouse.monitoring.adapters.orm import MONITORING_VERSIONS_DIR
from gatehouse.monitoring.adapters.sessions import SessionHub
from gatehouse.monitoring.adapters.unit_of_work import SqlAlchemyMonitoringUnitOfWork
from gatehouse.monitoring.domain.sessions import SessionEnd
from gatehouse.monitoring.grpc_api import MonitoringServicer
from gatehouse.monitoring.handlers import maintenance
from gatehouse.monitoring.handlers.common import MonitoringDependencies
from gatehouse.monitoring.handlers.device_session import (
    SessionServices,
    session_replaced,
    shutting_down,
)
from gatehouse.monitoring.handlers.feed import FeedItemCache, FeedServices, StreamCounter
from gatehouse.monitoring.settings import MonitoringSettings, load_monitoring_settings
from gatehouse.monitoring.v1 import monitoring_pb2, monitoring_pb2_grpc
from gatehouse.runtime.consumers import ConsumerRunner, RunnerOptions
from gatehouse.runtime.secrets import KeyedSecretBox, resolve_secret_key
from gatehouse.runtime.server import ServiceDefinition
from gatehouse.runtime.service_context import ServiceContext, ServiceDatabase

log = logging.getLogger("gatehouse.monitoring")

Clock = Callable[[], datetime]
# How long stop() waits for session cleanups (unregister, offline) still running.
_CLEANUP_GRACE = timedelta(seconds=5)


def utc_now() -> datetime:
    return datetime.now(UTC)


class _Metrics:
    """Readings counters (the contract: rejected readings on a session show in metrics)."""

    def __init__(self, provider: metrics.MeterProvider | None) -> None:
        meter = (provider or metrics.get_meter_provider()).get_meter("gatehouse.monitoring")
        self._accepted = meter.create_counter(
            "monitoring.readings.accepted", unit="{reading}", description="Readings stored"
        )
        self._rejected = meter.create_counter(
            "monitoring.readings.rejected",
            unit="{reading}",
            description="Readings dropped as invalid or duplicate",
        )

    def readings_accepted(self, count: int) -> None:
        if count:
            self._accepted.add(count)

    def readings_rejected(self, count: int) -> None:
        if count:
            self._rejected.add(count)


class MonitoringApp:
    """The monitoring service's parts. Built by `create_service`; started by the server."""

    def __init__(
        self,
        context: ServiceContext,
        settings: MonitoringSettings,
        *,
        clock: Clock = utc_now,
        monotonic: Callable[[], float] = time.monotonic,
        secret_key: bytes | None = None,
        replica_id: str | None = None,
        consumer_options: RunnerOptions | None = None,
    ) -> None:
        self.context = context
        self.settings = settings
        self.clock = clock
        self.monotonic = monotonic
        self._secret_key = secret_key
        self._consumer_options = consumer_options
        self.database: ServiceDatabase = context.database(migrations=[MONITORING_VERSIONS_DIR])
        self.hub = SessionHub(
            context.kv,
            context.bus,
            session_ttl=settings.offline_after + settings.heartbeat_interval,
            refresh_every=settings.heartbeat_interval / 2,
            receipt_timeout=settings.command_receipt_timeout,
            queue_size=settings.outbound_queue_size,
            replaced_error=session_replaced,
            replica_id=replica_id,
            monotonic=monotonic,
        )
        self.heartbeats = HeartbeatBuffer()
        self._deps: MonitoringDependencies | None = None
        self._session_services: SessionServices | None = None
        self._feed_services: FeedServices | None = None
        self._runner: ConsumerRunner[SqlAlchemyMonitoringUnitOfWork] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._cleanups: set[asyncio.Task[None]] = set()

    # -- what the servicer uses --

    def uow(self) -> SqlAlchemyMonitoringUnitOfWork:
        return SqlAlchemyMonitoringUnitOfWork(
            self.database.database.sessionmaker, relay=self.database.relay
        )

    @property
    def deps(self) -> MonitoringDependencies:
        if self._deps is None:
            raise RuntimeError("the monitoring service has not started")
        return self._deps

    @property
    def sessions(self) -> SessionHub:
        return self.hub

    @property
    def session_services(self) -> SessionServices:
        if self._session_services is None:
            raise RuntimeError("the monitoring service has not started")
        return self._session_services

    @property
    def feed_services(self) -> FeedServices:
        if self._feed_services is None:
            raise RuntimeError("the monitoring service has not started")
        return self._feed_services

    # -- lifecycle --

    async def start(self) -> None:
        await self.database.start()
        try:
            await self._start_parts()
        except BaseException:
            await self.stop()
            raise

    async def _start_parts(self) -> None:
        key = self._secret_key
        if key is None:
            key = await asyncio.to_thread(self._load_key)
        self._deps = MonitoringDependencies(
            settings=self.settings,
            clock=self.clock,
            sealer=KeyedSecretBox(key),
            feed=BusFeedHeads(self.context.bus),
        )
        self._session_services = SessionServices(
            deps=self._deps,
            uow_factory=self.uow,
            sessions=self.hub,
            heartbeats=self.heartbeats,
            metrics=_Metrics(self.context.meter_provider),
            monotonic=self.monotonic,
            spawn=self._spawn,
        )
        self._feed_services = FeedServices(
            live=self.context.live,
            uow_factory=self.uow,
            cache=FeedItemCache(),
            streams=StreamCounter(self.settings.max_streams_per_caller),
            heartbeat_interval=self.settings.feed_heartbeat_interval,
            buffer_size=self.settings.feed_buffer_size,
            stopping=self.context.lifecycle.stopping,
        )
        await self.hub.start()
        self._runner = self.context.consumer_runner(
            feed_consumer(self.context.bus, self.uow), options=self._consumer_options
        )
        await self._runner.start()
        self._tasks = [
            asyncio.create_task(self._check_forever(), name="monitoring-checker"),
            asyncio.create_task(self._end_sessions_on_drain(), name="monitoring-drain"),
        ]

    def _load_key(self) -> bytes:
        return resolve_secret_key(
            value=self.settings.secret_key,
            file=self.settings.secret_key_file,
            default_file=self.context.settings.home / "keys" / "monitoring.key",
            what="the monitoring secret key",
        )

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for session in self.hub.local_sessions():
            session.end(SessionEnd.STOPPING, shutting_down())
        if self._cleanups:
            await asyncio.wait(set(self._cleanups), timeout=_CLEANUP_GRACE.total_seconds())
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.stop()
        await self.hub.stop()
        await self.database.stop()

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    async def _check_forever(self) -> None:
        state = maintenance.CheckerState()
        interval = self.settings.check_interval.total_seconds()
        while True:
            await asyncio.sleep(interval)
            await maintenance.check_once(self.session_services, state)

    async def _end_sessions_on_drain(self) -> None:
        # Devices reconnect to another replica; their state is left to heartbeats there.
        await self.context.lifecycle.stopping.wait()
        for session in self.hub.local_sessions():
            session.end(SessionEnd.STOPPING, shutting_down())


def create_monitoring(
    context: ServiceContext,
    *,
    settings: MonitoringSettings | None = None,
    clock: Clock = utc_now,
    monotonic: Callable[[], float] = time.monotonic,
    secret_key: bytes | None = None,
    replica_id: str | None = None,
    consumer_options: RunnerOptions | None = None,
) -> tuple[ServiceDefinition, MonitoringApp]:
    """The definition and the app behind it (tests and tools reach the app)."""
    app = MonitoringApp(
        context,
        settings or load_monitoring_settings(),
        clock=clock,
        monotonic=monotonic,
        secret_key=secret_key,
        replica_id=replica_id,
        consumer_options=consumer_options,
    )
    servicer = MonitoringServicer(app)
    definition = ServiceDefinition(
        name=context.name,
        descriptor=monitoring_pb2.DESCRIPTOR.services_by_name["MonitoringService"],
        on_start=(app.start,),
        on_stop=(app.stop,),
        register=partial(monitoring_pb2_grpc.add_MonitoringServiceServicer_to_server, servicer),
    )
    return definition, app


def create_service(context: ServiceContext) -> ServiceDefinition:
    return create_monitoring(context)[0]
