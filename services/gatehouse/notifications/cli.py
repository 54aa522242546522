"""`gatehouse mail`: what the development mail sink received; `gatehouse notifications`:
dead letters for an operator.

In the embedded default (`gatehouse up`) the notifications service runs a catch-all SMTP
server (aiosmtpd) on `GATEHOUSE_NOTIFICATIONS_SMTP_HOST:SMTP_PORT` (127.0.0.1:2525) and keeps
every message as a `.eml` file under `<home>/mail`. This command reads that directory, so it
works while the service runs and after it stopped:

    gatehouse mail                 # one line per message, newest last
    gatehouse mail --last 5        # only the last five
    gatehouse mail show 3          # message 3 (as numbered in the list): headers and text part
    gatehouse mail show 3 --html   # its HTML part instead
    gatehouse mail clear           # delete them all

`gatehouse notifications` works on the notifications database the settings name
(`GATEHOUSE_DATABASE_URL`, or the SQLite file under `<home>/data` in embedded mode), also
while the service runs; the running service's worker sends what it requeues:

    gatehouse notifications dead-letters [--limit N]   # name, channel, recipient, last error
    gatehouse notifications requeue NAME...            # back to QUEUED, attempts kept
    gatehouse notifications requeue --all

Recipient addresses that can carry a credential (webhook URLs, push tokens) are shown
masked. A dead letter whose content held sensitive template values (a password-reset link)
had it erased and cannot be requeued: send it anew.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING, TextIO
from urllib.parse import urlsplit

from gatehouse.notifications.adapters.sink import ReceivedMail, stored_mail
from gatehouse.notifications.app import mail_directory
from gatehouse.runtime.config import ConfigurationError, Settings, load_settings

if TYPE_CHECKING:
    from gatehouse.notifications.app import NotificationsApp
    from gatehouse.notifications.domain.addresses import Address
    from gatehouse.notifications.handlers.ports import DeadLetter


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `mail` and its subcommands to the top-level parser."""
    mail = commands.add_parser(
        "mail", help="list what the development mail sink received (embedded mode)"
    )
    mail.add_argument("--last", type=int, default=None, help="only the last N messages")
    mail.add_argument("--json", action="store_true", help="print the list as JSON")
    mail_commands = mail.add_subparsers(dest="mail_command", metavar="COMMAND")
    show = mail_commands.add_parser("show", help="print one message")
    show.add_argument("number", type=int, help="its number in `gatehouse mail`")
    show.add_argument("--html", action="store_true", help="the HTML part instead of the text")
    mail_commands.add_parser("clear", help="delete every stored message")
    notifications = commands.add_parser(
        "notifications", help="notifications administration: dead letters"
    )
    notifications_commands = notifications.add_subparsers(
        dest="notifications_command", required=True, metavar="COMMAND"
    )
    dead = notifications_commands.add_parser(
        "dead-letters", help="list the notifications whose retries ran out, oldest first"
    )
    dead.add_argument("--limit", type=_positive, default=50, help="at most N (default 50)")
    requeue = notifications_commands.add_parser(
        "requeue", help="send dead-lettered notifications again (the running worker sends them)"
    )
    which = requeue.add_mutually_exclusive_group(required=True)
    which.add_argument("names", nargs="*", default=[], metavar="NAME", help="notifications/{id}")
    which.add_argument("--all", action="store_true", help="every dead letter")


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def _when(mail: ReceivedMail, path: Path) -> str:
    header = mail.message.get("Date")
    try:
        moment = parsedate_to_datetime(str(header)) if header else None
    except (TypeError, ValueError):
        moment = None
    if moment is None:
        moment = datetime.fromtimestamp(path.stat().st_mtime, tz=UTC)
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def run(
    args: argparse.Namespace,
    settings: Settings,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr
    if args.command == "notifications":
        return _notifications(args, settings, stdout, stderr)
    return _mail(args, settings, stdout, stderr)


def _mail(args: argparse.Namespace, settings: Settings, stdout: TextIO, stderr: TextIO) -> int:
    directory = mail_directory(settings.home)
    found = stored_mail(directory)
    command = getattr(args, "mail_command", None)
    if command == "clear":
        for path, _ in found:
            path.unlink(missing_ok=True)
        print(f"deleted {len(found)} messages from {directory}", file=stdout)
        return 0
    if command == "show":
        if not 1 <= args.number <= len(found):
            print(f"gatehouse mail: no message {args.number} ({len(found)} stored)", file=stderr)
            return 1
        path, mail = found[args.number - 1]
        for name in ("Date", "From", "To", "Subject", "Message-ID", "X-Gatehouse-Notification"):
            if mail.message.get(name):
                print(f"{name}: {mail.message.get(name)}", file=stdout)
        print("", file=stdout)
        body = mail.part("text/html") if args.html else mail.part("text/plain")
        print(body or "(no such part)", file=stdout)
        return 0
    numbered = list(enumerate(found, start=1))
    if args.last is not None:
        numbered = numbered[-args.last :] if args.last > 0 else []
    if args.json:
        document = [
            {
                "number": number,
                "time": _when(mail, path),
                "to": str(mail.message.get("To", "")),
                "subject": mail.subject,
                "message_id": mail.message_id,
                "file": str(path),
            }
            for number, (path, mail) in numbered
        ]
        print(json.dumps(document, indent=2), file=stdout)
        return 0
    if not found:
        print(f"no mail in {directory}", file=stdout)
        return 0
    for number, (path, mail) in numbered:
        to = str(mail.message.get("To", ""))
        print(f"{number:>4}  {_when(mail, path)}  {to:<32}  {mail.subject}", file=stdout)
    return 0


# --- gatehouse notifications -----------------------------------------------------------------


def shown_address(address: Address | None) -> str:
    """An address for the terminal: emails and phone numbers as they are; webhook URLs
    without path, query or credentials (tokens live there); push tokens cut short."""
    from gatehouse.notifications.domain.addresses import AddressKind  # noqa: PLC0415

    if address is None:
        return "-"
    if address.kind is AddressKind.WEBHOOK_URL:
        parts = urlsplit(address.value)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
        rest = "/..." if parts.path.strip("/") or parts.query or parts.fragment else ""
        return f"{parts.scheme}://{host}{port}{rest}"
    if address.kind is AddressKind.PUSH_TOKEN:
        return f"push token {address.value[:4]}... ({len(address.value)} characters)"
    return address.value


def _recipient(letter: DeadLetter) -> str:
    n = letter.notification
    address = shown_address(n.address)
    return f"{n.user} <{address}>" if n.user else address


def _error(letter: DeadLetter, width: int = 160) -> str:
    n = letter.notification
    text = f"{n.failure_code}: {n.failure_message}" if n.failure_code else n.failure_message
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _notifications(
    args: argparse.Namespace, settings: Settings, stdout: TextIO, stderr: TextIO
) -> int:
    import asyncio  # noqa: PLC0415

    try:
        if args.notifications_command == "dead-letters":
            return asyncio.run(_dead_letters(settings, args.limit, stdout))
        return asyncio.run(_requeue(settings, list(args.names), args.all, stdout, stderr))
    except ConfigurationError as error:
        print(error, file=stderr)
        return 2


async def _with_app(settings: Settings) -> NotificationsApp:
    """The service's parts on its database, without its worker, consumers, mail sink or
    relay: the running service publishes the events committed here and sends what is
    requeued."""
    from gatehouse.notifications.app import NotificationsApp  # noqa: PLC0415
    from gatehouse.notifications.settings import load_notifications_settings  # noqa: PLC0415
    from gatehouse.runtime.bus import InProcessEventBus  # noqa: PLC0415
    from gatehouse.runtime.kv import InMemoryKeyValueStore  # noqa: PLC0415
    from gatehouse.runtime.live import LiveHub  # noqa: PLC0415
    from gatehouse.runtime.server import Lifecycle  # noqa: PLC0415
    from gatehouse.runtime.service_context import ServiceContext  # noqa: PLC0415

    bus = InProcessEventBus()
    context = ServiceContext(
        name="notifications",
        settings=settings,
        lifecycle=Lifecycle(),
        kv=InMemoryKeyValueStore(),
        bus=bus,
        live=LiveHub(bus),
    )
    app = NotificationsApp(
        context,
        load_notifications_settings(),
        outbox_relay=False,
        worker=False,
        consumers=False,
    )
    await app.database.start()
    return app


async def _dead_letters(settings: Settings, limit: int, stdout: TextIO) -> int:
    from gatehouse.notifications.handlers.dead_letters import list_dead_letters  # noqa: PLC0415

    app = await _with_app(settings)
    try:
        letters = await list_dead_letters(app.uow, limit)
    finally:
        await app.database.stop()
    if not letters:
        print("no dead letters", file=stdout)
        return 0
    for letter in letters:
        n = letter.notification
        when = letter.dead_time.astimezone().strftime("%Y-%m-%d %H:%M:%S")
        print(
            f"{n.name}  {n.channel.value:<8} {_recipient(letter):<40}  {when}  "
            f"{len(n.attempts)} attempts  {_error(letter)}",
            file=stdout,
        )
    return 0


async def _requeue(
    settings: Settings, names: list[str], every: bool, stdout: TextIO, stderr: TextIO
) -> int:
    from gatehouse.notifications.handlers.dead_letters import (  # noqa: PLC0415
        RequeueOutcome,
        requeue_all,
        requeue_many,
    )

    app = await _with_app(settings)
    try:
        if every:
            results = await requeue_all(app.uow, app.deps)
        else:
            results = await requeue_many(app.uow, app.deps, names)
    finally:
        await app.database.stop()
    explained = {
        RequeueOutcome.NOT_FOUND: "no such notification",
        RequeueOutcome.NOT_DEAD_LETTERED: "not dead-lettered",
        RequeueOutcome.CONTENT_ERASED: "its content held sensitive values and was erased; "
        "send it anew",
        RequeueOutcome.CONFLICT: "changed meanwhile (requeued by someone else?)",
    }
    for result in results:
        if result.requeued:
            print(f"{result.name}: requeued", file=stdout)
        else:
            status = f" (status {result.status.value})" if result.status is not None else ""
            print(f"{result.name}: not requeued: {explained[result.outcome]}{status}", file=stderr)
    requeued = sum(1 for result in results if result.requeued)
    if every and not results:
        print("no dead letters", file=stdout)
    elif every or len(results) > 1:
        print(f"requeued {requeued} of {len(results)}", file=stdout)
    return 0 if requeued == len(results) else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gatehouse")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    register(commands)
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except ConfigurationError as error:
        print(error, file=sys.stderr)
        return 2
    return run(args, settings)


if __name__ == "__main__":
    sys.exit(main())
