"""`gatehouse payments ...`: operator commands of the payments service.

- `verify-ledger`: check that every ledger transaction balances and that the ledger
  reconciles with the payments (see `gatehouse.payments.domain.ledger.verify`). Prints one
  line per problem; exit 0 when the ledger is sound, 1 when it is not, 2 when the database
  cannot be read. Works on the payments database the settings name
  (`GATEHOUSE_DATABASE_URL`, or the SQLite file under `<home>/data`), also while the
  service runs.

Registered in `gatehouse.cli.main` with `payments_cli.register(commands)` in `_parser()` and
`if command == "payments": return payments_cli.run(args, settings)` in `main()`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import TextIO

from sqlalchemy.exc import SQLAlchemyError

from gatehouse.payments.adapters.unit_of_work import SqlAlchemyPaymentsUnitOfWork
from gatehouse.payments.domain.ledger import LedgerReport
from gatehouse.payments.handlers.ledger import verify_ledger
from gatehouse.runtime.config import Settings
from gatehouse.runtime.db import Database


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `payments` and its subcommands to the top-level parser."""
    payments = commands.add_parser("payments", help="payments service administration")
    payments_commands = payments.add_subparsers(
        dest="payments_command", required=True, metavar="COMMAND"
    )
    verify = payments_commands.add_parser(
        "verify-ledger",
        help="check that the double-entry ledger balances and reconciles with the payments",
    )
    verify.add_argument("--json", action="store_true", help="print the report as JSON")


def run(
    args: argparse.Namespace,
    settings: Settings,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr
    if args.payments_command == "verify-ledger":
        return asyncio.run(
            _verify(settings.database_url_for("payments"), args.json, stdout, stderr)
        )
    print(f"gatehouse payments: unknown command {args.payments_command!r}", file=stderr)
    return 2


async def verify_database(database_url: str) -> LedgerReport:
    async with Database(database_url) as database:
        return await verify_ledger(SqlAlchemyPaymentsUnitOfWork(database.sessionmaker))


async def _verify(database_url: str, as_json: bool, stdout: TextIO, stderr: TextIO) -> int:
    try:
        report = await verify_database(database_url)
    except (SQLAlchemyError, OSError) as error:
        # The driver's text may carry SQL or connection details: the type says enough.
        print(
            f"gatehouse payments: cannot read the payments database ({type(error).__name__}); "
            "is it reachable and migrated?",
            file=stderr,
        )
        return 2
    if as_json:
        document = {
            "ok": report.ok,
            "payments": report.payments,
            "transactions": report.transactions,
            "problems": [
                {"kind": p.kind.value, "subject": p.subject, "detail": p.detail}
                for p in report.problems
            ],
        }
        print(json.dumps(document, indent=2), file=stdout)
    else:
        for problem in report.problems:
            print(f"{problem.kind.value}\t{problem.subject}\t{problem.detail}", file=stdout)
        verdict = "ledger OK" if report.ok else f"ledger has {len(report.problems)} problem(s)"
        print(
            f"{verdict}: {report.transactions} transactions, {report.payments} payments checked",
            file=stdout,
        )
    return 0 if report.ok else 1
