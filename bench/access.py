"""ValidatePin/s and p99 on SQLite and PostgreSQL, as a ratio to a bare grpc.aio echo.

    .venv/bin/python -m bench.access [--duration 3] [--concurrency 16] [--buildings 1]
                                     [--backends sqlite,postgresql]

Everything runs on 127.0.0.1 and is bounded (each measurement `duration` seconds after a
short warm-up; the whole run at most `--budget` seconds). Each server runs in a child
process: a bare grpc.aio echo (same mTLS, no interceptors, the request bytes sent back), and
the real access service (interceptors, real access rules, a real database) once per backend.
Buildings and doors come from a fixed directory inside the child (what monitoring would
answer; access caches monitoring's answers, so the steady state does not call it anyway).

This process is the load generator: each building has one door whose controller has its own
certificate and one channel; `concurrency` workers spread over the buildings, each sending
ValidatePin with a fresh `request_id` and the door's valid PIN (unlimited uses). Every call is
a full decision: device identity check, one transaction that locks the building's chain head,
reads the grants, counts the use, appends a hash-chained log entry, an outbox event and the
idempotent reply. Decisions of one building are serialised by design (docs/decisions/
0008-access.md), so `--buildings` shows how throughput spreads over buildings.

Reported per backend: requests/s, p50/p99 latency, and the rate as a ratio to the echo's with
the same payload, measured in the same run (ratios from one run are the result,
BENCH-NOTES). Servers are pinned to CPU 0 and this process to CPU 1 when there are two CPUs.
PostgreSQL: a throwaway database `gatehouse_bench_<random>` on `GATEHOUSE_BENCH_POSTGRES_URL`
(default: the local server as `postgres`), dropped afterwards; skipped with a note when none
answers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gatehouse.access.v1 import access_pb2
from gatehouse.clients.channel import ChannelFactory, ClientCredentials

HOST = "127.0.0.1"
WARMUP_SECONDS = 0.5
STARTUP_TIMEOUT = 60.0
SERVICE = "/gatehouse.access.v1.AccessService"
ECHO_METHOD = "/bench.Echo/Echo"
KID = "bench-key"
PERMISSIONS = ["access.*"]
DOOR = "entrance"
DEFAULT_POSTGRES = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"

Call = Callable[[], Awaitable[str]]


def building_id(index: int) -> str:
    return f"bench{index}"


def door_name(index: int) -> str:
    return f"buildings/{building_id(index)}/doors/{DOOR}"


def controller_name(index: int) -> str:
    return f"buildings/{building_id(index)}/devices/ctl{index}"


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


async def measure(label: str, call: Call, concurrency: int, duration: float) -> Result:
    """`concurrency` workers calling until the deadline (after a warm-up), or until `call`
    says "EXHAUSTED" (the work ran out)."""
    result = Result(label)
    recording = False
    deadline = 0.0

    async def worker() -> None:
        while time.monotonic() < deadline:
            began = time.perf_counter()
            outcome = await call()
            if outcome == "EXHAUSTED":
                return
            if recording:
                result.latencies_ms.append((time.perf_counter() - began) * 1000)
                result.outcomes[outcome] += 1

    deadline = time.monotonic() + WARMUP_SECONDS
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    recording = True
    began = time.monotonic()
    deadline = began + duration
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.seconds = time.monotonic() - began
    result.count = len(result.latencies_ms)
    return result


# --- child processes ------------------------------------------------------------------------


async def _announce_and_wait(port: int, stop: Callable[[float], Awaitable[Any]]) -> None:
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


async def start_child(*argv: str) -> Child:
    command = [sys.executable, "-m", "bench.access", "--serve", *argv]
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
async def postgres_database() -> Any:
    from sqlalchemy import make_url  # noqa: PLC0415

    admin = os.environ.get("GATEHOUSE_BENCH_POSTGRES_URL", DEFAULT_POSTGRES)
    name = f"gatehouse_bench_{secrets.token_hex(4)}"
    await _admin(admin, f'CREATE DATABASE "{name}"')
    try:
        yield make_url(admin).set(database=name).render_as_string(hide_password=False)
    finally:
        await _admin(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- requests --------------------------------------------------------------------------------


def validate_request(index: int, pin: str) -> access_pb2.ValidatePinRequest:
    return access_pb2.ValidatePinRequest(
        door=door_name(index), pin=pin, request_id=str(uuid.uuid4())
    )


def _status(error: grpc.aio.AioRpcError) -> str:
    return error.code().name


def echo_caller(channel: grpc.aio.Channel, payload: bytes) -> Call:
    method: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(ECHO_METHOD)

    async def call() -> str:
        try:
            await method(payload, timeout=10)
        except grpc.aio.AioRpcError as error:
            return _status(error)
        return "OK"

    return call


def validate_caller(channels: list[grpc.aio.Channel], pins: list[str]) -> Call:
    methods = [
        channel.unary_unary(
            f"{SERVICE}/ValidatePin",
            request_serializer=access_pb2.ValidatePinRequest.SerializeToString,
            response_deserializer=access_pb2.ValidatePinResponse.FromString,
        )
        for channel in channels
    ]
    turn = {"next": 0}

    async def call() -> str:
        index = turn["next"] % len(methods)
        turn["next"] += 1
        try:
            response = await methods[index](validate_request(index, pins[index]), timeout=10)
        except grpc.aio.AioRpcError as error:
            return _status(error)
        if response.decision == access_pb2.ACCESS_DECISION_GRANTED:
            return "GRANTED"
        return access_pb2.DenyReason.Name(response.deny_reason)

    return call


# --- servers (run in the children) ----------------------------------------------------------


async def serve_echo(certs: Path) -> None:
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
        f"{HOST}:0", server_credentials(CertificatePaths.for_name(certs, "access"))
    )
    await server.start()
    await _announce_and_wait(port, server.stop)


class FixedDirectory:
    """Monitoring's answers for the bench buildings: one door each, with its controller."""

    def __init__(self, buildings: int) -> None:
        from gatehouse.access.handlers.ports import BuildingInfo, DoorInfo  # noqa: PLC0415

        self._buildings = {
            building_id(i): BuildingInfo(building_id(i), "Europe/Madrid") for i in range(buildings)
        }
        self._doors = {
            (building_id(i), DOOR): DoorInfo(building_id(i), DOOR, controller_name(i))
            for i in range(buildings)
        }

    async def building(self, building: str) -> Any:
        return self._buildings.get(building)

    async def door(self, building: str, door: str) -> Any:
        return self._doors.get((building, door))

    async def doors(self, building: str) -> list[Any]:
        return [info for (b, _), info in self._doors.items() if b == building]


async def serve_access(
    certs: Path, database_url: str, jwks: dict[str, Any], home: Path, buildings: int
) -> None:
    # Imported here: the echo child and the load generator never need the service.
    from gatehouse.access.app import create_access  # noqa: PLC0415
    from gatehouse.access.settings import load_access_settings  # noqa: PLC0415
    from gatehouse.runtime.bus import InProcessEventBus  # noqa: PLC0415
    from gatehouse.runtime.config import load_settings  # noqa: PLC0415
    from gatehouse.runtime.identity import JwksTokenVerifier, StaticKeySource  # noqa: PLC0415
    from gatehouse.runtime.kv import InMemoryKeyValueStore  # noqa: PLC0415
    from gatehouse.runtime.live import LiveHub  # noqa: PLC0415
    from gatehouse.runtime.server import Lifecycle, ServiceServer  # noqa: PLC0415
    from gatehouse.runtime.service_context import ServiceContext  # noqa: PLC0415
    from gatehouse.runtime.telemetry import create_tracer_provider  # noqa: PLC0415
    from gatehouse.runtime.tls import CertificatePaths, server_credentials  # noqa: PLC0415

    settings = load_settings(home=home, certs_dir=certs, database_url=database_url)
    bus = InProcessEventBus()
    live = LiveHub(bus)
    context = ServiceContext(
        name="access",
        settings=settings,
        lifecycle=Lifecycle(),
        kv=InMemoryKeyValueStore(),
        bus=bus,
        live=live,
    )
    definition, _app = create_access(
        context,
        settings=load_access_settings(),
        directory=FixedDirectory(buildings),
        doors=None,
        consume_alerts=False,
    )
    server = ServiceServer(
        definition,
        credentials=server_credentials(CertificatePaths.for_name(certs, "access")),
        token_verifier=JwksTokenVerifier(
            StaticKeySource(jwks),
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
        ),
        tracer_provider=create_tracer_provider("bench"),
        host=HOST,
        port=0,
        lifecycle=context.lifecycle,
    )
    await live.start()
    port = await server.start()

    async def stop() -> None:
        await server.stop(1)
        await live.stop()
        await bus.close()

    await _announce_and_wait(port, lambda _grace: stop())


# --- the run ---------------------------------------------------------------------------------


@dataclass
class Keys:
    token: str
    jwks_file: Path


def make_keys(directory: Path) -> Keys:
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
        "permissions": PERMISSIONS,
    }
    token = jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": KID})
    return Keys(token, jwks_file)


def channel_to(certs: Path, port: int, identity: str = "client") -> grpc.aio.Channel:
    return ChannelFactory(ClientCredentials.from_directory(certs, identity)).channel(
        f"{HOST}:{port}"
    )


def controller_identity(certs: Path, index: int) -> str:
    from gatehouse.runtime.tls import (  # noqa: PLC0415
        device_certificate_file_name,
        issue_device_certificate,
    )

    name = controller_name(index)
    if not (certs / f"{device_certificate_file_name(name)}.pem").exists():
        issue_device_certificate(certs, name)
    return device_certificate_file_name(name)


async def bench_echo(certs: Path, concurrency: int, duration: float) -> Result:
    child = await start_child("echo", "--certs", str(certs))
    try:
        async with channel_to(certs, child.port) as channel:
            await channel.channel_ready()
            payload = validate_request(0, "12345678").SerializeToString()
            return await measure(
                "echo ValidatePin", echo_caller(channel, payload), concurrency, duration
            )
    finally:
        await stop_child(child)


async def issue_pins(channel: grpc.aio.Channel, token: str, buildings: int) -> list[str]:
    issue = channel.unary_unary(
        f"{SERVICE}/IssuePin",
        request_serializer=access_pb2.IssuePinRequest.SerializeToString,
        response_deserializer=access_pb2.IssuePinResponse.FromString,
    )
    pins = []
    for index in range(buildings):
        response = await issue(
            access_pb2.IssuePinRequest(
                parent=f"buildings/{building_id(index)}",
                grant=access_pb2.Grant(holder="users/bench", doors=[door_name(index)]),
                request_id=str(uuid.uuid4()),
            ),
            metadata=(("authorization", f"Bearer {token}"),),
            timeout=30,
        )
        pins.append(response.pin)
    return pins


async def bench_backend(
    backend: str,
    url: str,
    certs: Path,
    keys: Keys,
    home: Path,
    concurrency: int,
    duration: float,
    buildings: int,
) -> Result:
    child = await start_child(
        backend, "--certs", str(certs), "--url", url, "--jwks", str(keys.jwks_file),
        "--home", str(home), "--buildings", str(buildings),
    )  # fmt: skip
    try:
        async with contextlib.AsyncExitStack() as stack:
            operator = await stack.enter_async_context(channel_to(certs, child.port))
            await operator.channel_ready()
            pins = await issue_pins(operator, keys.token, buildings)
            controllers = [
                await stack.enter_async_context(
                    channel_to(certs, child.port, controller_identity(certs, index))
                )
                for index in range(buildings)
            ]
            return await measure(
                f"{backend} ValidatePin",
                validate_caller(controllers, pins),
                concurrency,
                duration,
            )
    finally:
        await stop_child(child)


async def run(
    backends: list[str], concurrency: int, duration: float, buildings: int
) -> list[Result]:
    with tempfile.TemporaryDirectory(prefix="gatehouse-bench-access-") as tmp:
        root = Path(tmp)
        from gatehouse.mesh.catalog import certificate_identities  # noqa: PLC0415
        from gatehouse.runtime.tls import ensure_dev_certificates  # noqa: PLC0415

        certs = root / "certs"
        ensure_dev_certificates(certs, certificate_identities())
        keys = make_keys(root)
        results = [await bench_echo(certs, concurrency, duration)]
        for backend in backends:
            home = root / backend
            if backend == "sqlite":
                url = f"sqlite+aiosqlite:///{home / 'access.db'}"
                results.append(
                    await bench_backend(
                        backend, url, certs, keys, home, concurrency, duration, buildings
                    )
                )
                continue
            try:
                async with postgres_database() as url:
                    results.append(
                        await bench_backend(
                            backend, url, certs, keys, home, concurrency, duration, buildings
                        )
                    )
            except (OSError, TimeoutError) as error:
                print(f"PostgreSQL skipped: {type(error).__name__}: {error}", file=sys.stderr)
            except Exception as error:
                if "connect" not in type(error).__name__.lower() and "password" not in str(error):
                    raise
                print(f"PostgreSQL skipped: {type(error).__name__}", file=sys.stderr)
        return results


def report(results: list[Result], concurrency: int, buildings: int) -> str:
    echo = next(r for r in results if r.label.startswith("echo "))
    lines = [
        (
            f"{concurrency} in flight over {buildings} building(s); servers on CPU 0, "
            "load generator on CPU 1"
        )
        if PINNED["on"]
        else f"{concurrency} in flight over {buildings} building(s); one CPU shared",
        f"{'what':<24} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'/ echo':>7}  outcomes",
    ]
    for result in results:
        ratio = result.rate / echo.rate if echo.rate else float("nan")
        outcomes = ", ".join(f"{k} {v}" for k, v in result.outcomes.most_common())
        lines.append(
            f"{result.label:<24} {result.rate:>8.0f} {result.percentile(0.5):>8.2f}"
            f" {result.percentile(0.99):>8.2f} {ratio:>7.3f}  {outcomes}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per measurement")
    parser.add_argument("--concurrency", type=int, default=16, help="calls in flight")
    parser.add_argument("--buildings", type=int, default=1, help="buildings the load spreads over")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--budget", type=float, default=600.0, help="hard limit, seconds")
    parser.add_argument("--serve", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--certs", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--url", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--jwks", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--home", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve == "echo":
        asyncio.run(serve_echo(args.certs))
        return 0
    if args.serve is not None:
        jwks = json.loads(args.jwks.read_text())
        asyncio.run(serve_access(args.certs, args.url, jwks, args.home, args.buildings))
        return 0
    if not 0 < args.duration <= 60 or not 1 <= args.concurrency <= 256:
        parser.error("--duration must be in (0, 60] and --concurrency in [1, 256]")
    if not 1 <= args.buildings <= 64:
        parser.error("--buildings must be in [1, 64]")
    backends = [b for b in args.backends.split(",") if b]
    if set(backends) - {"sqlite", "postgresql"}:
        parser.error("--backends takes sqlite and/or postgresql")
    if len(os.sched_getaffinity(0)) >= 2 and shutil.which("taskset"):
        PINNED["on"] = True
        os.sched_setaffinity(0, {1})

    async def bounded() -> list[Result]:
        async with asyncio.timeout(args.budget):
            return await run(backends, args.concurrency, args.duration, args.buildings)

    results = asyncio.run(bounded())
    print(report(results, args.concurrency, args.buildings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
