"""What the request/response benchmarks share: the measuring loop and its result, the bare
echo server they are compared with, child server processes, throwaway PostgreSQL databases,
test keys and tokens.

A benchmark module (`bench.payments`, `bench.access`, ...) is both the load generator and, run
with `--serve`, the server child; `start_child` starts it so. Servers run on CPU 0 and the load
generator on CPU 1 when `PINNED["on"]` (decided once by the benchmark's `main`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import grpc
import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gatehouse.clients.channel import ChannelFactory, ClientCredentials

HOST = "127.0.0.1"
WARMUP_SECONDS = 0.5
STARTUP_TIMEOUT = 60.0
ECHO_METHOD = "/bench.Echo/Echo"
KID = "bench-key"
DEFAULT_POSTGRES = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"

# One call of the measured RPC: its outcome ("OK", a status name, or "EXHAUSTED" when the
# work ran out).
Call = Callable[[], Awaitable[str]]


# --- results ---------------------------------------------------------------------------------


@dataclass
class Result:
    label: str
    count: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0

    def percentile(self, fraction: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


R = TypeVar("R", bound=Result)


async def measure(label: str, call: Call, concurrency: int, duration: float) -> Result:
    """`concurrency` workers calling until the deadline (after a warm-up), or until `call`
    says "EXHAUSTED" (the work ran out)."""
    return await measure_into(Result(label), call, concurrency, duration)


async def measure_into(result_: R, call: Call, concurrency: int, duration: float) -> R:
    """`measure`, recording into `result_` (a `Result` subclass that carries more)."""
    recording = False
    deadline = 0.0

    async def worker() -> None:
        while time.monotonic() < deadline:
            began = time.perf_counter()
            outcome = await call()
            if outcome == "EXHAUSTED":
                return
            if recording:
                result_.latencies_ms.append((time.perf_counter() - began) * 1000)
                result_.outcomes[outcome] += 1

    deadline = time.monotonic() + WARMUP_SECONDS
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    recording = True
    began = time.monotonic()
    deadline = began + duration
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result_.seconds = time.monotonic() - began
    result_.count = len(result_.latencies_ms)
    return result_


def result_row(result: Result, baseline_rate: float, width: int) -> str:
    """One report line: label, req/s, p50/p99 ms, the rate as a ratio to the baseline's, and
    how the calls ended."""
    ratio = result.rate / baseline_rate if baseline_rate else float("nan")
    outcomes = ", ".join(f"{k} {v}" for k, v in result.outcomes.most_common())
    return (
        f"{result.label:<{width}} {result.rate:>8.0f} {result.percentile(0.5):>8.2f}"
        f" {result.percentile(0.99):>8.2f} {ratio:>7.3f}  {outcomes}"
    )


def status_of(error: grpc.aio.AioRpcError) -> str:
    return error.code().name


# --- the baseline ----------------------------------------------------------------------------


def echo_caller(channel: grpc.aio.Channel, payload: bytes) -> Call:
    method: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(ECHO_METHOD)

    async def call() -> str:
        try:
            await method(payload, timeout=10)
        except grpc.aio.AioRpcError as error:
            return status_of(error)
        return "OK"

    return call


async def serve_echo(certs: Path, identity: str) -> None:
    """The bare grpc.aio server: the same mTLS as the service (`identity`'s certificate), no
    interceptors, the request bytes sent back."""
    from gatehouse.runtime.tls import CertificatePaths, server_credentials  # noqa: PLC0415

    async def echo(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        return request

    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("bench.Echo", {
            "Echo": grpc.unary_unary_rpc_method_handler(echo)
        }),)
    )  # fmt: skip
    port = server.add_secure_port(
        f"{HOST}:0", server_credentials(CertificatePaths.for_name(certs, identity))
    )
    await server.start()
    await announce_and_wait(port, server.stop)


# --- child processes -------------------------------------------------------------------------


async def announce_and_wait(port: int, stop: Callable[[float], Awaitable[Any]]) -> None:
    """A server child's last step: tell the parent its port, serve until SIGTERM, stop."""
    print(f"port {port}", flush=True)
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, done.set)
    await done.wait()
    await stop(1.0)


@dataclass
class Child:
    process: asyncio.subprocess.Process
    port: int


# Whether servers run on CPU 0 and the load generator on CPU 1; decided once in `main`,
# before this process pins itself (after which it sees only its own CPU).
PINNED = {"on": False}


async def start_child(module: str, argv: Sequence[str]) -> Child:
    """`python -m <module> --serve <argv>`, started and waited for until it names its port."""
    command = [sys.executable, "-m", module, "--serve", *argv]
    if PINNED["on"]:
        command = ["taskset", "-c", "0", *command]
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEHOUSE_")}
    env["GATEHOUSE_LOG_LEVEL"] = "WARNING"
    process = await asyncio.create_subprocess_exec(
        *command, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )
    assert process.stdout is not None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), STARTUP_TIMEOUT)
    except BaseException:
        await stop_child(Child(process, 0))
        raise
    if not line.startswith(b"port "):
        await stop_child(Child(process, 0))
        raise RuntimeError(f"server child did not start: {line!r}")
    return Child(process, int(line.split()[1]))


async def stop_child(child: Child) -> None:
    if child.process.returncode is None:
        child.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(child.process.wait(), 20)
        except TimeoutError:
            child.process.kill()
            await child.process.wait()


# --- PostgreSQL ------------------------------------------------------------------------------


async def _admin(url: str, *statements: str) -> None:
    from sqlalchemy import make_url, text  # noqa: PLC0415
    from sqlalchemy.ext.asyncio import create_async_engine  # noqa: PLC0415
    from sqlalchemy.pool import NullPool  # noqa: PLC0415

    engine = create_async_engine(make_url(url), isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        async with asyncio.timeout(10), engine.connect() as connection:
            for statement in statements:
                await connection.execute(text(statement))
    finally:
        await engine.dispose()


@contextlib.asynccontextmanager
async def postgres_database() -> AsyncIterator[str]:
    """A throwaway database `gatehouse_bench_<random>` on `GATEHOUSE_BENCH_POSTGRES_URL`
    (default: the local server as `postgres`), dropped afterwards."""
    from sqlalchemy import make_url  # noqa: PLC0415

    admin = os.environ.get("GATEHOUSE_BENCH_POSTGRES_URL", DEFAULT_POSTGRES)
    name = f"gatehouse_bench_{secrets.token_hex(4)}"
    await _admin(admin, f'CREATE DATABASE "{name}"')
    try:
        yield make_url(admin).set(database=name).render_as_string(hide_password=False)
    finally:
        await _admin(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- keys, tokens, channels ------------------------------------------------------------------


@dataclass
class Keys:
    token: str
    jwks_file: Path


def make_keys(directory: Path, permissions: Sequence[str]) -> Keys:
    """A signing key of our own (its JWKS in `directory`) and a token holding `permissions`."""
    key = Ed25519PrivateKey.generate()
    public = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(key.public_key()))
    public.update(kid=KID, use="sig", alg="EdDSA")
    jwks_file = directory / "jwks.json"
    jwks_file.write_text(json.dumps({"keys": [public]}))
    now = datetime.now(UTC)
    claims = {
        "sub": "users/bench",
        "jti": str(uuid.uuid4()),
        "iss": "gatehouse",
        "aud": "gatehouse",
        "iat": now,
        "exp": now + timedelta(hours=2),
        "permissions": list(permissions),
    }
    token = jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": KID})
    return Keys(token, jwks_file)


def channel_to(certs: Path, port: int, identity: str = "client") -> grpc.aio.Channel:
    return ChannelFactory(ClientCredentials.from_directory(certs, identity)).channel(
        f"{HOST}:{port}"
    )
