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
import shutil
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import grpc

from bench.common import (
    HOST,
    PINNED,
    Call,
    Keys,
    Result,
    announce_and_wait,
    channel_to,
    echo_caller,
    make_keys,
    measure,
    postgres_database,
    result_row,
    serve_echo,
    start_child,
    status_of,
    stop_child,
)
from gatehouse.access.v1 import access_pb2

SERVICE = "/gatehouse.access.v1.AccessService"
PERMISSIONS = ["access.*"]
DOOR = "entrance"


def building_id(index: int) -> str:
    return f"bench{index}"


def door_name(index: int) -> str:
    return f"buildings/{building_id(index)}/doors/{DOOR}"


def controller_name(index: int) -> str:
    return f"buildings/{building_id(index)}/devices/ctl{index}"


# --- results ---------------------------------------------------------------------------------


# --- child processes ------------------------------------------------------------------------


# --- PostgreSQL ------------------------------------------------------------------------------


# --- requests --------------------------------------------------------------------------------


def validate_request(index: int, pin: str) -> access_pb2.ValidatePinRequest:
    return access_pb2.ValidatePinRequest(
        door=door_name(index), pin=pin, request_id=str(uuid.uuid4())
    )


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
            return status_of(error)
        if response.decision == access_pb2.ACCESS_DECISION_GRANTED:
            return "GRANTED"
        return access_pb2.DenyReason.Name(response.deny_reason)

    return call


# --- servers (run in the children) ----------------------------------------------------------


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

    await announce_and_wait(port, lambda _grace: stop())


# --- the run ---------------------------------------------------------------------------------


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
    child = await start_child("bench.access", ["echo", "--certs", str(certs)])
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
    child = await start_child("bench.access", [
        backend, "--certs", str(certs), "--url", url, "--jwks", str(keys.jwks_file),
        "--home", str(home), "--buildings", str(buildings),
    ])  # fmt: skip
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
        keys = make_keys(root, PERMISSIONS)
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
    lines += [result_row(result, echo.rate, 24) for result in results]
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
        asyncio.run(serve_echo(args.certs, "access"))
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
