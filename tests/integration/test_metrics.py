"""RPC metrics of a running mesh, scraped over HTTP as Prometheus would."""

from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path

from grpc_health.v1 import health_pb2, health_pb2_grpc

from gatehouse.auth.v1 import auth_pb2, auth_pb2_grpc
from gatehouse.mesh.runner import Mesh
from gatehouse.runtime.config import Settings
from gatehouse.runtime.telemetry import create_tracer_provider
from tests.support.mesh import channel_to


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        body: bytes = response.read()
    return body.decode()


async def test_rpc_count_and_latency_are_exposed(settings: Settings, certs_dir: Path) -> None:
    configured = settings.model_copy(update={"metrics_enabled": True, "metrics_port": 0})
    mesh = Mesh(configured, ["auth"], tracer_provider=create_tracer_provider("t"))
    ports = await mesh.start()
    try:
        assert mesh.metrics is not None
        async with channel_to(certs_dir)(ports["auth"]) as channel:
            await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
            stub = auth_pb2_grpc.AuthServiceStub(channel)
            for _ in range(3):
                await stub.GetJwks(auth_pb2.GetJwksRequest())
        text = await asyncio.to_thread(_scrape, mesh.metrics.port)
    finally:
        await mesh.stop(grace=0)
    lines = [line for line in text.splitlines() if "GetJwks" in line]
    counted = [line for line in lines if line.startswith("rpc_server_requests_total")]
    assert counted, text
    assert 'rpc_grpc_status_code="OK"' in counted[0]
    assert counted[0].rstrip().endswith(" 3.0")
    assert any(line.startswith("rpc_server_duration_milliseconds_bucket") for line in lines)
    # Probes are not our RPCs: they would drown the real traffic in the numbers.
    assert "Health" not in text
