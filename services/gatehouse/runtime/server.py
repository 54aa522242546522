"""The one server bootstrap every service uses.

A `ServiceDefinition` says what a service is (its proto service, how to register its
servicer, its extra validators, what to do on start and stop); `ServiceServer` runs it on a
grpc.aio server with mTLS, health, reflection and the standard interceptor chain.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry import trace

from gatehouse.runtime.authorization import (
    AuthorizationInterceptor,
    DenialAudit,
    LogDenialAudit,
)
from gatehouse.runtime.error_mapping import ErrorMappingInterceptor
from gatehouse.runtime.errors import Unimplemented
from gatehouse.runtime.identity import AuthenticationInterceptor, TokenVerifier
from gatehouse.runtime.metrics import RpcMetrics
from gatehouse.runtime.telemetry import TracingInterceptor
from gatehouse.runtime.validation import MethodValidator, ValidationInterceptor

log = logging.getLogger("gatehouse.server")

Hook = Callable[[], Awaitable[None]]
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
# Large enough for batched readings and template bodies, small enough to bound memory.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class ServiceDefinition:
    """What one service contributes to a server. Built by the service's composition root."""

    name: str
    descriptor: ServiceDescriptor
    register: Callable[[grpc.aio.Server], None]
    validators: Mapping[str, Sequence[MethodValidator]] = field(default_factory=dict)
    on_start: Sequence[Hook] = ()
    on_stop: Sequence[Hook] = ()
    # Where this service's access-rule denials are recorded (auth keeps them in its audit
    # trail); None: structured log records. A `denial_audit` given to the server wins.
    denial_audit: DenialAudit | None = None


class Lifecycle:
    """Shared with handlers so long-lived streams can end themselves when the server drains.

    grpc.aio's `stop(grace)` cancels what is still running when the grace ends; a stream that
    watches `stopping` can instead send its last message and end cleanly.
    """

    def __init__(self) -> None:
        self.stopping = asyncio.Event()


class ServiceServer:
    def __init__(
        self,
        definition: ServiceDefinition,
        *,
        credentials: grpc.ServerCredentials,
        token_verifier: TokenVerifier,
        tracer_provider: trace.TracerProvider,
        host: str = "127.0.0.1",
        port: int = 0,
        lifecycle: Lifecycle | None = None,
        denial_audit: DenialAudit | None = None,
        enforce_access_rules: bool = True,
        metrics: RpcMetrics | None = None,
    ) -> None:
        """`enforce_access_rules=False` exists for tests of other concerns only."""
        self.definition = definition
        self.lifecycle = lifecycle or Lifecycle()
        self._address = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
        self._credentials = credentials
        self._health = health.aio.HealthServicer()
        # Order matters: outermost first. Tracing sees the final status; errors are mapped
        # for everything inside; who the caller is comes before what they may do, and both
        # before the request is looked at.
        interceptors: list[grpc.aio.ServerInterceptor] = [
            TracingInterceptor(tracer_provider, metrics, [definition.descriptor]),
            ErrorMappingInterceptor(),
            AuthenticationInterceptor(token_verifier),
        ]
        if enforce_access_rules:
            interceptors.append(
                AuthorizationInterceptor(
                    [definition.descriptor],
                    denial_audit or definition.denial_audit or LogDenialAudit(),
                )
            )
        interceptors.append(ValidationInterceptor([definition.descriptor], definition.validators))
        self._server = grpc.aio.server(
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                # Keep idle streams alive through proxies and notice dead peers.
                ("grpc.keepalive_time_ms", 30_000),
                ("grpc.keepalive_timeout_ms", 10_000),
                ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.so_reuseport", 0),
            ],
        )
        self.port = 0
        self._stopped = False

    @property
    def full_name(self) -> str:
        return self.definition.descriptor.full_name

    async def start(self) -> int:
        for hook in self.definition.on_start:
            await hook()
        try:
            self.definition.register(self._server)
            health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
            reflection.enable_server_reflection(
                [self.full_name, health.SERVICE_NAME, reflection.SERVICE_NAME], self._server
            )
            try:
                self.port = self._server.add_secure_port(self._address, self._credentials)
            except RuntimeError:
                self.port = 0  # grpc reports a bind failure as a bare RuntimeError
            if self.port == 0:
                raise OSError(f"could not bind {self._address}: is another process using the port?")
            await self._server.start()
        except BaseException:
            # The start hooks opened things (database pools, the outbox relay): close them.
            await self._run_stop_hooks()
            raise
        await self._health.set(self.full_name, SERVING)
        await self._health.set("", SERVING)
        log.info(
            "%s listening on %s",
            self.definition.name,
            self.port,
            extra={"service_port": self.port, "grpc_service": self.full_name},
        )
        return self.port

    async def stop(self, grace: float) -> None:
        """Drain: NOT_SERVING first (load balancers stop sending), then `grace` seconds for
        in-flight RPCs and streams, then cancel what is left and run the stop hooks."""
        if self._stopped:
            return
        self._stopped = True
        await self._health.enter_graceful_shutdown()
        self.lifecycle.stopping.set()
        await self._server.stop(grace)
        await self._run_stop_hooks()
        log.info("%s stopped", self.definition.name)

    async def _run_stop_hooks(self) -> None:
        for hook in self.definition.on_stop:
            try:
                await hook()
            except Exception:
                log.exception("stop hook of %s failed", self.definition.name)

    async def wait_for_termination(self) -> None:
        await self._server.wait_for_termination()


class HealthEndpoint:
    """grpc.health.v1 alone on a plaintext port, for probes without a client certificate.

    It tells what the process's servers tell over mTLS, nothing more: each service's status
    and the overall one (""); NOT_SERVING once the process drains. No other service is
    registered on it, not even reflection."""

    def __init__(self, host: str, port: int) -> None:
        self._address = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
        self._health = health.aio.HealthServicer()
        self._server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        self.port = 0

    async def start(self) -> int:
        try:
            self.port = self._server.add_insecure_port(self._address)
        except RuntimeError:
            self.port = 0
        if self.port == 0:
            raise OSError(f"could not bind the health port {self._address}")
        await self._server.start()
        return self.port

    async def serving(self, services: Iterable[str]) -> None:
        for name in (*services, ""):
            await self._health.set(name, SERVING)

    async def draining(self) -> None:
        await self._health.enter_graceful_shutdown()

    async def stop(self) -> None:
        await self._server.stop(0)


def answer_unimplemented(servicer: Any, base: type, *, issue: str) -> None:
    """Make every RPC the servicer does not implement yet answer UNIMPLEMENTED, naming `issue`.

    The generated base class answers a bare "Method not implemented!"; callers deserve to know
    that the RPC is planned and where. Overridden methods are left untouched.
    """
    own = type(servicer)
    for name, member in vars(base).items():
        if name.startswith("_") or not callable(member):
            continue
        if getattr(own, name) is not member:
            continue  # implemented
        setattr(servicer, name, _pending(f"{base.__name__.removesuffix('Servicer')}.{name}", issue))


def _pending(method: str, issue: str) -> Callable[..., Awaitable[Any]]:
    async def pending(_request: Any, _context: Any) -> Any:
        raise Unimplemented(f"{method} is not implemented yet; it arrives with {issue}")

    return pending
