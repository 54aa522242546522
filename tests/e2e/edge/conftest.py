"""Real Envoy in front of real services: the mesh runs in the test process, Envoy as a child.

Envoy binds port 0 for its listener and admin (EdgeProcess reads back what it got), so tests
never race for ports; every Envoy gets its own --base-id and is always stopped.
"""

from __future__ import annotations

import asyncio
import http.client
import itertools
import json
import os
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from gatehouse.edge.process import EdgeProcess
from gatehouse.mesh.runner import Mesh
from gatehouse.runtime.config import SERVICE_NAMES, ServiceName, Settings
from gatehouse.runtime.identity import JWKS_KEY
from gatehouse.runtime.telemetry import create_tracer_provider
from tests.support.tokens import TestIssuer

_BASE_IDS = itertools.count(os.getpid() % 100_000 * 100)


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def answered_by(self, service: str) -> bool:
        """Whether the service itself answered (success, or an error in its own domain), as
        opposed to the edge. Independent of how far the service's behaviour has come."""
        if self.status == 200:
            return True
        details = self.json().get("details", [])
        return any(d.get("domain") == f"{service}.gatehouse" for d in details)


@dataclass
class Edge:
    process: EdgeProcess
    certs: Path

    @property
    def port(self) -> int:
        return self.process.port

    def tls_context(
        self, identity: str | None = "client", certs: Path | None = None
    ) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.certs / "ca.pem"))
        if identity is not None:
            source = certs or self.certs
            context.load_cert_chain(source / f"{identity}.pem", source / f"{identity}-key.pem")
        return context

    async def rest(
        self,
        method: str,
        path: str,
        body: bytes | str | None = None,
        *,
        token: str | None = None,
        headers: Mapping[str, str] | None = None,
        identity: str | None = "client",
        certs: Path | None = None,
    ) -> Response:
        """One HTTP/1.1 request over TLS, off the event loop (the services share this loop)."""
        all_headers = dict(headers or {})
        if token is not None:
            all_headers["authorization"] = f"Bearer {token}"
        if body is not None:
            all_headers.setdefault("content-type", "application/json")
        context = self.tls_context(identity, certs)

        def send() -> Response:
            connection = http.client.HTTPSConnection(
                "localhost", self.port, context=context, timeout=10
            )
            try:
                connection.request(method, path, body=body, headers=all_headers)
                response = connection.getresponse()
                return Response(
                    response.status,
                    {k.lower(): v for k, v in response.getheaders()},
                    response.read(),
                )
            finally:
                connection.close()

        return await asyncio.to_thread(send)

    def channel(
        self, identity: str | None = "client", certs: Path | None = None
    ) -> grpc.aio.Channel:
        source = certs or self.certs
        key = chain = None
        if identity is not None:
            key = (source / f"{identity}-key.pem").read_bytes()
            chain = (source / f"{identity}.pem").read_bytes()
        credentials = grpc.ssl_channel_credentials(
            root_certificates=(self.certs / "ca.pem").read_bytes(),
            private_key=key,
            certificate_chain=chain,
        )
        return grpc.aio.secure_channel(f"localhost:{self.port}", credentials)

    async def admin(self, path: str) -> str:
        _, body = await self.process.admin("GET", path)
        return body.decode()


StartEdge = Callable[..., Awaitable[Edge]]


@dataclass
class RunningMesh:
    mesh: Mesh
    ports: dict[ServiceName, int]


async def start_mesh(settings: Settings, issuer: TestIssuer) -> RunningMesh:
    mesh = Mesh(settings, SERVICE_NAMES, tracer_provider=create_tracer_provider("edge-tests"))
    ports = await mesh.start()
    # As the auth service does: publish the signing keys where every service looks for them.
    await mesh.infrastructure.kv.set(JWKS_KEY, issuer.jwks_json())
    return RunningMesh(mesh, ports)


@pytest.fixture(scope="module")
def issuer() -> TestIssuer:
    return TestIssuer()


@pytest.fixture(scope="module")
async def mesh(settings: Settings, issuer: TestIssuer) -> AsyncIterator[RunningMesh]:
    running = await start_mesh(settings, issuer)
    yield running
    await running.mesh.stop(grace=0)


@pytest.fixture
async def start_edge(
    settings: Settings, mesh: RunningMesh, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[StartEdge]:
    started: list[EdgeProcess] = []

    async def start(
        *, upstream_ports: Mapping[ServiceName, int] | None = None, **overrides: Any
    ) -> Edge:
        edge_settings = settings.model_copy(
            update={
                "edge_port": 0,
                "edge_admin_port": 0,
                "edge_base_id": next(_BASE_IDS),
                # Generous unless a test is about limits: tests must not trip them by accident.
                "edge_global_rate_per_second": 0,
                "edge_sensitive_rate_per_minute": 0,
                # Off unless a test is about tokens at the edge (test_jwt, test_auth_flow, which
                # turn it on): the others reach the services' own checks (missing token: the
                # service's 401, streams, resilience) with test-issuer tokens.
                "edge_jwt_enabled": False,
                **overrides,
            }
        )
        process = EdgeProcess(edge_settings, directory=tmp_path_factory.mktemp("edge"))
        started.append(process)
        await process.start(mesh.ports | dict(upstream_ports or {}))
        return Edge(process, settings.certificates)

    yield start
    await asyncio.gather(*(process.stop() for process in started))


@pytest.fixture
async def edge(start_edge: StartEdge) -> Edge:
    return await start_edge()
