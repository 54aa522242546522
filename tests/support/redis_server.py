"""A throwaway `redis-server` per test, for the tests that kill and restart Redis.

The shared Redis on 6379 is never restarted by a test: other test modules (and other people)
use it. Import the fixture into a test module (`from tests.support.redis_server import PrivateRedis,
private_redis_fixture`) and take `private_redis` as a parameter.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.contracts.timing import eventually


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PrivateRedis:
    """A redis-server of this test's own, with an append-only file so data survives a crash
    (as production Redis is configured); killed and restarted on the same port."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not on PATH")
        self.process = await asyncio.create_subprocess_exec(
            binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes",
            # Every write on disk before the reply: a SIGKILL loses nothing acknowledged.
            "--appendfsync",
            "always",
            "--dir",
            str(self.directory),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        await self._wait_until_answering()

    async def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        self.process = None

    async def _wait_until_answering(self) -> None:
        async def answers() -> bool:
            try:
                _reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                return False
            writer.write(b"PING\r\n")
            reply = await _reader.readline()
            writer.close()
            await writer.wait_closed()
            # Loading the append-only file answers -LOADING until done.
            return reply.startswith(b"+PONG")

        await eventually(
            answers, step=lambda: asyncio.sleep(0.05), what="private redis-server answers"
        )


# Registered under the name tests ask for; the function's own name differs so that a test
# parameter `private_redis` does not shadow an imported name (ruff F811).
@pytest.fixture(name="private_redis")
async def private_redis_fixture(tmp_path: Path) -> AsyncIterator[PrivateRedis]:
    server = PrivateRedis(tmp_path / "redis")
    server.directory.mkdir()
    await server.start()
    try:
        yield server
    finally:
        await server.kill()
