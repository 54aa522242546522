"""`gatehouse mail`: what the development mail sink received.

In the embedded default (`gatehouse up`) the notifications service runs a catch-all SMTP
server (aiosmtpd) on `GATEHOUSE_NOTIFICATIONS_SMTP_HOST:SMTP_PORT` (127.0.0.1:2525) and keeps
every message as a `.eml` file under `<home>/mail`. This command reads that directory, so it
works while the service runs and after it stopped:

    gatehouse mail                 # one line per message, newest last
    gatehouse mail --last 5        # only the last five
    gatehouse mail show 3          # message 3 (as numbered in the list): headers and text part
    gatehouse mail show 3 --html   # its HTML part instead
    gatehouse mail clear           # delete them all
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TextIO

from gatehouse.notifications.adapters.sink import ReceivedMail, stored_mail
from gatehouse.notifications.app import mail_directory
from gatehouse.runtime.config import ConfigurationError, Settings, load_settings


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
