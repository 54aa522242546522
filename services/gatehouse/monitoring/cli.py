"""`gatehouse simulate`, `gatehouse watch` and `gatehouse certs device`: the monitoring
service's operator commands.

- `simulate`: a building of N simulated devices (cameras, door controllers, sensors) against
  a running mesh, each a real gRPC client with its own credential: device tokens by default,
  or certificates from the dev CA (`--credential certificate`). They heartbeat, report
  readings, see motion now and then, hold doors open or get them forced once in a while,
  acknowledge commands, and (with `--flaky`) sometimes drop off and come back.
- `watch <building>`: prints the building's live feed, one line per item, reconnecting with
  `resume_after` when the stream breaks.
- `certs device <building>/<device>`: a dev certificate for one device.

Operators authenticate with an access token (`--token` or `GATEHOUSE_TOKEN`), as for any
other RPC; devices with their own credentials. Until the commands are registered in
`gatehouse.cli.main`, `python -m gatehouse.monitoring.cli ...` runs them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import sys
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TextIO

import grpc

from gatehouse.clients.channel import ChannelFactory, ClientCredentials
from gatehouse.monitoring.domain.names import device_ids
from gatehouse.monitoring.simulator import SimulatedDevice, random_readings
from gatehouse.monitoring.v1 import monitoring_pb2, monitoring_pb2_grpc
from gatehouse.runtime.config import ConfigurationError, Settings, load_settings
from gatehouse.runtime.tls import device_certificate_file_name, issue_device_certificate

TOKEN_ENV = "GATEHOUSE_TOKEN"  # noqa: S105 - the name of a variable, not a secret
_RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
}
_SEVERITIES = ("INFO", "LOW", "MEDIUM", "HIGH", "CRITICAL")


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `simulate` and `watch` to the top-level parser."""
    simulate = commands.add_parser(
        "simulate", help="run a building of simulated devices against a running mesh"
    )
    simulate.add_argument(
        "building", nargs="?", help="buildings/{id} to populate; default: create one"
    )
    simulate.add_argument("-n", "--devices", type=int, default=10, help="how many (default 10)")
    simulate.add_argument(
        "--credential",
        choices=("token", "certificate"),
        default="token",
        help="how devices authenticate (certificate: issued by the dev CA)",
    )
    simulate.add_argument(
        "--duration", type=float, default=None, help="seconds to run; default: until Ctrl-C"
    )
    simulate.add_argument(
        "--activity",
        type=float,
        default=1.0,
        help="scale of how often devices report events (default 1.0)",
    )
    simulate.add_argument(
        "--flaky", action="store_true", help="devices sometimes vanish and come back"
    )
    _connection_arguments(simulate)

    watch = commands.add_parser("watch", help="print a building's live feed until Ctrl-C")
    watch.add_argument("building", help="buildings/{id} (or just the id)")
    watch.add_argument(
        "--type", dest="types", action="append", default=[], help="e.g. alert.* (repeatable)"
    )
    watch.add_argument("--min-severity", choices=_SEVERITIES, default=None)
    watch.add_argument("--resume-after", default="", help="the last event id you saw")
    watch.add_argument("--count", type=int, default=None, help="stop after this many items")
    _connection_arguments(watch)


def _connection_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--target", default=None, help="host:port of monitoring (default: from the settings)"
    )
    parser.add_argument(
        "--token", default=None, help=f"operator access token (default: ${TOKEN_ENV})"
    )
    parser.add_argument(
        "--identity", default="client", help="client certificate to present (default: client)"
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    token = args.token or os.environ.get(TOKEN_ENV)
    if not token:
        print(
            f"gatehouse {args.command}: an operator access token is needed (--token or "
            f"${TOKEN_ENV}); log in through the auth service to get one",
            file=sys.stderr,
        )
        return 2
    target = args.target or f"{settings.host}:{settings.monitoring_port}"
    try:
        if args.command == "simulate":
            return asyncio.run(_simulate(args, settings, target, token))
        return asyncio.run(_watch(args, settings, target, token, sys.stdout))
    except KeyboardInterrupt:
        return 0


def certs_device(specs: Sequence[str], directory: Path, out: TextIO | None = None) -> int:
    """`gatehouse certs device <building>/<device> ...`: dev certificates for devices."""
    out = out or sys.stdout
    if not specs:
        print("usage: gatehouse certs device <building>/<device> ...", file=sys.stderr)
        return 2
    for spec in specs:
        name = _device_name(spec)
        if name is None:
            print(f"not a device: {spec!r} (use <building>/<device>)", file=sys.stderr)
            return 2
        paths = issue_device_certificate(directory, name)
        print(f"{name}  {paths.certificate}  {paths.private_key}", file=out)
    return 0


def _device_name(spec: str) -> str | None:
    if device_ids(spec) is not None:
        return spec
    building, _, device = spec.partition("/")
    name = f"buildings/{building}/devices/{device}"
    return name if device_ids(name) is not None else None


def _building_name(spec: str) -> str:
    return spec if spec.startswith("buildings/") else f"buildings/{spec}"


# --- shared ----------------------------------------------------------------------------------


def _factory(settings: Settings, identity: str) -> ChannelFactory:
    return ChannelFactory(ClientCredentials.from_directory(settings.certificates, identity))


def _bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


@contextlib.contextmanager
def _stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        yield
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


# --- watch -----------------------------------------------------------------------------------


def feed_line(item: monitoring_pb2.FeedItem) -> str:
    when = item.time.ToDatetime(tzinfo=UTC).astimezone().strftime("%H:%M:%S")
    severity = _SEVERITIES[item.severity - 1] if 1 <= item.severity <= 5 else "-"
    return f"{when}  {severity:<8}  {item.type:<28}  {item.summary}  [{item.id}]"


async def _watch(
    args: argparse.Namespace, settings: Settings, target: str, token: str, out: TextIO
) -> int:
    building = _building_name(args.building)
    stop = asyncio.Event()
    last_seen = args.resume_after
    printed = 0
    delay = 0.5
    with _stop_on_signals(stop):
        async with _factory(settings, args.identity).channel(target) as channel:
            stub = monitoring_pb2_grpc.MonitoringServiceStub(channel)
            while not stop.is_set():
                request = monitoring_pb2.StreamEventsRequest(
                    building=building,
                    event_types=args.types,
                    resume_after=last_seen,
                    min_severity=_SEVERITIES.index(args.min_severity) + 1  # type: ignore[arg-type]
                    if args.min_severity
                    else 0,
                )
                call = stub.StreamEvents(request, metadata=_bearer(token))
                try:
                    # The server answers with headers once the feed is live: from here on
                    # nothing published is missed.
                    await call.initial_metadata()
                    print(f"watching {building}", file=sys.stderr, flush=True)
                    async for response in call:
                        delay = 0.5
                        if response.HasField("event"):
                            print(feed_line(response.event), file=out, flush=True)
                            last_seen = response.event.id
                            printed += 1
                            if args.count is not None and printed >= args.count:
                                return 0
                        elif response.heartbeat.last_event_id:
                            last_seen = response.heartbeat.last_event_id
                        if stop.is_set():
                            break
                except grpc.aio.AioRpcError as error:
                    if error.code() not in _RETRYABLE:
                        print(f"watch: {error.code().name}: {error.details()}", file=sys.stderr)
                        return 1
                    print(f"watch: {error.code().name}, reconnecting", file=sys.stderr)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 10.0)
                finally:
                    call.cancel()
    return 0


# --- simulate --------------------------------------------------------------------------------


@dataclass
class _Stats:
    connected: int = 0
    events: int = 0
    readings: int = 0
    commands: int = 0
    drops: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def line(self) -> str:
        errors = ", ".join(f"{k} {v}" for k, v in sorted(self.errors.items())) or "none"
        return (
            f"online {self.connected}  events {self.events}  readings {self.readings}  "
            f"commands {self.commands}  drops {self.drops}  errors: {errors}"
        )


_KINDS = (
    monitoring_pb2.DEVICE_KIND_CAMERA,
    monitoring_pb2.DEVICE_KIND_DOOR_CONTROLLER,
    monitoring_pb2.DEVICE_KIND_SENSOR,
)
_ZONES = ("lobby", "garage", "roof", "loading-bay", "corridor")


async def _simulate(args: argparse.Namespace, settings: Settings, target: str, token: str) -> int:
    stop = asyncio.Event()
    stats = _Stats()
    factory = _factory(settings, args.identity)
    async with factory.channel(target) as channel:
        stub = monitoring_pb2_grpc.MonitoringServiceStub(channel)
        metadata = _bearer(token)
        if args.building:
            building = _building_name(args.building)
            await stub.GetBuilding(
                monitoring_pb2.GetBuildingRequest(name=building), metadata=metadata
            )
        else:
            created = await stub.CreateBuilding(
                monitoring_pb2.CreateBuildingRequest(
                    building=monitoring_pb2.Building(
                        display_name=f"Simulated {datetime.now(UTC):%Y-%m-%d %H:%M}",
                        time_zone="UTC",
                    ),
                    request_id=str(uuid.uuid4()),
                ),
                metadata=metadata,
            )
            building = created.building.name
        print(f"building {building}  (watch it: gatehouse watch {building})", flush=True)
        devices = []
        for index in range(args.devices):
            kind = _KINDS[index % len(_KINDS)]
            label = monitoring_pb2.DeviceKind.Name(kind).removeprefix("DEVICE_KIND_").lower()
            zone = _ZONES[index % len(_ZONES)]
            device = monitoring_pb2.Device(
                kind=kind,
                display_name=f"{label.replace('_', ' ')} {index + 1}",
                labels={"zone": zone, "simulated": "true"},
                firmware_version="sim-1.0",
            )
            if kind == monitoring_pb2.DEVICE_KIND_DOOR_CONTROLLER:
                device.door = f"{building}/doors/door-{uuid.uuid4().hex[:8]}"
            registered = await stub.RegisterDevice(
                monitoring_pb2.RegisterDeviceRequest(
                    parent=building,
                    device=device,
                    credential_type=monitoring_pb2.DEVICE_CREDENTIAL_TYPE_TOKEN
                    if args.credential == "token"
                    else monitoring_pb2.DEVICE_CREDENTIAL_TYPE_CERTIFICATE,
                    request_id=str(uuid.uuid4()),
                ),
                metadata=metadata,
            )
            devices.append((registered.device, registered.device_token))
        with _stop_on_signals(stop):
            tasks = [
                asyncio.create_task(
                    _run_device(device, secret, args, settings, target, stats, stop)
                )
                for device, secret in devices
            ]
            reporter = asyncio.create_task(_report(stats, stop))
            try:
                async with asyncio.timeout(args.duration):
                    await stop.wait()
            except TimeoutError:
                stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            reporter.cancel()
    print(stats.line(), flush=True)
    return 0


async def _report(stats: _Stats, stop: asyncio.Event) -> None:
    while not stop.is_set():
        await asyncio.sleep(5)
        print(stats.line(), flush=True)


async def _run_device(
    device: monitoring_pb2.Device,
    token: str,
    args: argparse.Namespace,
    settings: Settings,
    target: str,
    stats: _Stats,
    stop: asyncio.Event,
) -> None:
    if token:
        factory = _factory(settings, args.identity)
    else:
        issue_device_certificate(settings.certificates, device.name)
        factory = _factory(settings, device_certificate_file_name(device.name))
    rng = random.Random()  # noqa: S311 - simulated behaviour, not secrets
    async with factory.channel(target) as channel:
        while not stop.is_set():
            simulated = SimulatedDevice(channel, device.name, token=token or None)
            try:
                welcome = await simulated.connect()
            except grpc.aio.AioRpcError as error:
                stats.errors[error.code().name] = stats.errors.get(error.code().name, 0) + 1
                await _sleep(stop, 2.0)
                continue
            stats.connected += 1
            try:
                await _live(simulated, device, welcome, args, stats, stop, rng)
            except grpc.aio.AioRpcError as error:
                stats.errors[error.code().name] = stats.errors.get(error.code().name, 0) + 1
            finally:
                stats.connected -= 1
                stats.commands += simulated.commands.qsize()
                with contextlib.suppress(Exception):
                    await simulated.abort()
            await _sleep(stop, rng.uniform(0.5, 3.0))


async def _live(
    simulated: SimulatedDevice,
    device: monitoring_pb2.Device,
    welcome: monitoring_pb2.DeviceWelcome,
    args: argparse.Namespace,
    stats: _Stats,
    stop: asyncio.Event,
    rng: random.Random,
) -> None:
    interval = max(welcome.heartbeat_interval.ToTimedelta().total_seconds(), 0.1)
    assert simulated.ended is not None
    while not stop.is_set() and not simulated.ended.done():
        await _sleep(stop, interval * rng.uniform(0.6, 0.9))
        if stop.is_set() or simulated.ended.done():
            break
        await simulated.heartbeat()
        chance = 0.05 * args.activity
        if device.kind == monitoring_pb2.DEVICE_KIND_SENSOR and rng.random() < 0.5:
            await simulated.readings(random_readings(rng.randint(5, 50)))
            stats.readings += 1
        elif device.kind == monitoring_pb2.DEVICE_KIND_CAMERA and rng.random() < chance * 4:
            await simulated.event(
                monitoring_pb2.DEVICE_EVENT_KIND_MOTION, confidence=round(rng.random(), 2)
            )
            stats.events += 1
        elif device.kind == monitoring_pb2.DEVICE_KIND_DOOR_CONTROLLER and rng.random() < chance:
            if rng.random() < 0.2:
                await simulated.event(monitoring_pb2.DEVICE_EVENT_KIND_DOOR_FORCED)
            else:
                held = timedelta(seconds=rng.choice((20, 45, 75, 120)))
                await simulated.event(
                    monitoring_pb2.DEVICE_EVENT_KIND_DOOR_HELD_OPEN, held_open=held
                )
            stats.events += 1
        if rng.random() < 0.002 * args.activity:
            await simulated.event(monitoring_pb2.DEVICE_EVENT_KIND_TAMPER)
            stats.events += 1
        if args.flaky and rng.random() < 0.01:
            stats.drops += 1
            simulated.vanish()  # silent until the mesh gives up on it, then reconnect
            await simulated.wait_ended(timeout=max(60.0, interval * 20))
            return
    if not simulated.ended.done():
        await simulated.close()


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry point: `python -m gatehouse.monitoring.cli simulate|watch|certs-device`."""
    parser = argparse.ArgumentParser(prog="gatehouse")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    register(commands)
    certs = commands.add_parser("certs-device", help="dev certificates for devices")
    certs.add_argument("devices", nargs="+", help="<building>/<device>")
    certs.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except ConfigurationError as error:
        print(error, file=sys.stderr)
        return 2
    if args.command == "certs-device":
        return certs_device(args.devices, args.dir or settings.certificates)
    return run(args, settings)


if __name__ == "__main__":
    sys.exit(main())
