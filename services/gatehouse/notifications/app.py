"""Composition root of the notifications service: the one place its parts are created and wired.

`create_service(context)` is what the mesh calls. Nothing connects, listens or starts before
the server does: `NotificationsApp.start` (an on_start hook) migrates the database (and
starts its outbox relay), seeds the default templates, starts the development mail sink when
configured, the event consumers and the delivery worker; `stop` ends them in reverse order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from gatehouse.clients.channel import ChannelFactory, ClientCredentials
from gatehouse.notifications.adapters.cache import KeyValueTemplateCache
from gatehouse.notifications.adapters.directory import GrpcUserDirectory
from gatehouse.notifications.adapters.orm import NOTIFICATIONS_VERSIONS_DIR
from gatehouse.notifications.adapters.quota import KeyValueSendQuota
from gatehouse.notifications.adapters.senders import (
    ChannelSenders,
    FileOutboxSender,
    SmtpOptions,
    SmtpSender,
    WebhookSender,
    WebhookTarget,
)
from gatehouse.notifications.adapters.sink import MailSink
from gatehouse.notifications.adapters.unit_of_work import SqlAlchemyNotificationsUnitOfWork
from gatehouse.notifications.domain.addresses import AddressRules, Channel
from gatehouse.notifications.domain.defaults import DEFAULT_TEMPLATES
from gatehouse.notifications.domain.notifications import RateLimit, RetryPolicy
from gatehouse.notifications.grpc_api import NotificationsServicer
from gatehouse.notifications.handlers.common import NotificationsDeps, utc_now
from gatehouse.notifications.handlers.delivery import RoundReport, WorkerOptions, deliver_due
from gatehouse.notifications.handlers.events import EventMessages, build_consumer
from gatehouse.notifications.handlers.ports import Clock, Senders, UserDirectory
from gatehouse.notifications.handlers.retention import RetentionOptions, SweepReport, sweep
from gatehouse.notifications.handlers.templates import seed_templates
from gatehouse.notifications.settings import NotificationsSettings, load_notifications_settings
from gatehouse.notifications.v1 import notifications_pb2, notifications_pb2_grpc
from gatehouse.runtime.consumers import ConsumerRunner, RunnerOptions
from gatehouse.runtime.server import ServiceDefinition
from gatehouse.runtime.service_context import ServiceContext, ServiceDatabase

log = logging.getLogger("gatehouse.notifications")


def mail_directory(home: Path) -> Path:
    """Where the development sink keeps what it received (`gatehouse mail` reads it)."""
    return home / "mail"


class NotificationsApp:
    """The notifications service's parts. Built by `create_service`; started by the server."""

    def __init__(
        self,
        context: ServiceContext,
        settings: NotificationsSettings,
        *,
        directory: UserDirectory | None = None,
        senders: Senders | None = None,
        clock: Clock = utc_now,
        outbox_relay: bool = True,
        worker: bool | None = None,
        consumers: bool | None = None,
        consumer_options: RunnerOptions | None = None,
        rng: random.Random | None = None,
    ) -> None:
        """`worker=False`/`consumers=False` for tools and tests that drive `deliver()`
        themselves; None follows the settings."""
        self.context = context
        self.settings = settings
        self.embedded = context.settings.redis_url is None
        self.database: ServiceDatabase = context.database(
            migrations=[NOTIFICATIONS_VERSIONS_DIR], outbox_relay=outbox_relay
        )
        self.directory: UserDirectory = directory or GrpcUserDirectory(
            self._auth_channels,
            context.settings.target_of("auth"),
            timeout=settings.auth_timeout.total_seconds(),
        )
        self.senders: Senders = senders or self._default_senders()
        self.sink: MailSink | None = None
        if settings.mail_sink if settings.mail_sink is not None else self.embedded:
            self.sink = MailSink(
                settings.smtp_host, settings.smtp_port, mail_directory(context.settings.home)
            )
        self._wake = asyncio.Event()
        loopback = settings.webhook_allow_loopback_http
        self.deps = NotificationsDeps(
            directory=self.directory,
            cache=KeyValueTemplateCache(context.kv, settings.template_cache_ttl),
            send_quota=KeyValueSendQuota(context.kv, settings.send_quota_per_minute),
            address_rules=AddressRules(
                webhook_hosts=frozenset(settings.webhook_allowed_hosts),
                allow_loopback_http=loopback if loopback is not None else self.embedded,
            ),
            clock=clock,
            idempotency_ttl=settings.idempotency_ttl,
            max_fanout=settings.max_fanout,
            max_held_per_recipient=settings.max_held_per_recipient,
            rate_limit=RateLimit(settings.rate_limit_count, settings.rate_limit_window),
            retry=RetryPolicy(
                max_attempts=settings.retry_max_attempts,
                first_backoff=settings.retry_first_backoff,
                max_backoff=settings.retry_max_backoff,
            ),
            heartbeat_interval=settings.watch_heartbeat,
            watch_poll_interval=settings.watch_poll_interval,
            wake=self._wake.set,
            rng=rng or random.Random(),  # noqa: S311 - jitter, not secrets
        )
        self.worker_options = WorkerOptions(
            owner=f"{socket.gethostname()}:{os.getpid()}:{id(self):x}",
            batch_size=settings.worker_batch,
            concurrency=settings.worker_concurrency,
            send_timeout=settings.send_timeout,
        )
        self._run_worker = settings.worker if worker is None else worker
        self._run_consumers = settings.consumers if consumers is None else consumers
        self._consumer_options = consumer_options
        self._runner: ConsumerRunner[SqlAlchemyNotificationsUnitOfWork] | None = None
        self.retention_options = RetentionOptions(
            retention=settings.retention, batch=settings.retention_batch
        )
        self._worker: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    # -- wiring --

    def _auth_channels(self) -> ChannelFactory:
        # Read when auth is first asked, never at import or construction time.
        return ChannelFactory(
            ClientCredentials.from_directory(self.context.settings.certificates, "notifications")
        )

    def _default_senders(self) -> ChannelSenders:
        s = self.settings
        home = self.context.settings.home
        outbox = s.webhook_outbox_dir or (home / "outbox" if self.embedded else None)
        senders: dict[Channel, object] = {
            Channel.EMAIL: SmtpSender(
                SmtpOptions(
                    host=s.smtp_host,
                    port=s.smtp_port,
                    security=s.smtp_security,
                    username=s.smtp_username,
                    password=s.smtp_password.get_secret_value(),
                    sender=s.smtp_sender,
                    timeout=s.smtp_timeout,
                    message_id_domain=s.message_id_domain,
                    validate_certs=s.smtp_validate_certs,
                    ca_file=s.smtp_ca_file,
                )
            )
        }
        gateways = (
            (Channel.SMS, s.sms_gateway_url, s.sms_gateway_secret),
            (Channel.WHATSAPP, s.whatsapp_gateway_url, s.whatsapp_gateway_secret),
            (Channel.PUSH, s.push_gateway_url, s.push_gateway_secret),
        )
        for channel, url, secret in gateways:
            if url:
                senders[channel] = WebhookSender(
                    channel,
                    WebhookTarget(url, secret.get_secret_value().encode()),
                    timeout=s.webhook_timeout,
                )
            elif outbox is not None:
                senders[channel] = FileOutboxSender(
                    channel, outbox / channel.value.lower(), secret.get_secret_value().encode()
                )
        for channel in (Channel.CHAT, Channel.WEBHOOK):
            senders[channel] = WebhookSender(
                channel,
                WebhookTarget("", s.webhook_secret.get_secret_value().encode()),
                timeout=s.webhook_timeout,
            )
        return ChannelSenders(senders)  # type: ignore[arg-type]

    def uow(self) -> SqlAlchemyNotificationsUnitOfWork:
        return SqlAlchemyNotificationsUnitOfWork(
            self.database.database.sessionmaker, relay=self.database.relay
        )

    def servicer(self) -> NotificationsServicer:
        return NotificationsServicer(
            self.uow, lambda: self.deps, self.context.live, self.context.lifecycle.stopping
        )

    def definition(self) -> ServiceDefinition:
        return ServiceDefinition(
            name=self.context.name,
            descriptor=notifications_pb2.DESCRIPTOR.services_by_name["NotificationsService"],
            on_start=(self.start,),
            on_stop=(self.stop,),
            register=partial(
                notifications_pb2_grpc.add_NotificationsServiceServicer_to_server,
                self.servicer(),
            ),
        )

    # -- lifecycle --

    async def start(self) -> None:
        await self.database.start()
        try:
            await seed_templates(self.uow(), self.deps, DEFAULT_TEMPLATES)
            if self.sink is not None:
                try:
                    await self.sink.start()
                except OSError as error:
                    # Another process (a second `gatehouse up`, a real MTA) has the port: mail
                    # goes to whatever listens there, or waits and retries. Not worth failing
                    # the whole mesh over a development convenience.
                    log.warning(
                        "mail sink not started on %s:%d (%s); email goes to whatever listens there",
                        self.settings.smtp_host,
                        self.settings.smtp_port,
                        error.strerror,
                    )
                    self.sink = None
            if self._run_consumers:
                self._runner = self.context.consumer_runner(
                    build_consumer(
                        self.uow,
                        EventMessages(
                            deps=lambda: self.deps,
                            oncall_role=self.settings.oncall_role,
                            emergency_role=self.settings.emergency_role,
                            password_reset_url=self.settings.password_reset_url,
                        ),
                    ),
                    options=self._consumer_options,
                )
                await self._runner.start()
            if self._run_worker:
                self._stopping.clear()
                self._worker = asyncio.get_running_loop().create_task(
                    self._deliver_forever(), name="notifications-worker"
                )
                self._sweeper = asyncio.get_running_loop().create_task(
                    self._sweep_forever(), name="notifications-retention"
                )
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        tasks = [t for t in (self._worker, self._sweeper) if t is not None]
        self._worker = self._sweeper = None
        try:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            runner, self._runner = self._runner, None
            if runner is not None:
                await runner.stop()
            if self.sink is not None:
                await self.sink.stop()
            close = getattr(self.senders, "aclose", None)
            if close is not None:
                await close()
            close_directory: Callable[[], object] | None = getattr(self.directory, "close", None)
            if close_directory is not None:
                result = close_directory()
                if asyncio.iscoroutine(result):
                    await result
        finally:
            await self.database.stop()

    async def deliver(self) -> RoundReport:
        """One worker round (what the background task does whenever woken or every interval)."""
        return await deliver_due(self.uow, self.deps, self.senders, self.worker_options)

    async def sweep(self) -> SweepReport:
        """One retention sweep (what the background task does every `retention_sweep_interval`)."""
        return await sweep(self.uow, self.deps, self.retention_options)

    async def _sweep_forever(self) -> None:
        interval = self.settings.retention_sweep_interval.total_seconds()
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._stopping.wait()
            if self._stopping.is_set():
                return
            try:
                await self.sweep()
            except Exception:
                # The database is away: what is past retention waits for the next sweep.
                log.warning("retention sweep failed", exc_info=True)

    async def _deliver_forever(self) -> None:
        interval = self.settings.worker_interval.total_seconds()
        while not self._stopping.is_set():
            self._wake.clear()
            started = time.monotonic()
            try:
                report = await self.deliver()
            except Exception:
                # A database outage: the next round tries again.
                log.exception("delivery round failed")
                report = RoundReport()
            if report.claimed + report.held + report.lost >= self.worker_options.batch_size:
                # A full batch: there may be more waiting; go again at once.
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, interval - (time.monotonic() - started))):
                    await self._wake.wait()


def create_notifications(
    context: ServiceContext, settings: NotificationsSettings | None = None
) -> NotificationsApp:
    return NotificationsApp(context, settings or load_notifications_settings())


def create_service(context: ServiceContext) -> ServiceDefinition:
    return create_notifications(context).definition()
