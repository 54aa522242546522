"""Running services in-process for tests, on port 0, with the test PKI."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import grpc
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gatehouse.clients.channel import ChannelFactory, ClientCredentials
from gatehouse.runtime.authorization import DenialAudit
from gatehouse.runtime.identity import JwksTokenVerifier, StaticKeySource, TokenVerifier
from gatehouse.runtime.server import Lifecycle, ServiceDefinition, ServiceServer
from gatehouse.runtime.telemetry import create_tracer_provider
from gatehouse.runtime.tls import CertificatePaths, server_credentials

ChannelTo = Callable[[int], grpc.aio.Channel]


def channel_to(certs_dir: Path, identity: str = "client") -> ChannelTo:
    factory = ChannelFactory(ClientCredentials.from_directory(certs_dir, identity))

    def open_channel(port: int) -> grpc.aio.Channel:
        return factory.channel(f"127.0.0.1:{port}")

    return open_channel


def single_server(
    definition: ServiceDefinition,
    certs_dir: Path,
    *,
    verifier: TokenVerifier | None = None,
    spans: InMemorySpanExporter | None = None,
    lifecycle: Lifecycle | None = None,
    enforce_access_rules: bool = True,
    denial_audit: DenialAudit | None = None,
) -> ServiceServer:
    """A server for one definition. Without a verifier, every presented token is refused
    (no keys); `enforce_access_rules=False` is for tests of other concerns only."""
    processors = (SimpleSpanProcessor(spans),) if spans is not None else ()
    return ServiceServer(
        definition,
        credentials=server_credentials(CertificatePaths.for_name(certs_dir, definition.name)),
        token_verifier=verifier
        or JwksTokenVerifier(
            StaticKeySource({"keys": []}), issuer="gatehouse", audience="gatehouse"
        ),
        tracer_provider=create_tracer_provider("test", processors),
        lifecycle=lifecycle,
        enforce_access_rules=enforce_access_rules,
        denial_audit=denial_audit,
    )
