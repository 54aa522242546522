"""Composition root of the payments service: the one place its parts are created and wired.

`create_service(context)` is what the mesh calls. Nothing connects or starts before the
server does: `PaymentsApp.start` (an on_start hook) migrates and opens the database (with its
outbox relay) and starts the reconciler; `stop` ends the reconciler first, then the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from functools import partial

from gatehouse.clients.channel import ChannelFactory, ClientCredentials
from gatehouse.payments.adapters.orm import PAYMENTS_VERSIONS_DIR
from gatehouse.payments.adapters.payers import GrpcPayerDirectory
from gatehouse.payments.adapters.sandbox import SandboxProvider
from gatehouse.payments.adapters.unit_of_work import SqlAlchemyPaymentsUnitOfWork
from gatehouse.payments.grpc_api import PaymentsServicer
from gatehouse.payments.handlers.common import PaymentsDeps, utc_now
from gatehouse.payments.handlers.ports import Clock, PayerDirectory, PaymentProvider
from gatehouse.payments.handlers.reconcile import reconcile_once
from gatehouse.payments.settings import PaymentsSettings, load_payments_settings
from gatehouse.payments.v1 import payments_pb2, payments_pb2_grpc
from gatehouse.runtime.server import ServiceDefinition
from gatehouse.runtime.service_context import ServiceContext, ServiceDatabase

log = logging.getLogger("gatehouse.payments")


class PaymentsApp:
    """The payments service's parts. Built by `create_service`; started by the server."""

    def __init__(
        self,
        context: ServiceContext,
        settings: PaymentsSettings,
        *,
        provider: PaymentProvider | None = None,
        payers: PayerDirectory | None = None,
        clock: Clock = utc_now,
        outbox_relay: bool = True,
        reconciler: bool = True,
    ) -> None:
        """`outbox_relay=False` for tools (the CLI) beside a running service, whose relay
        publishes what they commit; `reconciler=False` for tools and tests that drive
        `reconcile()` themselves."""
        self.context = context
        self.settings = settings
        self.provider: PaymentProvider = provider or SandboxProvider()
        self.database: ServiceDatabase = context.database(
            migrations=[PAYMENTS_VERSIONS_DIR], outbox_relay=outbox_relay
        )
        self._own_payers = payers is None
        self.payers: PayerDirectory = payers or GrpcPayerDirectory(
            self._auth_channels, context.settings.target_of("auth")
        )
        self.deps = PaymentsDeps(
            provider=self.provider,
            payers=self.payers,
            clock=clock,
            provider_timeout=settings.provider_timeout,
            idempotency_ttl=settings.idempotency_ttl,
            reconcile_after=settings.reconcile_after,
            heartbeat_interval=settings.watch_heartbeat,
            enabled_currencies=settings.enabled_currencies,
        )
        self._run_reconciler = reconciler
        self._reconciler: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    def _auth_channels(self) -> ChannelFactory:
        # Read when auth is first asked (a payment for someone else), never at construction.
        settings = self.context.settings
        return ChannelFactory(ClientCredentials.from_directory(settings.certificates, "payments"))

    def uow(self) -> SqlAlchemyPaymentsUnitOfWork:
        return SqlAlchemyPaymentsUnitOfWork(
            self.database.database.sessionmaker, relay=self.database.relay
        )

    def servicer(self) -> PaymentsServicer:
        return PaymentsServicer(
            self.uow, lambda: self.deps, self.context.live, self.context.lifecycle.stopping
        )

    def definition(self) -> ServiceDefinition:
        servicer = self.servicer()
        return ServiceDefinition(
            name=self.context.name,
            descriptor=payments_pb2.DESCRIPTOR.services_by_name["PaymentsService"],
            on_start=(self.start,),
            on_stop=(self.stop,),
            register=partial(payments_pb2_grpc.add_PaymentsServiceServicer_to_server, servicer),
        )

    # -- lifecycle --

    async def start(self) -> None:
        await self.database.start()
        if self._run_reconciler:
            self._stopping.clear()
            self._reconciler = asyncio.get_running_loop().create_task(
                self._reconcile_forever(), name="payments-reconciler"
            )

    async def stop(self) -> None:
        self._stopping.set()
        task, self._reconciler = self._reconciler, None
        try:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        finally:
            if self._own_payers and isinstance(self.payers, GrpcPayerDirectory):
                await self.payers.close()
            await self.database.stop()

    async def reconcile(self) -> None:
        """One reconciler round (what the background task does every interval)."""
        report = await reconcile_once(self.uow(), self.deps, limit=self.settings.reconcile_batch)
        if report.charges_settled or report.refunds_settled or report.still_unknown:
            log.info(
                "reconciler: %d charges and %d refunds settled, %d still unknown",
                report.charges_settled,
                report.refunds_settled,
                report.still_unknown,
            )

    async def _reconcile_forever(self) -> None:
        interval = self.settings.reconcile_interval.total_seconds()
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._stopping.wait()
            if self._stopping.is_set():
                return
            try:
                await self.reconcile()
            except Exception:
                # A database or provider outage: the next round tries again.
                log.exception("reconciler round failed")


def create_payments(
    context: ServiceContext, settings: PaymentsSettings | None = None
) -> PaymentsApp:
    return PaymentsApp(context, settings or load_payments_settings())


def create_service(context: ServiceContext) -> ServiceDefinition:
    return create_payments(context).definition()
