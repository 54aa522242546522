"""`gatehouse migrate [SERVICE ...]`: bring service databases to the newest schema.

What a deployment's migration job runs before a rollout (services then start with
`GATEHOUSE_MIGRATE_ON_START=false`). Idempotent: a database already at the newest revision is
left untouched and reported as such; several runs at once serialize on a database lock. Each
service's database is `GATEHOUSE_DATABASE_URL` formatted with the service's name.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TextIO

from sqlalchemy.exc import DBAPIError

from gatehouse.mesh.catalog import all_services, migrations_of
from gatehouse.runtime.config import SERVICE_NAMES, ConfigurationError, ServiceName, Settings
from gatehouse.runtime.consumers import describe_error
from gatehouse.runtime.db import DatabaseUnavailableError, current_revisions, migrate


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "migrate", help="migrate service databases to the newest schema (idempotent)"
    )
    parser.add_argument(
        "services", nargs="*", type=_service_name, metavar="SERVICE", help="default: all five"
    )


def _service_name(value: str) -> str:
    if value not in SERVICE_NAMES:
        raise argparse.ArgumentTypeError(f"unknown service {value!r}; one of {SERVICE_NAMES}")
    return value


def run(
    args: argparse.Namespace,
    settings: Settings,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    services: tuple[ServiceName, ...] = tuple(args.services) or all_services()
    return asyncio.run(
        migrate_services(settings, services, stdout or sys.stdout, stderr or sys.stderr)
    )


async def migrate_services(
    settings: Settings, services: tuple[ServiceName, ...], stdout: TextIO, stderr: TextIO
) -> int:
    try:
        settings.check_one_database_each(services)
    except ConfigurationError as error:
        print(error, file=stderr)
        return 2
    for name in services:
        url = settings.database_url_for(name)
        try:
            before = await current_revisions(url)
            await migrate(url, migrations_of(name))
            after = await current_revisions(url)
        except (DatabaseUnavailableError, DBAPIError, OSError) as error:
            # One line an operator can act on; the URL (and its password) is not in it.
            print(f"{name}: cannot migrate: {describe_error(error)}", file=stderr)
            return 1
        revisions = ", ".join(sorted(after))
        if before == after:
            print(f"{name}: up to date at {revisions}", file=stdout)
        else:
            print(f"{name}: migrated to {revisions}", file=stdout)
    return 0
