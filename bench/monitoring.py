"""What the monitoring service's streams cost, against bare grpc.aio streams in the same run.

    .venv/bin/python -m bench.monitoring [--duration 5] [--streams 4] [--watchers 100]
                                         [--events 2000] [--budget 300]

Two measurements, each as a ratio to a bare grpc.aio server doing the same streaming with
the same messages (same mTLS, no interceptors, no storage):

- readings/s ingested over ReportReadings: `--streams` devices (token credentials) upload
  1000-reading batches for `--duration` seconds; the real service validates each batch and
  stores it in one transaction (SQLite file by default, `--database-url` for PostgreSQL).
  The bare server parses the same messages and counts the readings.
- events/s fanned out to `--watchers` StreamEvents watchers of one building: `--events`
  feed items are published into the building's feed stream (what the feed projection writes)
  and the rate is deliveries per second over all watchers, from the first publish to the last
  delivery. The bare server fans the same StreamEventsResponse messages out to as many
  server streams through per-stream queues.

The server runs in a subprocess of its own (`serve`, below) pinned to CPU 0, the load
generator here on CPU 1 when there are two CPUs (BENCH-NOTES). Everything listens on
127.0.0.1 only, each phase is bounded in time and `--budget` bounds the run. Not part of
`make test`: it measures, it does not assert.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gatehouse.clients.channel import ChannelFactory, ClientCredentials
from gatehouse.monitoring.v1 import events_pb2, monitoring_pb2, monitoring_pb2_grpc
from gatehouse.runtime.identity import DEVICE_TOKEN_HEADER
from gatehouse.runtime.tls import ensure_dev_certificates

BARE_READINGS = "/bench.Bare/ReportReadings"
BARE_FEED = "/bench.Bare/StreamEvents"
CONTROL_PUBLISH = "/bench.Control/Publish"
STARTUP_TIMEOUT = 60.0
BATCH_SIZE = 1000
KID = "bench-key"


# --- shared helpers ----------------------------------------------------------------------------


def _two_cpus() -> bool:
    return (os.cpu_count() or 1) >= 2


def _pin_to(cpu: int) -> None:
    if _two_cpus() and hasattr(os, "sched_setaffinity"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {cpu})


def reading_batch(size: int = BATCH_SIZE) -> monitoring_pb2.ReadingBatch:
    """Distinct (metric, time) pairs ending now, so every reading is stored."""
    end = datetime.now(UTC)
    batch = monitoring_pb2.ReadingBatch(batch_id=str(uuid.uuid4()))
    for index in range(size):
        reading = batch.readings.add(metric="temperature_celsius", value=20.0 + index % 7)
        reading.time.FromDatetime(end - timedelta(microseconds=index))
    return batch


def feed_event(building: str, index: int) -> Any:
    """A representative feed item: an `alert.triggered` envelope."""
    from gatehouse.runtime.events import new_event  # noqa: PLC0415

    alert = monitoring_pb2.Alert(
        name=f"{building}/alerts/bench{index}",
        rule=monitoring_pb2.ALERT_RULE_DOOR_FORCED,
        severity=4,  # type: ignore[arg-type]
        state=monitoring_pb2.ALERT_STATE_OPEN,
        device=f"{building}/devices/bench",
        summary=f"Door forced: main-entrance ({index})",
        occurrence_count=1,
    )
    return new_event(
        "alert.triggered",
        source="monitoring",
        subject=alert.name,
        data=events_pb2.AlertTriggered(alert=alert, building=building),
    )


# --- the server side (a subprocess) ------------------------------------------------------------


async def serve(args: argparse.Namespace) -> None:
    _pin_to(0)
    certs = Path(args.certs)
    if args.mode == "bare":
        server, port, publish = await _bare_server(certs)
    else:
        server, port, publish = await _real_server(args, certs)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    del publish
    await asyncio.to_thread(Path(args.port_file).write_text, str(port))
    await stop.wait()
    await server(0.5)


def _control_handler(publish: Callable[[str, int], Awaitable[None]]) -> grpc.GenericRpcHandler:
    async def publish_rpc(request: bytes, context: Any) -> bytes:
        order = json.loads(request)
        await publish(str(order["building"]), int(order["count"]))
        return b"{}"

    return grpc.method_handlers_generic_handler(
        "bench.Control",
        {"Publish": grpc.unary_unary_rpc_method_handler(publish_rpc)},
    )


@dataclass(eq=False)
class _Subscriber:
    items: deque[Any] = field(default_factory=deque)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)


async def _bare_server(
    certs: Path,
) -> tuple[Callable[[float], Awaitable[None]], int, Callable[[str, int], Awaitable[None]]]:
    from gatehouse.runtime.tls import CertificatePaths, server_credentials  # noqa: PLC0415

    subscribers: set[_Subscriber] = set()

    async def readings(requests: AsyncIterator[Any], context: Any) -> Any:
        batches = count = 0
        async for request in requests:
            batches += 1
            count += len(request.batch.readings)
        return monitoring_pb2.ReportReadingsResponse(batch_count=batches, accepted_count=count)

    async def feed(request: Any, context: Any) -> AsyncIterator[Any]:
        # The plainest fan-out: a list and a wake-up per stream, drained as it fills.
        subscriber = _Subscriber()
        subscribers.add(subscriber)
        try:
            await context.send_initial_metadata(())
            while True:
                while subscriber.items:
                    yield subscriber.items.popleft()
                subscriber.wakeup.clear()
                await subscriber.wakeup.wait()
        finally:
            subscribers.discard(subscriber)

    async def publish(building: str, count: int) -> None:
        from gatehouse.monitoring.handlers.feed import feed_item  # noqa: PLC0415

        for index in range(count):
            response = monitoring_pb2.StreamEventsResponse(
                event=feed_item(feed_event(building, index))
            )
            for subscriber in subscribers:
                subscriber.items.append(response)
                subscriber.wakeup.set()
            if index % 100 == 99:
                await asyncio.sleep(0)

    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "bench.Bare",
                {
                    "ReportReadings": grpc.stream_unary_rpc_method_handler(
                        readings,
                        request_deserializer=monitoring_pb2.ReportReadingsRequest.FromString,
                        response_serializer=monitoring_pb2.ReportReadingsResponse.SerializeToString,
                    ),
                    "StreamEvents": grpc.unary_stream_rpc_method_handler(
                        feed,
                        request_deserializer=monitoring_pb2.StreamEventsRequest.FromString,
                        response_serializer=monitoring_pb2.StreamEventsResponse.SerializeToString,
                    ),
                },
            ),
            _control_handler(publish),
        )
    )
    credentials = server_credentials(CertificatePaths.for_name(certs, "monitoring"))
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    return server.stop, port, publish


async def _real_server(
    args: argparse.Namespace, certs: Path
) -> tuple[Callable[[float], Awaitable[None]], int, Callable[[str, int], Awaitable[None]]]:
    from gatehouse.monitoring.app import create_monitoring  # noqa: PLC0415
    from gatehouse.monitoring.handlers.feed import feed_stream  # noqa: PLC0415
    from gatehouse.monitoring.settings import MonitoringSettings  # noqa: PLC0415
    from gatehouse.runtime.bus import InProcessEventBus, MaxLenPolicy  # noqa: PLC0415
    from gatehouse.runtime.config import Settings  # noqa: PLC0415
    from gatehouse.runtime.identity import JwksTokenVerifier, StaticKeySource  # noqa: PLC0415
    from gatehouse.runtime.kv import InMemoryKeyValueStore  # noqa: PLC0415
    from gatehouse.runtime.live import LiveHub  # noqa: PLC0415
    from gatehouse.runtime.server import Lifecycle, ServiceServer  # noqa: PLC0415
    from gatehouse.runtime.service_context import ServiceContext  # noqa: PLC0415
    from gatehouse.runtime.telemetry import create_tracer_provider  # noqa: PLC0415
    from gatehouse.runtime.tls import CertificatePaths, server_credentials  # noqa: PLC0415

    home = Path(args.home)
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        home=home,
        certs_dir=certs,
        database_url=args.database_url or None,
        metrics_enabled=False,
    )
    # The feed must hold a whole burst: the bench publishes faster than any site would.
    bus = InProcessEventBus(MaxLenPolicy(default=max(10_000, args.events * 2)))
    live = LiveHub(bus)
    await live.start()
    lifecycle = Lifecycle()
    context = ServiceContext(
        name="monitoring",
        settings=settings,
        lifecycle=lifecycle,
        kv=InMemoryKeyValueStore(),
        bus=bus,
        live=live,
    )
    monitoring_settings = MonitoringSettings(
        _env_file=None,  # type: ignore[call-arg]
        max_readings_per_second=1e9,
        readings_burst=10**9,
        feed_buffer_size=args.events + 1000,
        max_streams_per_caller=args.watchers + 10,
        feed_heartbeat_interval=timedelta(minutes=5),
    )
    definition, _app = create_monitoring(context, settings=monitoring_settings)

    async def publish(building: str, count: int) -> None:
        stream = feed_stream(building.removeprefix("buildings/"))
        for index in range(count):
            await bus.publish(stream, feed_event(building, index))
            if index % 100 == 99:
                await asyncio.sleep(0)  # the in-process bus never suspends: let readers run

    register = definition.register

    def register_with_control(server: grpc.aio.Server) -> None:
        register(server)
        # Outside `/gatehouse.`: the interceptors leave it alone (a bench-only back door).
        server.add_generic_rpc_handlers((_control_handler(publish),))

    definition = dataclasses.replace(definition, register=register_with_control)
    jwks = json.loads(await asyncio.to_thread(Path(args.jwks).read_text))
    server = ServiceServer(
        definition,
        credentials=server_credentials(CertificatePaths.for_name(certs, "monitoring")),
        token_verifier=JwksTokenVerifier(
            StaticKeySource(jwks), issuer="gatehouse", audience="gatehouse"
        ),
        tracer_provider=create_tracer_provider("bench"),
        lifecycle=lifecycle,
    )
    port = await server.start()

    async def stop(grace: float) -> None:
        await server.stop(grace)
        await live.stop()
        await bus.close()

    return stop, port, publish


# --- the load generator ------------------------------------------------------------------------


@dataclass
class Server:
    process: asyncio.subprocess.Process
    port: int


async def start_server(mode: str, workdir: Path, args: argparse.Namespace) -> Server:
    port_file = workdir / f"{mode}.port"
    port_file.unlink(missing_ok=True)
    argv = [
        sys.executable,
        "-m",
        "bench.monitoring",
        "serve",
        "--mode",
        mode,
        "--certs",
        str(workdir / "certs"),
        "--home",
        str(workdir / f"home-{mode}"),
        "--jwks",
        str(workdir / "jwks.json"),
        "--port-file",
        str(port_file),
        "--events",
        str(args.events),
        "--watchers",
        str(args.watchers),
    ]
    if args.database_url:
        argv += ["--database-url", args.database_url]
    if _two_cpus() and shutil.which("taskset"):
        argv = ["taskset", "-c", "0", *argv]
    process = await asyncio.create_subprocess_exec(*argv, cwd=Path.cwd())
    async with asyncio.timeout(STARTUP_TIMEOUT):
        while not port_file.exists() or not port_file.read_text():
            if process.returncode is not None:
                raise RuntimeError(f"the {mode} server exited with {process.returncode}")
            await asyncio.sleep(0.05)
    return Server(process, int(port_file.read_text()))


async def stop_server(server: Server) -> None:
    if server.process.returncode is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(server.process.wait(), 15)
        except TimeoutError:
            server.process.kill()
            await server.process.wait()


class Issuer:
    def __init__(self) -> None:
        self.key = Ed25519PrivateKey.generate()

    def jwks(self) -> dict[str, Any]:
        public: dict[str, Any] = json.loads(
            jwt.algorithms.OKPAlgorithm.to_jwk(self.key.public_key())
        )
        public.update(kid=KID, use="sig", alg="EdDSA")
        return {"keys": [public]}

    def bearer(self) -> tuple[tuple[str, str]]:
        now = datetime.now(UTC)
        token = jwt.encode(
            {
                "sub": "users/bench",
                "jti": str(uuid.uuid4()),
                "iss": "gatehouse",
                "aud": "gatehouse",
                "iat": now,
                "exp": now + timedelta(hours=1),
                "permissions": ["monitoring.*"],
            },
            self.key,
            algorithm="EdDSA",
            headers={"kid": KID},
        )
        return (("authorization", f"Bearer {token}"),)


@dataclass
class Setup:
    building: str
    device_tokens: list[tuple[str, str]]


async def prepare_real(channel: grpc.aio.Channel, issuer: Issuer, devices: int) -> Setup:
    stub = monitoring_pb2_grpc.MonitoringServiceStub(channel)
    building = (
        await stub.CreateBuilding(
            monitoring_pb2.CreateBuildingRequest(
                building=monitoring_pb2.Building(display_name="Bench tower", time_zone="UTC")
            ),
            metadata=issuer.bearer(),
        )
    ).building.name
    tokens = []
    for _ in range(devices):
        registered = await stub.RegisterDevice(
            monitoring_pb2.RegisterDeviceRequest(
                parent=building,
                device=monitoring_pb2.Device(kind=monitoring_pb2.DEVICE_KIND_SENSOR),
                credential_type=monitoring_pb2.DEVICE_CREDENTIAL_TYPE_TOKEN,
            ),
            metadata=issuer.bearer(),
        )
        tokens.append((registered.device.name, registered.device_token))
    return Setup(building, tokens)


@dataclass(frozen=True)
class Rate:
    what: str
    mode: str
    count: int
    seconds: float
    # CPU the server process used meanwhile (None where /proc is not there to tell).
    server_cpu: float | None = None

    @property
    def per_second(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0

    @property
    def server_us_per_item(self) -> float | None:
        if self.server_cpu is None or not self.count:
            return None
        return self.server_cpu / self.count * 1e6


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU of a process so far (Linux)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


async def with_server_cpu(pid: int, measurement: Awaitable[Rate]) -> Rate:
    before = cpu_seconds(pid)
    rate = await measurement
    after = cpu_seconds(pid)
    if before is None or after is None:
        return rate
    return dataclasses.replace(rate, server_cpu=after - before)


async def measure_readings(
    channel: grpc.aio.Channel, mode: str, setup: Setup | None, streams: int, duration: float
) -> Rate:
    """`streams` concurrent uploads of 1000-reading batches for `duration` seconds."""
    method = (
        BARE_READINGS
        if mode == "bare"
        else "/gatehouse.monitoring.v1.MonitoringService/ReportReadings"
    )
    upload = channel.stream_unary(
        method,
        request_serializer=monitoring_pb2.ReportReadingsRequest.SerializeToString,
        response_deserializer=monitoring_pb2.ReportReadingsResponse.FromString,
    )
    # Built before the clock starts; each batch below is this one moved back in time by
    # whole seconds (its readings span a millisecond), so no reading repeats another.
    template = reading_batch()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + duration

    async def one(index: int) -> int:
        name, token = setup.device_tokens[index] if setup else (f"bench/{index}", "")
        metadata = ((DEVICE_TOKEN_HEADER, token),) if token else ()
        sent = 0

        async def requests() -> AsyncIterator[monitoring_pb2.ReportReadingsRequest]:
            nonlocal sent
            while loop.time() < deadline:
                batch = monitoring_pb2.ReadingBatch()
                batch.CopyFrom(template)
                batch.batch_id = str(uuid.uuid4())
                for reading in batch.readings:
                    reading.time.seconds -= sent + 1
                yield monitoring_pb2.ReportReadingsRequest(
                    name=name if sent == 0 else "", batch=batch
                )
                sent += 1

        response = await upload(requests(), metadata=metadata, timeout=duration + 120)
        return int(response.accepted_count)

    started = loop.time()
    accepted = await asyncio.gather(*(one(index) for index in range(streams)))
    return Rate("readings", mode, sum(accepted), loop.time() - started)


async def measure_fanout(
    channel_factory: Callable[[], grpc.aio.Channel],
    control: grpc.aio.Channel,
    mode: str,
    building: str,
    metadata: tuple[tuple[str, str], ...],
    watchers: int,
    events: int,
    timeout: float,
) -> Rate:
    method = (
        BARE_FEED if mode == "bare" else "/gatehouse.monitoring.v1.MonitoringService/StreamEvents"
    )
    # Several connections, as separate dashboards would have: one HTTP/2 connection per 25.
    channels = [channel_factory() for _ in range(max(1, watchers // 25))]
    calls = []
    for index in range(watchers):
        stream = channels[index % len(channels)].unary_stream(
            method,
            request_serializer=monitoring_pb2.StreamEventsRequest.SerializeToString,
            response_deserializer=monitoring_pb2.StreamEventsResponse.FromString,
        )
        calls.append(
            stream(monitoring_pb2.StreamEventsRequest(building=building), metadata=metadata)
        )
    await asyncio.gather(*(call.initial_metadata() for call in calls))
    loop = asyncio.get_running_loop()
    finished: list[float] = []

    async def read(call: Any) -> int:
        seen = 0
        async for response in call:
            if response.HasField("event"):
                seen += 1
                if seen == events:
                    finished.append(loop.time())
                    return seen
        return seen

    readers = [asyncio.create_task(read(call)) for call in calls]
    publish: Any = control.unary_unary(CONTROL_PUBLISH)
    started = loop.time()
    await publish(json.dumps({"building": building, "count": events}).encode(), timeout=timeout)
    try:
        async with asyncio.timeout(timeout):
            counts = await asyncio.gather(*readers)
    except TimeoutError:
        counts = [task.result() if task.done() and not task.exception() else 0 for task in readers]
    finally:
        for call in calls:
            call.cancel()
        for task in readers:
            task.cancel()
        for channel in channels:
            await channel.close()
    seconds = (max(finished) if finished else loop.time()) - started
    return Rate("fan-out", mode, sum(counts), seconds)


async def run(args: argparse.Namespace) -> list[Rate]:
    _pin_to(1)
    workdir = Path(tempfile.mkdtemp(prefix="gatehouse-bench-monitoring-"))
    results: list[Rate] = []
    try:
        ensure_dev_certificates(workdir / "certs", ("monitoring", "client"))
        issuer = Issuer()
        (workdir / "jwks.json").write_text(json.dumps(issuer.jwks()))
        factory = ChannelFactory(ClientCredentials.from_directory(workdir / "certs", "client"))
        async with asyncio.timeout(args.budget):
            for mode in ("bare", "real"):
                server = await start_server(mode, workdir, args)
                try:
                    target = f"127.0.0.1:{server.port}"
                    async with factory.channel(target) as channel:
                        setup = None
                        building = "buildings/bench"
                        metadata: tuple[tuple[str, str], ...] = ()
                        if mode == "real":
                            setup = await prepare_real(channel, issuer, args.streams)
                            building = setup.building
                            metadata = issuer.bearer()
                        pid = server.process.pid
                        rate = await with_server_cpu(
                            pid,
                            measure_readings(channel, mode, setup, args.streams, args.duration),
                        )
                        results.append(rate)
                        print(f"  {mode:<5} readings   {rate.per_second:>10,.0f}/s", flush=True)
                        rate = await with_server_cpu(
                            pid,
                            measure_fanout(
                                lambda target=target: factory.channel(target),  # type: ignore[misc]
                                channel,
                                mode,
                                building,
                                metadata,
                                args.watchers,
                                args.events,
                                timeout=max(60.0, args.duration * 4),
                            ),
                        )
                        results.append(rate)
                        print(f"  {mode:<5} fan-out    {rate.per_second:>10,.0f}/s", flush=True)
                finally:
                    await stop_server(server)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return results


def report(results: list[Rate], args: argparse.Namespace) -> str:
    rows = {(r.what, r.mode): r for r in results}
    lines = [
        "",
        "| what | bare grpc.aio | monitoring | ratio | server CPU µs/item bare / monitoring |",
        "|---|---|---|---|---|",
    ]

    def cpu(rate: Rate) -> str:
        value = rate.server_us_per_item
        return "-" if value is None else f"{value:,.1f}"

    for what, unit in (("readings", "readings/s"), ("fan-out", "deliveries/s")):
        bare, real = rows.get((what, "bare")), rows.get((what, "real"))
        if bare is None or real is None:
            continue
        ratio = real.per_second / bare.per_second if bare.per_second else 0.0
        lines.append(
            f"| {what} ({unit}) | {bare.per_second:,.0f} | {real.per_second:,.0f} | "
            f"{ratio:.2f} | {cpu(bare)} / {cpu(real)} |"
        )
    lines.append(
        f"\nreadings: {args.streams} streams x {args.duration:g} s of "
        f"{BATCH_SIZE}-reading batches; "
        f"fan-out: {args.events} events to {args.watchers} watchers "
        f"({'server on CPU 0, clients on CPU 1' if _two_cpus() else 'one CPU'})"
    )
    for rate in results:
        if rate.what == "fan-out" and rate.count < args.events * args.watchers:
            lines.append(
                f"note: {rate.mode} fan-out delivered {rate.count} of "
                f"{args.events * args.watchers} in time"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.monitoring", description=__doc__.split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="command")
    server = sub.add_parser("serve", help="(internal) the server side of one mode")
    server.add_argument("--mode", choices=("bare", "real"), required=True)
    server.add_argument("--certs", required=True)
    server.add_argument("--home", required=True)
    server.add_argument("--jwks", required=True)
    server.add_argument("--port-file", required=True)
    server.add_argument("--database-url", default="")
    server.add_argument("--events", type=int, default=2000)
    server.add_argument("--watchers", type=int, default=100)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of uploads per mode")
    parser.add_argument("--streams", type=int, default=4, help="concurrent ReportReadings")
    parser.add_argument("--watchers", type=int, default=100)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument(
        "--database-url", default="", help="the real service's database (default: a SQLite file)"
    )
    parser.add_argument("--budget", type=float, default=300.0, help="seconds for the whole run")
    args = parser.parse_args(argv)
    if args.command == "serve":
        asyncio.run(serve(args))
        return 0
    started = time.monotonic()
    results = asyncio.run(run(args))
    print(report(results, args))
    print(f"\n(took {time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
