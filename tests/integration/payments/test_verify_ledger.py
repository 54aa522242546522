"""`gatehouse payments verify-ledger`: a sound ledger passes; a tampered one is caught."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
from pathlib import Path

from sqlalchemy import text

from gatehouse.payments import cli
from gatehouse.runtime.config import Settings
from tests.integration.payments.harness import DECLINE, PaymentsHarness, card_payment, money


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="gatehouse")
    commands = parser.add_subparsers(dest="command", required=True)
    cli.register(commands)
    return parser.parse_args(argv)


async def run(settings: Settings, database_url: str, *argv: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    code = await asyncio.to_thread(
        cli.run,
        parse("payments", "verify-ledger", *argv),
        settings.model_copy(update={"database_url": database_url}),
        stdout=out,
        stderr=err,
    )
    return code, out.getvalue() + err.getvalue()


async def test_verify_ledger_passes_then_catches_tampering(
    payments: PaymentsHarness, settings: Settings, database_url: str
) -> None:
    done = await payments.completed("10.00")
    await payments.refund(done.name, money("2.50"))
    await payments.completed("700", "JPY")
    await payments.process((await payments.create(card_payment(card=DECLINE))).name)
    await payments.create()
    code, output = await run(settings, database_url)
    assert code == 0, output
    assert "ledger OK: 3 transactions, 4 payments checked" in output

    payment_id = done.name.removeprefix("payments/")
    async with payments.app.database.database.engine.begin() as connection:
        await connection.execute(
            text(
                "UPDATE payments_ledger_entries SET amount_minor = amount_minor + 1 "
                "WHERE account = :account"
            ),
            {"account": f"payments/{payment_id}"},
        )
    code, output = await run(settings, database_url, "--json")
    assert code == 1
    report = json.loads(output)
    assert not report["ok"]
    kinds = {problem["kind"] for problem in report["problems"]}
    assert kinds == {"UNBALANCED_TRANSACTION", "PAYMENT_BALANCE_MISMATCH"}
    assert any(p["subject"] == done.name for p in report["problems"])


async def test_an_unreadable_database_is_exit_2(settings: Settings, tmp_path: Path) -> None:
    code, output = await run(settings, f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}")
    assert code == 2
    assert "cannot read the payments database" in output
