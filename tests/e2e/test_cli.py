"""`gatehouse up` as a newcomer runs it: a real process, real ports, grpcurl, health, SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gatehouse.runtime.config import SERVICE_NAMES, ServiceName
from tests.support.grpc_calls import SERVICE_DESCRIPTORS
from tests.support.mesh import channel_to

BIN = Path(sys.executable).parent
STARTUP_TIMEOUT = 60.0


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass
class RunningMesh:
    process: asyncio.subprocess.Process
    env: dict[str, str]
    ports: dict[ServiceName, int]
    certs: Path


async def run_cli(*args: str, env: dict[str, str], timeout: float = 30) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


@pytest.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[RunningMesh]:
    *service_ports, metrics_port = free_ports(len(SERVICE_NAMES) + 1)
    ports = dict(zip(SERVICE_NAMES, service_ports, strict=True))
    env = {key: value for key, value in os.environ.items() if not key.startswith("GATEHOUSE_")}
    env |= {f"GATEHOUSE_{name.upper()}_PORT": str(port) for name, port in ports.items()}
    env |= {
        "GATEHOUSE_HOME": str(tmp_path / ".gatehouse"),
        "GATEHOUSE_SHUTDOWN_GRACE_SECONDS": "3",
        "GATEHOUSE_METRICS_PORT": str(metrics_port),
        # Envoy binds free ports itself and `gatehouse up` announces them.
        "GATEHOUSE_EDGE_PORT": "0",
        "GATEHOUSE_EDGE_ADMIN_PORT": "0",
    }
    process = await asyncio.create_subprocess_exec(
        str(BIN / "gatehouse"),
        "up",
        env=env,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert process.stdout is not None
    announced: list[str] = []

    async def wait_ready() -> None:
        while True:
            line = (await process.stdout.readline()).decode()  # type: ignore[union-attr]
            if not line:
                raise AssertionError(f"gatehouse up exited early: {announced}")
            announced.append(line)
            if line.startswith("ready"):
                return

    await asyncio.wait_for(wait_ready(), STARTUP_TIMEOUT)
    for name, port in ports.items():
        assert any(line.startswith(name) and f":{port}" in line for line in announced), announced
    assert any(line.startswith("edge ") and "https://" in line for line in announced), announced
    running = RunningMesh(process, env, ports, tmp_path / ".gatehouse" / "certs")
    yield running
    if process.returncode is None:
        # SIGTERM first: a SIGKILL would leave its Envoy child running.
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 30)
        except TimeoutError:
            process.kill()
            await process.wait()


def grpcurl(mesh: RunningMesh, port: int, *args: str, with_cert: bool = True) -> list[str]:
    certs = mesh.certs
    tls = ["-cacert", str(certs / "ca.pem")]
    if with_cert:
        tls += ["-cert", str(certs / "client.pem"), "-key", str(certs / "client-key.pem")]
    return [str(BIN / "grpcurl"), "-connect-timeout", "3", *tls, f"127.0.0.1:{port}", *args]


async def test_grpcurl_lists_and_describes_every_service(mesh: RunningMesh) -> None:
    for name, port in mesh.ports.items():
        full_name = SERVICE_DESCRIPTORS[name].full_name
        code, listed, errors = await run_cli(*grpcurl(mesh, port, "list"), env=mesh.env)
        assert code == 0, errors
        assert set(listed.split()) == {
            full_name,
            "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection",
        }
        code, described, errors = await run_cli(
            *grpcurl(mesh, port, "describe", full_name), env=mesh.env
        )
        assert code == 0, errors
        for method in SERVICE_DESCRIPTORS[name].methods:
            assert f"rpc {method.name} (" in described, (name, method.name)


async def test_grpcurl_without_client_certificate_is_refused(mesh: RunningMesh) -> None:
    code, _, errors = await run_cli(
        *grpcurl(mesh, mesh.ports["payments"], "list", with_cert=False), env=mesh.env
    )
    assert code != 0
    assert "Failed to dial" in errors or "certificate" in errors


async def test_health_command_then_sigterm_drains_and_exits_zero(mesh: RunningMesh) -> None:
    code, report, errors = await run_cli(str(BIN / "gatehouse"), "health", env=mesh.env)
    assert code == 0, report + errors
    assert report.count("SERVING") == len(SERVICE_NAMES), report

    async with channel_to(mesh.certs)(mesh.ports["auth"]) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))
        first = await watch.read()
        assert first.status == health_pb2.HealthCheckResponse.SERVING
        mesh.process.send_signal(signal.SIGTERM)
        # The in-flight stream sees the drain before the process goes away.
        second = await asyncio.wait_for(watch.read(), timeout=10)
        assert second.status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert await asyncio.wait_for(mesh.process.wait(), timeout=30) == 0
        with pytest.raises(grpc.aio.AioRpcError):
            await watch.read()

    code, report, _ = await run_cli(
        str(BIN / "gatehouse"), "health", "--timeout", "1", env=mesh.env
    )
    assert code == 1
    assert "UNREACHABLE" in report
