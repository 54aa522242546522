"""What the Envoy edge costs: one RPC three ways, measured in one run, reported as ratios.

    .venv/bin/python -m bench.edge [--duration 3] [--concurrency 1,16]

Starts `gatehouse up` (services + Envoy) on free loopback ports in a temporary home, then
drives AuthService.GetJwks (public, cheap, the same handler whatever the path):

- direct:     gRPC straight to the auth service (mTLS), the baseline;
- grpc-edge:  the same gRPC call through Envoy's port (TLS, routing, HTTP/2 upstream);
- rest-edge:  `GET /.well-known/jwks.json` through Envoy (TLS, HTTP/1.1 keep-alive,
              JSON transcoding).

Each mode runs `concurrency` workers for `duration` seconds after a short warm-up and reports
requests per second and p50/p99 latency, then the ratio to `direct` at the same concurrency.
The services and Envoy are pinned to CPU 0 and this load generator to CPU 1 when the machine
has two CPUs (BENCH-NOTES: a Python client costs about as much CPU as the server). Absolute
numbers are noisy here; the ratios from one run are the result.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import ssl
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc

from gatehouse.auth.v1 import auth_pb2

BIN = Path(sys.executable).parent
GRPC_METHOD = "/gatehouse.auth.v1.AuthService/GetJwks"
REST_PATH = "/.well-known/jwks.json"
WARMUP_SECONDS = 0.5
STARTUP_TIMEOUT = 60.0

Call = Callable[[], Awaitable[str]]


@dataclass(frozen=True)
class Result:
    mode: str
    concurrency: int
    count: int
    seconds: float
    latencies_ms: list[float]
    outcomes: Counter[str]

    @property
    def rate(self) -> float:
        return self.count / self.seconds

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


@dataclass(frozen=True)
class Mesh:
    process: asyncio.subprocess.Process
    certs: Path
    auth_port: int
    edge_port: int


async def start_mesh(home: Path) -> Mesh:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEHOUSE_")}
    env |= {f"GATEHOUSE_{name}_PORT": "0" for name in ("AUTH", "ACCESS", "MONITORING")}
    env |= {f"GATEHOUSE_{name}_PORT": "0" for name in ("PAYMENTS", "NOTIFICATIONS", "METRICS")}
    env |= {
        "GATEHOUSE_HOME": str(home),
        "GATEHOUSE_EDGE_PORT": "0",
        "GATEHOUSE_EDGE_ADMIN_PORT": "0",
        # The benchmark is the load; the edge's own limits would only measure themselves.
        "GATEHOUSE_EDGE_GLOBAL_RATE_PER_SECOND": "0",
        "GATEHOUSE_LOG_LEVEL": "WARNING",
        "GATEHOUSE_SHUTDOWN_GRACE_SECONDS": "2",
    }
    argv = [str(BIN / "gatehouse"), "up"]
    if _two_cpus() and shutil.which("taskset"):
        argv = ["taskset", "-c", "0", *argv]
    process = await asyncio.create_subprocess_exec(
        *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )
    assert process.stdout is not None
    ports: dict[str, int] = {}

    async def announced() -> None:
        assert process.stdout is not None
        while True:
            line = (await process.stdout.readline()).decode()
            if not line:
                raise RuntimeError("gatehouse up exited before it was ready")
            if line.startswith("ready"):
                return
            # `name          scheme://host:port ...`, the name padded to 14 columns.
            name, address = line[:14].strip(), line[14:].split()
            if name in ("auth", "edge"):
                ports[name] = int(address[0].rsplit(":", 1)[1])

    mesh = Mesh(process, home / "certs", 0, 0)
    try:
        await asyncio.wait_for(announced(), STARTUP_TIMEOUT)
    except BaseException:
        await stop_mesh(mesh)
        raise
    return Mesh(process, home / "certs", ports["auth"], ports["edge"])


async def stop_mesh(mesh: Mesh) -> None:
    if mesh.process.returncode is None:
        mesh.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(mesh.process.wait(), 30)
        except TimeoutError:
            mesh.process.kill()
            await mesh.process.wait()


def grpc_channel(certs: Path, port: int) -> grpc.aio.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(certs / "ca.pem").read_bytes(),
        private_key=(certs / "client-key.pem").read_bytes(),
        certificate_chain=(certs / "client.pem").read_bytes(),
    )
    return grpc.aio.secure_channel(f"localhost:{port}", credentials)


def grpc_caller(channel: grpc.aio.Channel) -> Call:
    method = channel.unary_unary(
        GRPC_METHOD,
        request_serializer=auth_pb2.GetJwksRequest.SerializeToString,
        response_deserializer=auth_pb2.GetJwksResponse.FromString,
    )
    request = auth_pb2.GetJwksRequest()

    async def call() -> str:
        try:
            await method(request, timeout=10)
        except grpc.aio.AioRpcError as error:
            return error.code().name
        return "OK"

    return call


class RestConnection:
    """HTTP/1.1 keep-alive over TLS, one request at a time: the least client work per call."""

    def __init__(self, certs: Path, port: int) -> None:
        self._context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
        self._context.set_alpn_protocols(["http/1.1"])
        self._port = port
        self._request = f"GET {REST_PATH} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def call(self) -> str:
        if self._reader is None or self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(
                "localhost", self._port, ssl=self._context, server_hostname="localhost"
            )
        self._writer.write(self._request)
        head = await self._reader.readuntil(b"\r\n\r\n")
        status = head.split(b" ", 2)[1].decode()
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        await self._reader.readexactly(length)
        return status

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await self._writer.wait_closed()


async def measure(mode: str, callers: list[Call], duration: float) -> Result:
    latencies: list[float] = []
    outcomes: Counter[str] = Counter()
    recording = False
    deadline = 0.0

    async def worker(call: Call) -> None:
        while time.monotonic() < deadline:
            began = time.perf_counter()
            outcome = await call()
            if recording:
                latencies.append((time.perf_counter() - began) * 1000)
                outcomes[outcome] += 1

    deadline = time.monotonic() + WARMUP_SECONDS
    await asyncio.gather(*(worker(call) for call in callers))
    recording = True
    began = time.monotonic()
    deadline = began + duration
    await asyncio.gather(*(worker(call) for call in callers))
    return Result(mode, len(callers), len(latencies), time.monotonic() - began, latencies, outcomes)


async def run(duration: float, levels: list[int]) -> list[Result]:
    with tempfile.TemporaryDirectory(prefix="gatehouse-bench-") as tmp:
        mesh = await start_mesh(Path(tmp))
        try:
            results: list[Result] = []
            for concurrency in levels:
                for mode, port in (("direct", mesh.auth_port), ("grpc-edge", mesh.edge_port)):
                    async with grpc_channel(mesh.certs, port) as channel:
                        await channel.channel_ready()
                        callers = [grpc_caller(channel)] * concurrency
                        results.append(await measure(mode, callers, duration))
                connections = [
                    RestConnection(mesh.certs, mesh.edge_port) for _ in range(concurrency)
                ]
                try:
                    callers = [connection.call for connection in connections]
                    results.append(await measure("rest-edge", callers, duration))
                finally:
                    await asyncio.gather(*(c.close() for c in connections))
            return results
        finally:
            await stop_mesh(mesh)


def report(results: list[Result]) -> str:
    lines = [
        f"{'mode':<10} {'in flight':>9} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}"
        f" {'rate/direct':>11} {'p50/direct':>10} {'p99/direct':>10}  outcomes"
    ]
    baselines = {r.concurrency: r for r in results if r.mode == "direct"}
    for result in results:
        base = baselines[result.concurrency]
        p50, p99 = result.percentile(0.50), result.percentile(0.99)
        outcomes = ", ".join(f"{k} {v}" for k, v in result.outcomes.most_common())
        lines.append(
            f"{result.mode:<10} {result.concurrency:>9} {result.rate:>9.0f} {p50:>8.2f}"
            f" {p99:>8.2f} {result.rate / base.rate:>11.2f} {p50 / base.percentile(0.5):>10.2f}"
            f" {p99 / base.percentile(0.99):>10.2f}  {outcomes}"
        )
    return "\n".join(lines)


def _two_cpus() -> bool:
    return len(os.sched_getaffinity(0)) >= 2


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per measurement")
    parser.add_argument("--concurrency", default="1,16", help="comma-separated in-flight counts")
    args = parser.parse_args()
    levels = [int(level) for level in args.concurrency.split(",")]
    if _two_cpus():
        os.sched_setaffinity(0, {1})
    results = asyncio.run(run(args.duration, levels))
    print(report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
