"""Composition root of the access service: the one place its parts are created and wired.

`create_service(context)` is what the mesh calls. Nothing connects, reads a file or starts a
task before the server starts: `AccessApp.start` (an on_start hook) migrates, loads the secret
key, opens the channel to monitoring (with access's own mTLS identity) and starts the
consumer that locks buildings down on alerts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from functools import partial
from typing import Any

import grpc

from gatehouse.access.adapters.consumer import alert_consumer
from gatehouse.access.adapters.monitoring import MonitoringClient
from gatehouse.access.adapters.orm import ACCESS_VERSIONS_DIR
from gatehouse.access.adapters.unit_of_work import SqlAlchemyAccessUnitOfWork
from gatehouse.access.domain.lockout import LockoutPolicy
from gatehouse.access.domain.pins import PinHasher, PinPolicy
from gatehouse.access.grpc_api import AccessServicer
from gatehouse.access.handlers.common import AccessDeps
from gatehouse.access.handlers.door_hours import DoorHoursReport, check_door_hours
from gatehouse.access.handlers.ports import AnyPerson, Clock, Directory, DoorCommands, People
from gatehouse.access.settings import AccessSettings, load_access_settings
from gatehouse.access.v1 import access_pb2, access_pb2_grpc
from gatehouse.clients.channel import ChannelFactory, ClientCredentials
from gatehouse.runtime.consumers import ConsumerRunner, RunnerOptions
from gatehouse.runtime.secrets import derive_key, resolve_secret_key
from gatehouse.runtime.server import ServiceDefinition
from gatehouse.runtime.service_context import ServiceContext, ServiceDatabase

log = logging.getLogger("gatehouse.access")


def utc_now() -> datetime:
    return datetime.now(UTC)


class AccessApp:
    """The access service's parts. Built by `create_service`; started by the server."""

    def __init__(
        self,
        context: ServiceContext,
        settings: AccessSettings,
        *,
        clock: Clock = utc_now,
        secret_key: bytes | None = None,
        directory: Directory | None = None,
        doors: DoorCommands | None = None,
        people: People | None = None,
        monitoring_channel: Callable[[], grpc.aio.Channel] | None = None,
        consumer_options: RunnerOptions | None = None,
        consume_alerts: bool = True,
        door_hours: bool = True,
    ) -> None:
        """`directory`/`doors` default to monitoring over gRPC (`monitoring_channel`, else
        mTLS as `access` to the configured target); tests inject fakes or a channel.
        `consume_alerts=False` / `door_hours=False` for tools and tests that drive them."""
        self.context = context
        self.settings = settings
        self.clock = clock
        self._secret_key = secret_key
        self._directory = directory
        self._doors = doors
        self._people: People = people or AnyPerson()
        self._monitoring_channel = monitoring_channel
        self._consumer_options = consumer_options
        self._consume_alerts = consume_alerts
        self._run_door_hours = door_hours
        self._door_hours: asyncio.Task[None] | None = None
        self.database: ServiceDatabase = context.database(migrations=[ACCESS_VERSIONS_DIR])
        self._deps: AccessDeps | None = None
        self._monitoring: MonitoringClient | None = None
        self._runner: ConsumerRunner[SqlAlchemyAccessUnitOfWork] | None = None
        self._background: set[asyncio.Task[None]] = set()

    # -- what the servicer uses --

    def uow(self) -> SqlAlchemyAccessUnitOfWork:
        return SqlAlchemyAccessUnitOfWork(
            self.database.database.sessionmaker, relay=self.database.relay, spawn=self._spawn
        )

    @property
    def deps(self) -> AccessDeps:
        if self._deps is None:
            raise RuntimeError("the access service has not started")
        return self._deps

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
        directory, doors = self._directory, self._doors
        if directory is None or doors is None:
            self._monitoring = MonitoringClient(
                self._monitoring_channel or self._default_channel,
                self.context.live,
                ttl=self.settings.directory_cache_ttl,
                miss_ttl=self.settings.directory_miss_ttl,
            )
            directory = directory or self._monitoring
            doors = doors or self._monitoring
        self._deps = AccessDeps(
            clock=self.clock,
            pins=PinHasher(derive_key(key, "access-pins")),
            pin_policy=PinPolicy(self.settings.pin_length),
            lockout=LockoutPolicy(
                self.settings.lockout_max_failures,
                self.settings.lockout_window,
                self.settings.lockout_duration,
            ),
            directory=directory,
            people=self._people,
            secret_key=derive_key(key, "access-pages"),
            doors=doors,
            kv=self.context.kv,
            idempotency_ttl=self.settings.idempotency_ttl,
            command_timeout=self.settings.command_timeout,
            max_invitation_failures=self.settings.max_invitation_failures,
            write_gate=asyncio.Lock() if self.database.database.dialect_name == "sqlite" else None,
        )
        if self._consume_alerts:
            self._runner = self.context.consumer_runner(
                alert_consumer(self.uow, lambda: self.deps), options=self._consumer_options
            )
            await self._runner.start()
        if self._run_door_hours:
            self._door_hours = asyncio.create_task(
                self._door_hours_forever(), name="access-door-hours"
            )

    async def check_door_hours(self) -> DoorHoursReport:
        """One round of business hours (what the background task does every interval)."""
        return await check_door_hours(self.uow, self.deps)

    async def _door_hours_forever(self) -> None:
        interval = self.settings.door_hours_interval.total_seconds()
        while True:
            await asyncio.sleep(interval)
            try:
                await self.check_door_hours()
            except Exception:
                # Monitoring or the database is away: the next round tries again.
                log.exception("door hours round failed")

    def _default_channel(self) -> grpc.aio.Channel:
        settings = self.context.settings
        # Ours, else the mesh's `GATEHOUSE_MONITORING_TARGET`, else the local port.
        target = self.settings.monitoring_target or settings.target_of("monitoring")
        factory = ChannelFactory(ClientCredentials.from_directory(settings.certificates, "access"))
        return factory.channel(target)

    def _load_key(self) -> bytes:
        return resolve_secret_key(
            value=self.settings.secret_key,
            file=self.settings.secret_key_file,
            default_file=self.context.settings.home / "keys" / "access.key",
            what="the access secret key",
        )

    async def stop(self) -> None:
        door_hours, self._door_hours = self._door_hours, None
        if door_hours is not None:
            door_hours.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await door_hours
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.stop()
        background, self._background = self._background, set()
        for task in background:
            task.cancel()
        for task in background:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        monitoring, self._monitoring = self._monitoring, None
        if monitoring is not None:
            await monitoring.close()
        await self.database.stop()

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background work failed: %r", task.exception())


def create_access(
    context: ServiceContext,
    *,
    settings: AccessSettings | None = None,
    **options: Any,
) -> tuple[ServiceDefinition, AccessApp]:
    """The definition and the app behind it (tests and tools reach the app)."""
    app = AccessApp(context, settings or load_access_settings(), **options)
    servicer = AccessServicer(app)
    definition = ServiceDefinition(
        name=context.name,
        descriptor=access_pb2.DESCRIPTOR.services_by_name["AccessService"],
        on_start=(app.start,),
        on_stop=(app.stop,),
        register=partial(access_pb2_grpc.add_AccessServiceServicer_to_server, servicer),
    )
    return definition, app


def create_service(context: ServiceContext) -> ServiceDefinition:
    return create_access(context)[0]
