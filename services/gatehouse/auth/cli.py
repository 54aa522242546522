"""`gatehouse auth ...`: operator commands of the auth service.

- `create-admin --email E [--display-name N]`: create an account holding `roles/admin`
  (bootstrap, or another administrator). The password comes from a prompt (asked twice) or,
  when stdin is not a terminal, from its first line: `printf '%s\\n' "$PW" | gatehouse auth
  create-admin --email ...`. It never appears in argv, the environment or the output.
- `rotate-keys [--now]`: publish a new signing key. It signs from
  `GATEHOUSE_AUTH_SIGNING_KEY_PREPUBLISH` (6 minutes) later, once every JWKS cache (Envoy's
  holds it 5 minutes) knows it; `--now` makes it sign at once, for a leaked key, accepting that
  the edge refuses new tokens (401) until it refetches the JWKS. The previous key stays in the
  JWKS for a token lifetime, so nobody is signed out; running replicas reread the keys within
  `GATEHOUSE_AUTH_KEY_REFRESH_INTERVAL` and switch at the activation time by their clocks.

Both work on the auth database the settings name (`GATEHOUSE_DATABASE_URL`, or the SQLite
file under `<home>/data` in embedded mode), also while the service runs: their events land in
the outbox, and the running service's relay publishes them.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from typing import TYPE_CHECKING, TextIO

from gatehouse.runtime.config import ConfigurationError, Settings

if TYPE_CHECKING:
    from gatehouse.auth.app import AuthApp
    from gatehouse.runtime.infrastructure import SharedInfrastructure

# The service's modules are imported when a command runs, not when the parser is built:
# `gatehouse --help` and the other commands should not pay for them.


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `auth` and its subcommands to the top-level parser."""
    auth = commands.add_parser("auth", help="auth service administration")
    auth_commands = auth.add_subparsers(dest="auth_command", required=True, metavar="COMMAND")
    create = auth_commands.add_parser(
        "create-admin",
        help="create an administrator (password from a prompt, or stdin when piped)",
    )
    create.add_argument("--email", required=True)
    create.add_argument("--display-name", default="Administrator")
    rotate = auth_commands.add_parser(
        "rotate-keys", help="publish a new token signing key (it signs once caches know it)"
    )
    rotate.add_argument(
        "--now",
        action="store_true",
        help="sign with it at once (a leaked key); the edge may answer 401 until it refetches",
    )


def run(
    args: argparse.Namespace,
    settings: Settings,
    *,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    stdin, stdout, stderr = stdin or sys.stdin, stdout or sys.stdout, stderr or sys.stderr
    try:
        if args.auth_command == "create-admin":
            password = read_password(stdin, stderr)
            return asyncio.run(_create_admin(settings, args, password, stdout, stderr))
        return asyncio.run(_rotate_keys(settings, stdout, immediately=args.now))
    except ConfigurationError as error:
        print(error, file=stderr)
        return 2
    except PasswordInputError as error:
        print(f"gatehouse auth: {error}", file=stderr)
        return 2


class PasswordInputError(Exception):
    pass


def read_password(stdin: TextIO, stderr: TextIO) -> str:
    if stdin.isatty():
        first = getpass.getpass("Password: ", stream=stderr)
        if getpass.getpass("Password (again): ", stream=stderr) != first:
            raise PasswordInputError("the passwords do not match")
        password = first
    else:
        password = stdin.readline().rstrip("\r\n")
    if not password:
        raise PasswordInputError("no password given")
    return password


async def _with_app(settings: Settings) -> tuple[AuthApp, SharedInfrastructure]:
    from gatehouse.auth.app import AuthApp  # noqa: PLC0415
    from gatehouse.auth.settings import load_auth_settings  # noqa: PLC0415
    from gatehouse.runtime.infrastructure import SharedInfrastructure  # noqa: PLC0415
    from gatehouse.runtime.server import Lifecycle  # noqa: PLC0415
    from gatehouse.runtime.service_context import ServiceContext  # noqa: PLC0415

    # The KV store of the configured backend: a rotation published to Redis reaches every
    # verifier at once. No relay: the running service publishes what we commit.
    infrastructure = SharedInfrastructure.from_settings(settings)
    await infrastructure.start()
    context = ServiceContext(
        name="auth",
        settings=settings,
        lifecycle=Lifecycle(),
        kv=infrastructure.kv,
        bus=infrastructure.bus,
        live=infrastructure.live,
    )
    app = AuthApp(context, load_auth_settings(), outbox_relay=False)
    try:
        await app.start()
    except BaseException:
        await infrastructure.close()
        raise
    return app, infrastructure


async def _create_admin(
    settings: Settings, args: argparse.Namespace, password: str, stdout: TextIO, stderr: TextIO
) -> int:
    from gatehouse.auth.handlers.accounts import CreateAdmin, create_admin  # noqa: PLC0415
    from gatehouse.auth.handlers.common import Origin  # noqa: PLC0415
    from gatehouse.runtime.errors import DomainError, InvalidArgument  # noqa: PLC0415

    app, infrastructure = await _with_app(settings)
    try:
        user = await create_admin(
            CreateAdmin(
                email=args.email,
                password=password,
                display_name=args.display_name,
                origin=Origin(service="cli"),
            ),
            app.uow(),
            app.deps,
        )
    except InvalidArgument as error:
        problems = "; ".join(f"{v.field} {v.description}" for v in error.violations)
        print(f"gatehouse auth: not created: {problems}", file=stderr)
        return 1
    except DomainError as error:
        print(f"gatehouse auth: not created: {error.message}", file=stderr)
        return 1
    finally:
        await app.stop()
        await infrastructure.close()
    assert user is not None
    print(f"created {user.name} <{user.email}> with roles/admin", file=stdout)
    return 0


async def _rotate_keys(settings: Settings, stdout: TextIO, *, immediately: bool) -> int:
    app, infrastructure = await _with_app(settings)
    try:
        key = await app.rotate_keys(immediately=immediately)
    finally:
        await app.stop()
        await infrastructure.close()
    if immediately:
        print(f"signing with key {key.kid} now; the previous key stays published", file=stdout)
    else:
        print(
            f"published key {key.kid}; signing with it from {key.activates_at.isoformat()}; "
            "the previous key signs until then and stays published after",
            file=stdout,
        )
    return 0
