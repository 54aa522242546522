"""Optimistic concurrency: many concurrent ProcessPayment calls charge exactly once, also
across two server instances sharing one PostgreSQL database."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta
from pathlib import Path

import grpc
import pytest

from gatehouse.payments.adapters.sandbox import SandboxProvider
from gatehouse.payments.handlers.ports import ChargeRequest, ProviderDecision
from gatehouse.payments.v1 import payments_pb2
from gatehouse.runtime.config import Settings
from tests.integration.payments.harness import (
    PaymentsHarness,
    card_payment,
    ledger_ok,
    request_id,
    running_payments,
)
from tests.support.grpc_calls import error_info, rich_status

P = payments_pb2
CALLS = 24


class SlowSandbox(SandboxProvider):
    """Holds each charge a moment, so racing calls overlap the whole provider call."""

    async def charge(self, request: ChargeRequest, *, timeout: timedelta) -> ProviderDecision:
        await asyncio.sleep(0.05)
        return await super().charge(request, timeout=timeout)


def outcome(result: object) -> str:
    if isinstance(result, grpc.aio.AioRpcError):
        return f"{result.code().name}/{error_info(rich_status(result)).reason}"
    assert isinstance(result, P.ProcessPaymentResponse), result
    return P.PaymentStatus.Name(result.payment.status)


async def race(harnesses: list[PaymentsHarness], name: str, *, same_id: bool) -> Counter[str]:
    shared = request_id()
    stubs = [h.stub() for h in harnesses]
    results = await asyncio.gather(
        *(
            stubs[i % len(stubs)].ProcessPayment(
                P.ProcessPaymentRequest(name=name, request_id=shared if same_id else request_id()),
                metadata=harnesses[0].staff(),
            )
            for i in range(CALLS)
        ),
        return_exceptions=True,
    )
    return Counter(outcome(result) for result in results)


async def assert_charged_once(
    harness: PaymentsHarness, name: str, providers: list[SandboxProvider]
) -> None:
    assert sum(p.calls.get(name, 0) for p in providers) == 1
    assert await harness.count("payments_ledger_transactions") == 1
    changes = await harness.count("payments_changes")
    assert changes == 3  # created, processing, processed: each once
    await ledger_ok(harness)


@pytest.fixture
async def slow(database_url: str, settings: Settings, certs_dir: Path):  # type: ignore[no-untyped-def]
    async with running_payments(
        database_url, settings, certs_dir, provider=SlowSandbox()
    ) as harness:
        yield harness


async def test_concurrent_process_calls_charge_once(slow: PaymentsHarness) -> None:
    created = await slow.create(card_payment())
    outcomes = await race([slow], created.name, same_id=False)
    assert outcomes == Counter(
        {"PAYMENT_STATUS_COMPLETED": 1, "FAILED_PRECONDITION/INVALID_TRANSITION": CALLS - 1}
    )
    assert isinstance(slow.app.provider, SandboxProvider)
    await assert_charged_once(slow, created.name, [slow.app.provider])


async def test_concurrent_retries_of_one_request_charge_once(slow: PaymentsHarness) -> None:
    created = await slow.create(card_payment())
    outcomes = await race([slow], created.name, same_id=True)
    # Retries that arrive while the first call runs are told to come back; later ones get
    # the first call's answer.
    assert set(outcomes) <= {"PAYMENT_STATUS_COMPLETED", "ABORTED/REQUEST_IN_PROGRESS"}
    assert outcomes["PAYMENT_STATUS_COMPLETED"] >= 1
    assert isinstance(slow.app.provider, SandboxProvider)
    await assert_charged_once(slow, created.name, [slow.app.provider])


@pytest.mark.postgres
async def test_two_servers_on_one_database_charge_once(
    fresh_postgres_url: str, settings: Settings, certs_dir: Path
) -> None:
    first_provider, second_provider = SlowSandbox(), SlowSandbox()
    async with (
        running_payments(fresh_postgres_url, settings, certs_dir, provider=first_provider) as first,
        running_payments(
            fresh_postgres_url, settings, certs_dir, provider=second_provider, issuer=first.issuer
        ) as second,
    ):
        assert first.app.database.database is not second.app.database.database
        for _ in range(3):
            created = await first.create(card_payment())
            outcomes = await race([first, second], created.name, same_id=False)
            assert outcomes["PAYMENT_STATUS_COMPLETED"] == 1
            assert outcomes["FAILED_PRECONDITION/INVALID_TRANSITION"] == CALLS - 1
            assert (
                first_provider.calls.get(created.name, 0)
                + second_provider.calls.get(created.name, 0)
                == 1
            )
        assert await first.count("payments_ledger_transactions") == 3
        await ledger_ok(first)
