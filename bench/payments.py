"""CreatePayment/s and ProcessPayment/s on SQLite and PostgreSQL, as ratios to a bare echo.

    .venv/bin/python -m bench.payments [--duration 3] [--concurrency 16]
                                       [--backends sqlite,postgresql]

Everything runs on 127.0.0.1 and is bounded (each measurement `duration` seconds after a
short warm-up; the whole run at most `--budget` seconds). Each server runs in a child
process: a bare grpc.aio echo (same mTLS, no interceptors, the request bytes sent back), and
the real payments service (interceptors, real access rules, a real database, the sandbox
provider) once per backend. This process is the load generator: `concurrency` workers on one
channel, each sending the same serialized request as the echo gets.

- CreatePayment: a fresh `request_id` per call (no idempotent replays), an approving test card.
- ProcessPayment: the payments the CreatePayment phase created, each processed once
  (PENDING -> PROCESSING -> sandbox -> COMPLETED: two transactions, a ledger entry, events).

Reported per backend and RPC: requests/s, p50/p99 latency, and the rate as a ratio to the
echo's with the same payload, measured in the same run (the machine is noisy; ratios from
one run are the result, BENCH-NOTES). Servers are pinned to CPU 0 and this process to CPU 1
when there are two CPUs. PostgreSQL: a throwaway database `gatehouse_bench_<random>` on
`GATEHOUSE_BENCH_POSTGRES_URL` (default: the local server as `postgres`), dropped afterwards;
skipped with a note when none answers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import grpc
from google.type import money_pb2

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
from gatehouse.payments.v1 import payments_pb2

SERVICE = "/gatehouse.payments.v1.PaymentsService"
APPROVE = "4242424242424242"
PERMISSIONS = ["payments.create", "payments.process", "payments.read_all"]


# --- results ---------------------------------------------------------------------------------


# --- requests --------------------------------------------------------------------------------


def create_request() -> payments_pb2.CreatePaymentRequest:
    return payments_pb2.CreatePaymentRequest(
        payment=payments_pb2.Payment(
            amount=money_pb2.Money(currency_code="USD", units=12, nanos=340_000_000),
            method=payments_pb2.PAYMENT_METHOD_CARD,
            card=payments_pb2.CardDetails(test_card_number=APPROVE),
            description="bench",
        ),
        request_id=str(uuid.uuid4()),
    )


def process_request(name: str) -> payments_pb2.ProcessPaymentRequest:
    return payments_pb2.ProcessPaymentRequest(name=name, request_id=str(uuid.uuid4()))


def create_caller(channel: grpc.aio.Channel, token: str, created: list[str]) -> Call:
    method = channel.unary_unary(
        f"{SERVICE}/CreatePayment",
        request_serializer=payments_pb2.CreatePaymentRequest.SerializeToString,
        response_deserializer=payments_pb2.CreatePaymentResponse.FromString,
    )
    metadata = (("authorization", f"Bearer {token}"),)

    async def call() -> str:
        try:
            response = await method(create_request(), metadata=metadata, timeout=10)
        except grpc.aio.AioRpcError as error:
            return status_of(error)
        created.append(response.payment.name)
        return "OK"

    return call


def process_caller(channel: grpc.aio.Channel, token: str, pending: list[str]) -> Call:
    method = channel.unary_unary(
        f"{SERVICE}/ProcessPayment",
        request_serializer=payments_pb2.ProcessPaymentRequest.SerializeToString,
        response_deserializer=payments_pb2.ProcessPaymentResponse.FromString,
    )
    metadata = (("authorization", f"Bearer {token}"),)

    async def call() -> str:
        if not pending:
            return "EXHAUSTED"
        try:
            response = await method(process_request(pending.pop()), metadata=metadata, timeout=10)
        except grpc.aio.AioRpcError as error:
            return status_of(error)
        return payments_pb2.PaymentStatus.Name(response.payment.status)

    return call


# --- servers (child processes) ---------------------------------------------------------------


async def serve_payments(certs: Path, database_url: str, jwks: dict[str, Any], home: Path) -> None:
    # Imported here: the echo child and the load generator never need the service.
    from gatehouse.payments.app import PaymentsApp  # noqa: PLC0415
    from gatehouse.payments.settings import load_payments_settings  # noqa: PLC0415
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
        name="payments",
        settings=settings,
        lifecycle=Lifecycle(),
        kv=InMemoryKeyValueStore(),
        bus=bus,
        live=live,
    )
    app = PaymentsApp(context, load_payments_settings())
    server = ServiceServer(
        app.definition(),
        credentials=server_credentials(CertificatePaths.for_name(certs, "payments")),
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


# --- PostgreSQL ------------------------------------------------------------------------------


# --- the run ---------------------------------------------------------------------------------


async def bench_echo(certs: Path, concurrency: int, duration: float) -> dict[str, Result]:
    child = await start_child("bench.payments", ["echo", "--certs", str(certs)])
    try:
        async with channel_to(certs, child.port) as channel:
            await channel.channel_ready()
            payloads = {
                "CreatePayment": create_request().SerializeToString(),
                "ProcessPayment": process_request(
                    "payments/01J00000000000000000000000"
                ).SerializeToString(),
            }
            return {
                rpc: await measure(
                    f"echo {rpc}", echo_caller(channel, payload), concurrency, duration
                )
                for rpc, payload in payloads.items()
            }
    finally:
        await stop_child(child)


async def bench_backend(
    backend: str, url: str, certs: Path, keys: Keys, home: Path, concurrency: int, duration: float
) -> list[Result]:
    child = await start_child("bench.payments", [
        backend, "--certs", str(certs), "--url", url, "--jwks", str(keys.jwks_file),
        "--home", str(home),
    ])  # fmt: skip
    try:
        async with channel_to(certs, child.port) as channel:
            await channel.channel_ready()
            created: list[str] = []
            create = await measure(
                f"{backend} CreatePayment",
                create_caller(channel, keys.token, created),
                concurrency,
                duration,
            )
            pending = list(reversed(created))  # oldest first: pop() takes from the end
            process = await measure(
                f"{backend} ProcessPayment",
                process_caller(channel, keys.token, pending),
                concurrency,
                duration,
            )
            return [create, process]
    finally:
        await stop_child(child)


async def run(backends: list[str], concurrency: int, duration: float) -> list[Result]:
    with tempfile.TemporaryDirectory(prefix="gatehouse-bench-payments-") as tmp:
        root = Path(tmp)
        from gatehouse.mesh.catalog import certificate_identities  # noqa: PLC0415
        from gatehouse.runtime.tls import ensure_dev_certificates  # noqa: PLC0415

        certs = root / "certs"
        ensure_dev_certificates(certs, certificate_identities())
        keys = make_keys(root, PERMISSIONS)
        echo = await bench_echo(certs, concurrency, duration)
        results = list(echo.values())
        for backend in backends:
            home = root / backend
            if backend == "sqlite":
                url = f"sqlite+aiosqlite:///{home / 'payments.db'}"
                results += await bench_backend(
                    backend, url, certs, keys, home, concurrency, duration
                )
                continue
            try:
                async with postgres_database() as url:
                    results += await bench_backend(
                        backend, url, certs, keys, home, concurrency, duration
                    )
            except (OSError, TimeoutError) as error:
                print(f"PostgreSQL skipped: {type(error).__name__}: {error}", file=sys.stderr)
            except Exception as error:
                if "connect" not in type(error).__name__.lower() and "password" not in str(error):
                    raise
                print(f"PostgreSQL skipped: {type(error).__name__}", file=sys.stderr)
        return results


def report(results: list[Result], concurrency: int) -> str:
    echo = {r.label.split()[1]: r for r in results if r.label.startswith("echo ")}
    lines = [
        f"{concurrency} in flight; servers on CPU 0, load generator on CPU 1"
        if PINNED["on"]
        else f"{concurrency} in flight; one CPU shared by servers and load generator",
        f"{'what':<28} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'/ echo':>7}  outcomes",
    ]
    lines += [result_row(r, echo[r.label.split()[1]].rate, 28) for r in results]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per measurement")
    parser.add_argument("--concurrency", type=int, default=16, help="calls in flight")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--budget", type=float, default=600.0, help="hard limit, seconds")
    parser.add_argument("--serve", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--certs", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--url", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--jwks", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--home", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve == "echo":
        asyncio.run(serve_echo(args.certs, "payments"))
        return 0
    if args.serve is not None:
        jwks = json.loads(args.jwks.read_text())
        asyncio.run(serve_payments(args.certs, args.url, jwks, args.home))
        return 0
    if not 0 < args.duration <= 60 or not 1 <= args.concurrency <= 256:
        parser.error("--duration must be in (0, 60] and --concurrency in [1, 256]")
    backends = [b for b in args.backends.split(",") if b]
    if set(backends) - {"sqlite", "postgresql"}:
        parser.error("--backends takes sqlite and/or postgresql")
    if len(os.sched_getaffinity(0)) >= 2 and shutil.which("taskset"):
        PINNED["on"] = True
        os.sched_setaffinity(0, {1})

    async def bounded() -> list[Result]:
        async with asyncio.timeout(args.budget):
            return await run(backends, args.concurrency, args.duration)

    results = asyncio.run(bounded())
    print(report(results, args.concurrency))
    return 0


if __name__ == "__main__":
    sys.exit(main())
