"""What auth's two hot paths cost: Login (argon2-bound) and IntrospectToken, as ratios to a
bare grpc.aio echo with the same payload sizes, measured in one run.

    .venv/bin/python -m bench.auth [--duration 3] [--login-concurrency 8]
                                   [--introspect-concurrency 16]

A child process (pinned to CPU 0 when there are two) runs the real auth service (embedded
mode: SQLite and the in-process KV store in a temporary home, argon2id at the configured
parameters, the OWASP minimum by default) and, beside it, a bare grpc.aio echo server
with the same mTLS credentials. This process (pinned to CPU 1) is the load generator:
`concurrency` tasks call one method back to back for `duration` seconds after a warm-up.

Reported per target: requests/s, p50/p99 latency, and the ratio to the echo carrying the same
request and response sizes. Last, GetJwks latency alone and while Login runs at full load:
argon2 runs in a thread pool, so the other RPCs should keep their latency (BENCH-NOTES).
Everything listens on 127.0.0.1; the run is bounded (about 6 x duration + start-up).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import struct
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from gatehouse.auth.v1 import auth_pb2, auth_pb2_grpc

STARTUP_TIMEOUT = 60.0
WARMUP_SECONDS = 0.5
ECHO_METHOD = "/bench.Echo/Echo"
PASSWORD = "a benchmark passphrase"  # noqa: S105 - a throwaway account

Call = Callable[[], Awaitable[str]]


# --- the child: auth and the echo, side by side ---------------------------------------------


def _echo_handler() -> grpc.GenericRpcHandler:
    """Request: 4 bytes (the response size wanted) + padding; response: that many bytes."""

    async def echo(request: bytes, _context: Any) -> bytes:
        size: int = struct.unpack(">I", request[:4])[0]
        return b"\x00" * size

    # No (de)serializers: raw bytes in and out, the least work a gRPC server can do.
    handler: grpc.RpcMethodHandler[bytes, bytes] = grpc.unary_unary_rpc_method_handler(echo)
    return grpc.method_handlers_generic_handler("bench.Echo", {"Echo": handler})


async def serve(home: Path) -> None:
    from gatehouse.mesh.runner import Mesh, certificate_paths  # noqa: PLC0415
    from gatehouse.runtime.config import load_settings  # noqa: PLC0415
    from gatehouse.runtime.telemetry import create_tracer_provider  # noqa: PLC0415
    from gatehouse.runtime.tls import server_credentials  # noqa: PLC0415

    settings = load_settings(home=home, auth_port=0, metrics_enabled=False)
    mesh = Mesh(settings, ["auth"], tracer_provider=create_tracer_provider("bench-auth"))
    ports = await mesh.start()
    echo = grpc.aio.server()
    echo.add_generic_rpc_handlers([_echo_handler()])
    echo_port = echo.add_secure_port(
        "127.0.0.1:0", server_credentials(certificate_paths(settings, "auth"))
    )
    await echo.start()
    print(f"ready auth={ports['auth']} echo={echo_port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await echo.stop(0)
    await mesh.stop(0)


# --- the parent: load generator --------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    name: str
    concurrency: int
    count: int
    seconds: float
    latencies_ms: list[float]
    failures: int

    @property
    def rate(self) -> float:
        return self.count / self.seconds

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies_ms) or [float("nan")]
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def measure(name: str, call: Call, concurrency: int, duration: float) -> Result:
    latencies: list[float] = []
    failures = 0
    recording = False
    deadline = 0.0

    async def worker() -> None:
        nonlocal failures
        while time.monotonic() < deadline:
            began = time.perf_counter()
            outcome = await call()
            if recording:
                if outcome == "OK":
                    latencies.append((time.perf_counter() - began) * 1000)
                else:
                    failures += 1

    deadline = time.monotonic() + WARMUP_SECONDS
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    recording = True
    began = time.monotonic()
    deadline = began + duration
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Result(name, concurrency, len(latencies), time.monotonic() - began, latencies, failures)


def channel(certs: Path, port: int, identity: str) -> grpc.aio.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(certs / "ca.pem").read_bytes(),
        private_key=(certs / f"{identity}-key.pem").read_bytes(),
        certificate_chain=(certs / f"{identity}.pem").read_bytes(),
    )
    return grpc.aio.secure_channel(f"localhost:{port}", credentials)


def caller(coroutine: Callable[[], Awaitable[object]]) -> Call:
    async def call() -> str:
        try:
            await coroutine()
        except grpc.aio.AioRpcError as error:
            return error.code().name
        return "OK"

    return call


def echo_caller(echo: grpc.aio.Channel, request_size: int, response_size: int) -> Call:
    method: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = echo.unary_unary(ECHO_METHOD)
    request = struct.pack(">I", response_size) + b"\x00" * max(0, request_size - 4)
    return caller(lambda: method(request, timeout=30))


async def start_child(home: Path) -> tuple[asyncio.subprocess.Process, int, int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEHOUSE_")}
    # The auth settings stay the service defaults unless the operator exported them.
    env |= {k: v for k, v in os.environ.items() if k.startswith("GATEHOUSE_AUTH_ARGON2_")}
    env |= {"GATEHOUSE_LOG_LEVEL": "WARNING", "GATEHOUSE_HOME": str(home)}
    argv = [sys.executable, "-m", "bench.auth", "--serve", str(home)]
    process = await asyncio.create_subprocess_exec(
        *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )
    assert process.stdout is not None
    line = (await asyncio.wait_for(process.stdout.readline(), STARTUP_TIMEOUT)).decode()
    if not line.startswith("ready"):
        process.kill()
        raise RuntimeError("the auth benchmark server did not start")
    fields = dict(part.split("=") for part in line.split()[1:])
    return process, int(fields["auth"]), int(fields["echo"])


async def stop_child(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 30)
        except TimeoutError:
            process.kill()
            await process.wait()


async def run(args: argparse.Namespace) -> tuple[list[Result], list[tuple[str, Result]]]:
    with tempfile.TemporaryDirectory(prefix="gatehouse-bench-auth-") as tmp:
        home = Path(tmp)
        process, auth_port, echo_port = await start_child(home)
        certs = home / "certs"
        try:
            async with (
                channel(certs, auth_port, "client") as client,
                channel(certs, auth_port, "payments") as service,
                channel(certs, echo_port, "client") as echo,
            ):
                auth = auth_pb2_grpc.AuthServiceStub(client)
                internal = auth_pb2_grpc.AuthServiceStub(service)
                email = "load.generator@example.com"
                await auth.Register(
                    auth_pb2.RegisterRequest(email=email, password=PASSWORD, display_name="Bench")
                )
                login_request = auth_pb2.LoginRequest(email=email, password=PASSWORD)
                login_response = await auth.Login(login_request)
                token = login_response.tokens.access_token
                introspect_request = auth_pb2.IntrospectTokenRequest(token=token)
                introspect_response = await internal.IntrospectToken(introspect_request)
                assert introspect_response.active

                duration, results = args.duration, []
                for name, concurrency, call, sizes in (
                    (
                        "Login",
                        args.login_concurrency,
                        caller(lambda: auth.Login(login_request, timeout=30)),
                        (login_request.ByteSize(), login_response.ByteSize()),
                    ),
                    (
                        "IntrospectToken",
                        args.introspect_concurrency,
                        caller(lambda: internal.IntrospectToken(introspect_request, timeout=30)),
                        (introspect_request.ByteSize(), introspect_response.ByteSize()),
                    ),
                ):
                    results.append(
                        await measure(
                            f"echo ({sizes[0]}/{sizes[1]} B)",
                            echo_caller(echo, *sizes),
                            concurrency,
                            duration,
                        )
                    )
                    results.append(await measure(name, call, concurrency, duration))

                jwks = caller(lambda: auth.GetJwks(auth_pb2.GetJwksRequest(), timeout=30))
                idle = await measure("GetJwks", jwks, 1, duration)
                login_load = asyncio.ensure_future(
                    measure(
                        "Login",
                        caller(lambda: auth.Login(login_request, timeout=30)),
                        args.login_concurrency,
                        duration + 2 * WARMUP_SECONDS,
                    )
                )
                await asyncio.sleep(WARMUP_SECONDS)
                loaded = await measure("GetJwks", jwks, 1, duration)
                await login_load
                return results, [("idle", idle), ("under Login load", loaded)]
        finally:
            await stop_child(process)


def argon2_parameters() -> tuple[str, float]:
    """The configured parameters, and how many verifications per second one core of this
    machine does with them (the ceiling of Login/s per hashing thread)."""
    from argon2 import PasswordHasher, Type  # noqa: PLC0415

    from gatehouse.auth.adapters.hashing import Argon2Parameters  # noqa: PLC0415
    from gatehouse.auth.settings import load_auth_settings  # noqa: PLC0415

    settings = load_auth_settings()
    parameters = Argon2Parameters(
        settings.argon2_time_cost, settings.argon2_memory_kib, settings.argon2_parallelism
    )
    hasher = PasswordHasher(
        time_cost=parameters.time_cost,
        memory_cost=parameters.memory_kib,
        parallelism=parameters.parallelism,
        type=Type.ID,
    )
    stored = hasher.hash(PASSWORD)
    count, began = 0, time.perf_counter()
    while time.perf_counter() - began < 1.0:
        hasher.verify(stored, PASSWORD)
        count += 1
    described = parameters.describe() + f", {settings.hash_workers} hashing thread(s)"
    return described, count / (time.perf_counter() - began)


def report(results: list[Result], jwks: list[tuple[str, Result]]) -> str:
    parameters, verifies = argon2_parameters()
    login = next(result for result in results if result.name == "Login")
    lines = [
        f"argon2: {parameters}; alone on one core: {verifies:.1f} verifications/s"
        f" (Login reaches {login.rate / verifies:.0%} of that)",
        f"{'target':<24} {'in flight':>9} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}"
        f" {'rate/echo':>9}  failures",
    ]
    for echo, target in zip(results[::2], results[1::2], strict=True):
        for result in (echo, target):
            ratio = result.rate / echo.rate
            lines.append(
                f"{result.name:<24} {result.concurrency:>9} {result.rate:>9.1f}"
                f" {result.percentile(0.5):>8.2f} {result.percentile(0.99):>8.2f}"
                f" {ratio:>9.3f}  {result.failures}"
            )
    idle = jwks[0][1].percentile(0.5)
    for label, result in jwks:
        p50 = result.percentile(0.5)
        lines.append(
            f"GetJwks {label:<16} {1:>9} {result.rate:>9.1f} {p50:>8.2f}"
            f" {result.percentile(0.99):>8.2f}  p50 x{p50 / idle:.2f} of idle"
        )
    return "\n".join(lines)


def _two_cpus() -> bool:
    return len(os.sched_getaffinity(0)) >= 2


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per measurement")
    parser.add_argument("--login-concurrency", type=int, default=8)
    parser.add_argument("--introspect-concurrency", type=int, default=16)
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        if _two_cpus():
            os.sched_setaffinity(0, {0})
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve(args.serve))
        return 0
    if _two_cpus():
        os.sched_setaffinity(0, {1})
    results, jwks = asyncio.run(run(args))
    print(report(results, jwks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
