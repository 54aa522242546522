"""The `gatehouse` command: up, serve, migrate, health, certs, edge, events, auth, payments,
simulate, watch, mail, notifications."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from gatehouse.auth import cli as auth_cli
from gatehouse.cli import events_command, health_check, migrate_command
from gatehouse.mesh.catalog import all_services, certificate_identities
from gatehouse.monitoring import cli as monitoring_cli
from gatehouse.notifications import cli as notifications_cli
from gatehouse.payments import cli as payments_cli
from gatehouse.runtime.config import (
    SERVICE_NAMES,
    ConfigurationError,
    ServiceName,
    Settings,
    load_settings,
)
from gatehouse.runtime.structured_logging import configure_logging
from gatehouse.runtime.tls import ensure_dev_certificates


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except ConfigurationError as error:
        print(error, file=sys.stderr)
        return 2
    command: str = args.command
    handlers: dict[str, Callable[[argparse.Namespace, Settings], int]] = {
        "certs": _certs,
        "edge": lambda args, settings: _edge_config(settings, args),
        "health": _health,
        "events": events_command.run,
        "auth": auth_cli.run,
        "payments": payments_cli.run,
        "mail": notifications_cli.run,
        "notifications": notifications_cli.run,
        "simulate": monitoring_cli.run,
        "watch": monitoring_cli.run,
        "up": _serve,
        "serve": _serve,
        "migrate": migrate_command.run,
    }
    try:
        return handlers[command](args, settings)
    except ConfigurationError as error:
        # Found once a command looked closer at the settings: as readable as those above.
        print(error, file=sys.stderr)
        return 2


def _certs(args: argparse.Namespace, settings: Settings) -> int:
    if args.names[:1] == ["device"]:
        # `gatehouse certs device buildings/b1/devices/d1`: a device's own identity.
        return monitoring_cli.certs_device(args.names[1:], args.dir or settings.certificates)
    names = args.names or list(certificate_identities())
    issued = ensure_dev_certificates(args.dir or settings.certificates, names)
    for name, paths in issued.items():
        print(f"{name:<14} {paths.certificate}  {paths.private_key}")
    return 0


def _health(args: argparse.Namespace, settings: Settings) -> int:
    services: tuple[ServiceName, ...] = tuple(args.services) or all_services()
    return asyncio.run(health_check.run(settings, services, timeout=args.timeout))


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    # Imported late: it pulls in every service, which the other commands do not need.
    from gatehouse.cli import serving  # noqa: PLC0415

    up = args.command == "up"
    services = all_services() if up else (args.service,)
    process_name = "gatehouse" if up else f"gatehouse-{args.service}"
    configure_logging(process_name, settings.log_level, settings.log_format)
    return asyncio.run(serving.serve(settings, services, process_name=process_name, with_edge=up))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gatehouse", description="Gatehouse: a gRPC service mesh for secured buildings."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("up", help="run all five services in this process until Ctrl-C")
    serve = commands.add_parser("serve", help="run one service")
    serve.add_argument("service", choices=SERVICE_NAMES)
    migrate_command.register(commands)
    health = commands.add_parser(
        "health", help="check every service's gRPC health; exit 1 if one is not SERVING"
    )
    health.add_argument(
        "services", nargs="*", type=_service_name, metavar="SERVICE", help="default: all five"
    )
    health.add_argument("--timeout", type=float, default=3.0, help="seconds per check")
    edge = commands.add_parser("edge", help="the Envoy edge")
    edge_commands = edge.add_subparsers(dest="edge_command", required=True, metavar="COMMAND")
    edge_config = edge_commands.add_parser(
        "config",
        help="print the Envoy bootstrap generated from the settings (files it names live in "
        "<home>/edge; --write creates them)",
    )
    edge_config.add_argument("--format", choices=("yaml", "json"), default="yaml")
    edge_config.add_argument(
        "--write", type=Path, default=None, metavar="DIR", help="write envoy.yaml and its files"
    )
    edge_config.add_argument(
        "--reference", action="store_true", help="defaults, repo-relative paths (envoy/)"
    )
    certs = commands.add_parser(
        "certs", help="create the dev CA and certificates (existing files are kept)"
    )
    certs.add_argument("names", nargs="*", help="identities (default: services, envoy, client)")
    certs.add_argument("--dir", type=Path, default=None, help="default: <home>/certs")
    events_command.register(commands)
    auth_cli.register(commands)
    payments_cli.register(commands)
    monitoring_cli.register(commands)
    notifications_cli.register(commands)
    return parser


def _edge_config(settings: Settings, args: argparse.Namespace) -> int:
    # Imported late like `serving`: only this command needs the contracts and PyYAML.
    from gatehouse.edge import config, process  # noqa: PLC0415

    if args.reference:
        print(config.reference_config(), end="")
        return 0
    if args.write is not None:
        print(process.write_edge_files(settings, args.write, fmt=args.format))
        return 0
    directory = settings.home / "edge"
    built = config.build_config(settings, process.edge_files(settings, directory))
    print(config.render(built, args.format), end="")
    return 0


def _service_name(value: str) -> str:
    if value not in SERVICE_NAMES:
        raise argparse.ArgumentTypeError(f"unknown service {value!r}; one of {SERVICE_NAMES}")
    return value


if __name__ == "__main__":
    sys.exit(main())
