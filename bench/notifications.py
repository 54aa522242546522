"""Notifications delivered per second to a local SMTP sink and to a local webhook sink, as
ratios to a bare grpc.aio echo measured in the same run.

    .venv/bin/python -m bench.notifications [--duration 3] [--concurrency 16]
                                            [--channels email,webhook]

Everything runs on 127.0.0.1 and is bounded (`--budget`). Servers run in child processes: a
bare grpc.aio echo (same mTLS, no interceptors, the request bytes sent back) and the real
notifications service (interceptors, access rules, SQLite in a temporary home, its delivery
worker and outbox relay). This process is the load generator and hosts both sinks: an
aiosmtpd SMTP server and a raw asyncio HTTP server answering 200 with a receipt, each
counting what arrives.

Per channel: `concurrency` workers call SendNotification for `duration` seconds (inline
content, a distinct address per message so the per-recipient rate limit never holds one),
then the run waits until every accepted notification has arrived at its sink. Reported:
SendNotification calls/s (accepted) with p50/p99, notifications/s *delivered* (arrivals over
the time from the first call to the last arrival), and both as ratios to the echo's calls/s
with the same request bytes. Servers are pinned to CPU 0 and this process to CPU 1 when
there are two CPUs.
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
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import SecretStr

from bench.common import (
    HOST,
    KID,
    PINNED,
    Call,
    Result,
    announce_and_wait,
    channel_to,
    echo_caller,
    measure_into,
    serve_echo,
    start_child,
    status_of,
    stop_child,
)
from gatehouse.notifications.adapters.sink import MailSink
from gatehouse.notifications.v1 import notifications_pb2 as pb

DRAIN_TIMEOUT = 120.0
SERVICE = "/gatehouse.notifications.v1.NotificationsService"


@dataclass
class DeliveryResult(Result):
    """A measurement of SendNotification, plus what reached the sinks afterwards."""

    delivered: int = 0
    delivery_seconds: float = 0.0

    @property
    def delivered_rate(self) -> float:
        return self.delivered / self.delivery_seconds if self.delivery_seconds else 0.0


# --- the webhook sink ------------------------------------------------------------------------


class WebhookSink:
    """HTTP/1.1 keep-alive on raw asyncio streams: counts POSTs, answers 200 with a receipt."""

    def __init__(self) -> None:
        self.count = 0
        self.last_arrival = 0.0
        self.port = 0
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, HOST, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        body = b'{"messageId":"bench"}'
        answer = (
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, ValueError):
            while True:
                line = await reader.readline()
                if not line:
                    return
                length = 0
                while True:
                    header = await reader.readline()
                    if header in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = header.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip())
                await reader.readexactly(length)
                self.count += 1
                self.last_arrival = time.monotonic()
                writer.write(answer)
                await writer.drain()
        writer.close()


# --- requests --------------------------------------------------------------------------------


def send_request(channel: str, webhook_url: str, n: int) -> pb.SendNotificationRequest:
    if channel == "email":
        return pb.SendNotificationRequest(
            recipient=pb.Recipient(address=pb.Address(email_address=f"bench-{n}@example.com")),
            channel=pb.CHANNEL_EMAIL,
            inline_content=pb.InlineContent(
                subject="Bench", text_body="A benchmark message.", html_body="<p>Bench</p>"
            ),
            request_id=str(uuid.uuid4()),
        )
    # One sink URL, made distinct per message by its query string (the rate limit counts
    # per address, and a benchmark is not about holding messages).
    return pb.SendNotificationRequest(
        recipient=pb.Recipient(address=pb.Address(webhook_url=f"{webhook_url}?n={n}")),
        channel=pb.CHANNEL_WEBHOOK,
        inline_content=pb.InlineContent(subject="Bench", text_body="A benchmark message."),
        request_id=str(uuid.uuid4()),
    )


def send_caller(
    channel: grpc.aio.Channel, token: str, kind: str, webhook_url: str, accepted: list[int]
) -> Call:
    method = channel.unary_unary(
        f"{SERVICE}/SendNotification",
        request_serializer=pb.SendNotificationRequest.SerializeToString,
        response_deserializer=pb.SendNotificationResponse.FromString,
    )
    metadata = (("authorization", f"Bearer {token}"),)
    counter = iter(range(10**9))

    async def call() -> str:
        try:
            await method(
                send_request(kind, webhook_url, next(counter)), metadata=metadata, timeout=10
            )
        except grpc.aio.AioRpcError as error:
            return status_of(error)
        accepted.append(1)
        return "OK"

    return call


# --- servers (child processes) ---------------------------------------------------------------


async def serve_notifications(
    certs: Path, jwks: dict[str, Any], home: Path, smtp_port: int
) -> None:
    # Imported here: the echo child and the load generator never need the service.
    from gatehouse.notifications.adapters.directory import StaticUserDirectory  # noqa: PLC0415
    from gatehouse.notifications.app import NotificationsApp  # noqa: PLC0415
    from gatehouse.notifications.settings import NotificationsSettings  # noqa: PLC0415
    from gatehouse.runtime.bus import InProcessEventBus  # noqa: PLC0415
    from gatehouse.runtime.config import load_settings  # noqa: PLC0415
    from gatehouse.runtime.identity import JwksTokenVerifier, StaticKeySource  # noqa: PLC0415
    from gatehouse.runtime.kv import InMemoryKeyValueStore  # noqa: PLC0415
    from gatehouse.runtime.live import LiveHub  # noqa: PLC0415
    from gatehouse.runtime.server import Lifecycle, ServiceServer  # noqa: PLC0415
    from gatehouse.runtime.service_context import ServiceContext  # noqa: PLC0415
    from gatehouse.runtime.telemetry import create_tracer_provider  # noqa: PLC0415
    from gatehouse.runtime.tls import CertificatePaths, server_credentials  # noqa: PLC0415

    settings = load_settings(home=home, certs_dir=certs)
    bus = InProcessEventBus()
    live = LiveHub(bus)
    context = ServiceContext(
        name="notifications",
        settings=settings,
        lifecycle=Lifecycle(),
        kv=InMemoryKeyValueStore(),
        bus=bus,
        live=live,
    )
    app = NotificationsApp(
        context,
        NotificationsSettings(
            _env_file=None,  # type: ignore[call-arg]
            smtp_port=smtp_port,
            mail_sink=False,
            webhook_allowed_hosts=[HOST],
            webhook_allow_loopback_http=True,
            webhook_secret=SecretStr("bench-secret"),
            worker_interval=timedelta(milliseconds=50),
            consumers=False,
            send_quota_per_minute=0,  # one bench caller sends far more than a person
        ),
        directory=StaticUserDirectory(),
    )
    server = ServiceServer(
        app.definition(),
        credentials=server_credentials(CertificatePaths.for_name(certs, "notifications")),
        token_verifier=JwksTokenVerifier(
            StaticKeySource(jwks), issuer=settings.jwt_issuer, audience=settings.jwt_audience
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


def make_keys(directory: Path) -> tuple[str, Path]:
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
        "permissions": ["notifications.send"],
    }
    return jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": KID}), jwks_file


async def bench_echo(
    certs: Path, channels: list[str], webhook_url: str, concurrency: int, duration: float
) -> dict[str, DeliveryResult]:
    child = await start_child("bench.notifications", ["echo", "--certs", str(certs)])
    try:
        async with channel_to(certs, child.port) as channel:
            await channel.channel_ready()
            return {
                kind: await measure_into(
                    DeliveryResult(f"echo {kind}"),
                    echo_caller(channel, send_request(kind, webhook_url, 0).SerializeToString()),
                    concurrency,
                    duration,
                )
                for kind in channels
            }
    finally:
        await stop_child(child)


async def _drained(arrived: Callable[[], int], expected: int) -> None:
    async with asyncio.timeout(DRAIN_TIMEOUT):
        while arrived() < expected:  # noqa: ASYNC110 - polling two sinks' counters
            await asyncio.sleep(0.02)


async def bench_service(
    certs: Path,
    token: str,
    jwks_file: Path,
    home: Path,
    channels: list[str],
    concurrency: int,
    duration: float,
) -> list[DeliveryResult]:
    mail = MailSink()
    await mail.start()
    hooks = WebhookSink()
    await hooks.start()
    webhook_url = f"http://{HOST}:{hooks.port}/hook"
    child = await start_child("bench.notifications", [
        "notifications", "--certs", str(certs), "--jwks", str(jwks_file), "--home", str(home),
        "--smtp-port", str(mail.port),
    ])  # fmt: skip
    results: list[DeliveryResult] = []
    try:
        async with channel_to(certs, child.port) as channel:
            await channel.channel_ready()
            for kind in channels:
                accepted: list[int] = []
                before = len(mail.received) if kind == "email" else hooks.count
                began = time.monotonic()
                result = await measure_into(
                    DeliveryResult(f"service {kind}"),
                    send_caller(channel, token, kind, webhook_url, accepted),
                    concurrency,
                    duration,
                )

                def arrived(kind: str = kind, before: int = before) -> int:
                    return (len(mail.received) if kind == "email" else hooks.count) - before

                try:
                    await _drained(arrived, len(accepted))
                except TimeoutError:
                    result.outcomes["NOT_DELIVERED_IN_TIME"] += len(accepted) - arrived()
                result.delivered = arrived()
                result.delivery_seconds = time.monotonic() - began
                results.append(result)
    finally:
        await stop_child(child)
        await hooks.stop()
        await mail.stop()
    return results


async def run(channels: list[str], concurrency: int, duration: float) -> list[DeliveryResult]:
    with tempfile.TemporaryDirectory(prefix="gatehouse-bench-notifications-") as tmp:
        root = Path(tmp)
        from gatehouse.mesh.catalog import certificate_identities  # noqa: PLC0415
        from gatehouse.runtime.tls import ensure_dev_certificates  # noqa: PLC0415

        certs = root / "certs"
        ensure_dev_certificates(certs, certificate_identities())
        token, jwks_file = make_keys(root)
        echo = await bench_echo(certs, channels, "http://127.0.0.1:1/hook", concurrency, duration)
        service = await bench_service(
            certs, token, jwks_file, root / "home", channels, concurrency, duration
        )
        return [*echo.values(), *service]


def report(results: list[DeliveryResult], concurrency: int) -> str:
    echo = {r.label.split()[1]: r for r in results if r.label.startswith("echo ")}
    lines = [
        f"{concurrency} in flight; servers on CPU 0, load generator and sinks on CPU 1"
        if PINNED["on"]
        else f"{concurrency} in flight; one CPU shared by servers, sinks and load generator",
        f"{'what':<18} {'calls/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'/ echo':>7}"
        f" {'delivered/s':>12} {'/ echo':>7}  outcomes",
    ]
    for result in results:
        kind = result.label.split()[1]
        base = echo[kind].rate
        ratio = result.rate / base if base else float("nan")
        delivered = (
            f"{result.delivered_rate:>12.0f} {result.delivered_rate / base:>7.3f}"
            if result.delivery_seconds and base
            else f"{'-':>12} {'-':>7}"
        )
        outcomes = ", ".join(f"{k} {v}" for k, v in result.outcomes.most_common())
        lines.append(
            f"{result.label:<18} {result.rate:>8.0f} {result.percentile(0.5):>8.2f}"
            f" {result.percentile(0.99):>8.2f} {ratio:>7.3f} {delivered}  {outcomes}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per measurement")
    parser.add_argument("--concurrency", type=int, default=16, help="calls in flight")
    parser.add_argument("--channels", default="email,webhook")
    parser.add_argument("--budget", type=float, default=600.0, help="hard limit, seconds")
    parser.add_argument("--serve", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--certs", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--jwks", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--home", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--smtp-port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve == "echo":
        asyncio.run(serve_echo(args.certs, "notifications"))
        return 0
    if args.serve is not None:
        jwks = json.loads(args.jwks.read_text())
        asyncio.run(serve_notifications(args.certs, jwks, args.home, args.smtp_port))
        return 0
    if not 0 < args.duration <= 60 or not 1 <= args.concurrency <= 256:
        parser.error("--duration must be in (0, 60] and --concurrency in [1, 256]")
    channels = [c for c in args.channels.split(",") if c]
    if not channels or set(channels) - {"email", "webhook"}:
        parser.error("--channels takes email and/or webhook")
    if len(os.sched_getaffinity(0)) >= 2 and shutil.which("taskset"):
        PINNED["on"] = True
        os.sched_setaffinity(0, {1})

    async def bounded() -> list[DeliveryResult]:
        async with asyncio.timeout(args.budget):
            return await run(channels, args.concurrency, args.duration)

    results = asyncio.run(bounded())
    print(report(results, args.concurrency))
    return 0


if __name__ == "__main__":
    sys.exit(main())
