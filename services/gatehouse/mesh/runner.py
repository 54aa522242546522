"""Start, run and stop a set of services in this process."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from opentelemetry import trace

from gatehouse.mesh.catalog import certificate_identities, composition_root
from gatehouse.runtime.authorization import BusDenialAudit
from gatehouse.runtime.backbone_metrics import RuntimeGauges
from gatehouse.runtime.config import ServiceName, Settings
from gatehouse.runtime.identity import (
    JwksTokenVerifier,
    KeyValueKeySource,
    KeyValueRevocationList,
    TokenVerifier,
)
from gatehouse.runtime.infrastructure import SharedInfrastructure
from gatehouse.runtime.metrics import MetricsEndpoint
from gatehouse.runtime.server import HealthEndpoint, Lifecycle, ServiceServer
from gatehouse.runtime.service_context import ServiceContext
from gatehouse.runtime.tls import CertificatePaths, ensure_dev_certificates, server_credentials

log = logging.getLogger("gatehouse.mesh")


class CertificatesMissingError(Exception):
    """Production certificates are absent; we never invent them outside the dev home."""


def certificate_paths(settings: Settings, name: str) -> CertificatePaths:
    """The identity's certificate files; in dev mode (no GATEHOUSE_CERTS_DIR) create them."""
    if settings.certs_dir is None:
        return ensure_dev_certificates(settings.certificates, certificate_identities())[name]
    paths = CertificatePaths.for_name(settings.certs_dir, name)
    if not paths.exists():
        raise CertificatesMissingError(
            f"certificate files for '{name}' not found in {settings.certs_dir} "
            f"(need ca.pem, {name}.pem, {name}-key.pem)"
        )
    return paths


class Mesh:
    """Several ServiceServers in one process, started and stopped together."""

    def __init__(
        self,
        settings: Settings,
        services: Sequence[ServiceName],
        *,
        tracer_provider: trace.TracerProvider,
        token_verifier: TokenVerifier | None = None,
        ports: dict[ServiceName, int] | None = None,
        process_name: str = "gatehouse",
    ) -> None:
        settings.check_one_database_each(services)
        self.settings = settings
        self.lifecycle = Lifecycle()
        self.infrastructure = SharedInfrastructure.from_settings(settings)
        self.metrics = (
            MetricsEndpoint(process_name, host=settings.host, port=settings.metrics_port)
            if settings.metrics_enabled
            else None
        )
        self.health = (
            HealthEndpoint(settings.host, settings.health_port)
            if settings.health_port is not None
            else None
        )
        verifier = token_verifier or JwksTokenVerifier(
            KeyValueKeySource(self.infrastructure.kv),
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            revocations=KeyValueRevocationList(self.infrastructure.kv),
        )
        ports = ports or {}
        gauges = RuntimeGauges(self.metrics.meter_provider if self.metrics else None)
        self.servers: dict[ServiceName, ServiceServer] = {}
        for name in services:
            context = ServiceContext(
                name=name,
                settings=settings,
                lifecycle=self.lifecycle,
                kv=self.infrastructure.kv,
                bus=self.infrastructure.bus,
                live=self.infrastructure.live,
                tracer_provider=tracer_provider,
                meter_provider=self.metrics.meter_provider if self.metrics else None,
                gauges=gauges,
            )
            definition = composition_root(name)(context)
            self.servers[name] = ServiceServer(
                definition,
                credentials=server_credentials(certificate_paths(settings, name)),
                token_verifier=verifier,
                tracer_provider=tracer_provider,
                host=settings.host,
                port=ports.get(name, settings.port_of(name)),
                lifecycle=self.lifecycle,
                metrics=self.metrics.rpc if self.metrics else None,
                # A service with its own audit (auth stores denials itself) keeps it; the
                # others publish theirs for auth's audit trail.
                denial_audit=None
                if definition.denial_audit
                else BusDenialAudit(self.infrastructure.bus, name),
            )

    async def start(self) -> dict[ServiceName, int]:
        await self.infrastructure.start()
        if self.metrics is not None:
            self.metrics.start()
        started: list[ServiceServer] = []
        try:
            if self.health is not None:
                # Bound first (a probe finds the port and NOT_SERVING while services start).
                await self.health.start()
            for server in self.servers.values():
                await server.start()
                started.append(server)
        except BaseException:
            # A half-started mesh must not leave ports bound or connections open behind it.
            await asyncio.gather(*(s.stop(0) for s in started), return_exceptions=True)
            if self.health is not None:
                await self.health.stop()
            await self.infrastructure.close()
            if self.metrics is not None:
                self.metrics.stop()
            raise
        if self.health is not None:
            await self.health.serving(server.full_name for server in self.servers.values())
        return {name: server.port for name, server in self.servers.items()}

    async def stop(self, grace: float | None = None) -> None:
        grace = self.settings.shutdown_grace_seconds if grace is None else grace
        if self.health is not None:
            await self.health.draining()
        await asyncio.gather(*(server.stop(grace) for server in self.servers.values()))
        if self.health is not None:
            await self.health.stop()
        await self.infrastructure.close()
        if self.metrics is not None:
            self.metrics.stop()


class Companion(Protocol):
    """A process that runs beside the services (the Envoy edge): started once they serve,
    drained before them, stopped after them."""

    async def start(self, upstream_ports: Mapping[ServiceName, int]) -> None: ...

    async def drain(self) -> None: ...

    async def stop(self) -> None: ...

    async def wait(self) -> int: ...


async def run_until_signalled(
    mesh: Mesh,
    on_ready: Callable[[dict[ServiceName, int]], None],
    companions: Sequence[Companion] = (),
) -> int:
    """Serve until SIGTERM or SIGINT, then drain gracefully and return 0. A companion that
    exits on its own stops everything the same way, and the result is 1."""
    loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop_requested.set)
    started: list[Companion] = []
    try:
        ports = await mesh.start()
        try:
            for companion in companions:
                await companion.start(ports)
                started.append(companion)
        except BaseException:
            await asyncio.gather(*(c.stop() for c in started), return_exceptions=True)
            await mesh.stop(0)
            raise
        on_ready(ports)
        stop = asyncio.ensure_future(stop_requested.wait())
        exits = [asyncio.ensure_future(companion.wait()) for companion in started]
        await asyncio.wait([stop, *exits], return_when=asyncio.FIRST_COMPLETED)
        failed = [task.result() for task in exits if task.done() and not stop.done()]
        for task in (stop, *exits):
            task.cancel()
        if failed:
            log.error("a companion process exited with code %s; stopping", failed[0])
        log.info("stop requested; draining for up to %ss", mesh.settings.shutdown_grace_seconds)
        await asyncio.gather(*(c.drain() for c in started))
        await mesh.stop()
        return 1 if failed else 0
    finally:
        # Also on errors and cancellation: a companion must never outlive this process.
        await asyncio.gather(*(c.stop() for c in started), return_exceptions=True)
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
