"""`gatehouse up | serve | health | certs` — the operator's entrypoint."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from gatehouse.cli import health_check
from gatehouse.mesh.catalog import all_services, certificate_identities
from gatehouse.runtime.config import SERVICE_NAMES, ConfigurationError, ServiceName, load_settings
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
    if command == "certs":
        names = args.names or list(certificate_identities())
        issued = ensure_dev_certificates(args.dir or settings.certificates, names)
        for name, paths in issued.items():
            print(f"{name:<14} {paths.certificate}  {paths.private_key}")
        return 0
    if command == "health":
        services: tuple[ServiceName, ...] = tuple(args.services) or all_services()
        return asyncio.run(health_check.run(settings, services, timeout=args.timeout))
    # Imported late: it pulls in every service, which `certs` and `health` do not need.
    from gatehouse.cli import serving  # noqa: PLC0415

    services = all_services() if command == "up" else (args.service,)
    process_name = "gatehouse" if command == "up" else f"gatehouse-{args.service}"
    configure_logging(process_name, settings.log_level, settings.log_format)
    return asyncio.run(serving.serve(settings, services, process_name=process_name))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gatehouse", description="Gatehouse: a gRPC service mesh for secured buildings."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("up", help="run all five services in this process until Ctrl-C")
    serve = commands.add_parser("serve", help="run one service")
    serve.add_argument("service", choices=SERVICE_NAMES)
    health = commands.add_parser(
        "health", help="check every service's gRPC health; exit 1 if one is not SERVING"
    )
    health.add_argument(
        "services", nargs="*", type=_service_name, metavar="SERVICE", help="default: all five"
    )
    health.add_argument("--timeout", type=float, default=3.0, help="seconds per check")
    certs = commands.add_parser(
        "certs", help="create the dev CA and certificates (existing files are kept)"
    )
    certs.add_argument("names", nargs="*", help="identities (default: services, envoy, client)")
    certs.add_argument("--dir", type=Path, default=None, help="default: <home>/certs")
    return parser


def _service_name(value: str) -> str:
    if value not in SERVICE_NAMES:
        raise argparse.ArgumentTypeError(f"unknown service {value!r}; one of {SERVICE_NAMES}")
    return value


if __name__ == "__main__":
    sys.exit(main())
