"""`gatehouse simulate` and `gatehouse watch` as a person runs them: a real monitoring process
(`gatehouse serve monitoring`) on the real Redis bus and key-value store, and the commands
as processes of their own (`python -m gatehouse.monitoring.cli` until they are registered in
the `gatehouse` command)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from gatehouse.monitoring.v1 import monitoring_pb2, monitoring_pb2_grpc
from tests.integration.redis_fixtures import redis_prefix, redis_url
from tests.support.mesh import channel_to
from tests.support.tokens import TestIssuer

__all__ = ["redis_prefix", "redis_url"]

BIN = Path(sys.executable).parent
CLI = (sys.executable, "-m", "gatehouse.monitoring.cli")
STARTUP_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Running:
    env: dict[str, str]
    token: str
    home: Path


@pytest.fixture
async def monitoring_process(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> AsyncIterator[Running]:
    issuer = TestIssuer()
    # What auth does in a full mesh: publish its signing keys where services look for them.
    client = redis.Redis.from_url(redis_url)
    client.set(f"{redis_prefix}auth:jwks", issuer.jwks_json())
    client.close()
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("GATEHOUSE_")}
    env |= {
        "GATEHOUSE_HOME": str(tmp_path / ".gatehouse"),
        "GATEHOUSE_MONITORING_PORT": str(port),
        "GATEHOUSE_REDIS_URL": redis_url,
        "GATEHOUSE_KEY_PREFIX": redis_prefix,
        "GATEHOUSE_METRICS_ENABLED": "false",
        "GATEHOUSE_SHUTDOWN_GRACE_SECONDS": "2",
        "GATEHOUSE_MONITORING_HEARTBEAT_INTERVAL": "0.5",
    }
    process = await asyncio.create_subprocess_exec(
        str(BIN / "gatehouse"),
        "serve",
        "monitoring",
        env=env,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert process.stdout is not None
    try:
        async with asyncio.timeout(STARTUP_TIMEOUT):
            while True:
                line = await process.stdout.readline()
                assert line, "gatehouse serve monitoring exited before it was ready"
                if b"ready" in line:
                    break
        token = issuer.token(permissions=["monitoring.*"])
        yield Running(env=env, token=token, home=tmp_path / ".gatehouse")
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 20)
            except TimeoutError:
                process.kill()
                await process.wait()


async def _create_building(running: Running) -> str:
    port = running.env["GATEHOUSE_MONITORING_PORT"]
    async with channel_to(running.home / "certs")(int(port)) as channel:
        response = await monitoring_pb2_grpc.MonitoringServiceStub(channel).CreateBuilding(
            monitoring_pb2.CreateBuildingRequest(
                building=monitoring_pb2.Building(display_name="E2E tower", time_zone="UTC")
            ),
            metadata=(("authorization", f"Bearer {running.token}"),),
        )
    return response.building.name


async def test_simulated_building_shows_up_in_the_watched_feed(
    monitoring_process: Running,
) -> None:
    env = monitoring_process.env | {"GATEHOUSE_TOKEN": monitoring_process.token}
    building = await _create_building(monitoring_process)
    watch = await asyncio.create_subprocess_exec(
        *CLI,
        "watch",
        building,
        "--count",
        "12",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert watch.stderr is not None
    # It only shows what is published once it is live, and says when that is.
    live = await asyncio.wait_for(watch.stderr.readline(), 30)
    assert live.decode().strip() == f"watching {building}"
    simulate = await asyncio.create_subprocess_exec(
        *CLI,
        "simulate",
        building,
        "-n",
        "6",
        "--duration",
        "8",
        "--activity",
        "20",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    watched, watch_errors = await asyncio.wait_for(watch.communicate(), 60)
    out, errors = await asyncio.wait_for(simulate.communicate(), 60)
    assert watch.returncode == 0, watch_errors.decode()
    assert simulate.returncode == 0, errors.decode()
    assert out.decode().startswith(f"building {building}")
    lines = watched.decode().splitlines()
    assert len(lines) == 12
    # All six devices came online, then reported what they saw.
    online = [line for line in lines if "device.status_changed" in line and "is online" in line]
    assert len(online) == 6, lines
    assert all(re.search(r"\[[0-9A-Z]{26}\]$", line) for line in lines)
    assert "online 0" in out.decode().splitlines()[-1]


async def test_device_certificates_from_the_dev_ca(monitoring_process: Running) -> None:
    process = await asyncio.create_subprocess_exec(
        *CLI,
        "certs-device",
        "b1/d1",
        "buildings/b2/devices/d2",
        env=monitoring_process.env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err.decode()
    certs = monitoring_process.home / "certs"
    assert (certs / "device--b1--d1.pem").is_file()
    assert (certs / "device--b2--d2-key.pem").stat().st_mode & 0o077 == 0
    assert "buildings/b1/devices/d1" in out.decode()
