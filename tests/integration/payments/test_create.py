"""CreatePayment and GetPayment through a real server: methods, money, bad input (precise
errors, nothing written), idempotent retries, paying on behalf, access scoping."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2

from gatehouse.payments.adapters.sandbox import SandboxProvider
from gatehouse.payments.v1 import events_pb2, payments_pb2
from gatehouse.runtime.config import Settings
from tests.integration.payments.harness import (
    ALICE,
    APPROVE,
    BOB,
    PaymentsHarness,
    card_payment,
    money,
    refused,
    request_id,
    running_payments,
)
from tests.support.grpc_calls import detail, error_info

INVALID = grpc.StatusCode.INVALID_ARGUMENT
TABLES = ("payments_payments", "payments_changes", "outbox_events", "idempotency_records")


async def nothing_written(payments: PaymentsHarness) -> None:
    for table in TABLES:
        assert await payments.count(table) == 0, table


async def test_a_card_payment_is_created_pending_and_readable(payments: PaymentsHarness) -> None:
    created = await payments.create(
        card_payment("12.34", description="parking", metadata={"invoice": "inv-42"})
    )
    assert created.name.startswith("payments/")
    assert created.payer == ALICE
    assert created.creator.user == ALICE
    assert created.status == payments_pb2.PAYMENT_STATUS_PENDING
    assert (created.amount.units, created.amount.nanos, created.amount.currency_code) == (
        12,
        340_000_000,
        "USD",
    )
    assert created.refunded_amount.currency_code == "USD"
    assert created.etag == "1"
    assert (created.card.brand, created.card.last4) == ("visa", "4242")
    assert created.card.test_card_number == ""  # input only
    assert dict(created.metadata) == {"invoice": "inv-42"}
    response = await payments.stub().GetPayment(
        payments_pb2.GetPaymentRequest(name=created.name), metadata=payments.user(ALICE)
    )
    assert response.payment == created


async def test_bank_transfer_and_wallet_payments(payments: PaymentsHarness) -> None:
    bank = await payments.create(
        payments_pb2.Payment(
            amount=money("250.00", "EUR"),
            method=payments_pb2.PAYMENT_METHOD_BANK_TRANSFER,
            bank_transfer=payments_pb2.BankTransferDetails(
                account_holder_name="Alice", iban="DE89 3704 0044 0532 0130 00", bic="COBADEFFXXX"
            ),
        )
    )
    assert bank.bank_transfer.iban == ""
    assert bank.bank_transfer.iban_last4 == "3000"
    assert bank.bank_transfer.transfer_reference.startswith("GH-")
    bare = await payments.create(
        payments_pb2.Payment(amount=money("5"), method=payments_pb2.PAYMENT_METHOD_BANK_TRANSFER)
    )
    assert bare.status == payments_pb2.PAYMENT_STATUS_PENDING
    wallet = await payments.create(
        payments_pb2.Payment(
            amount=money("3.50", "GBP"),
            method=payments_pb2.PAYMENT_METHOD_WALLET,
            wallet=payments_pb2.WalletDetails(
                type=payments_pb2.WALLET_TYPE_APPLE_PAY, token="tok_wallet"
            ),
        )
    )
    assert wallet.wallet.type == payments_pb2.WALLET_TYPE_APPLE_PAY
    assert wallet.wallet.token == ""
    done = await payments.process(wallet.name)
    assert done.status == payments_pb2.PAYMENT_STATUS_COMPLETED


@pytest.mark.parametrize(
    ("payment", "reason", "field"),
    [
        (card_payment("0"), "INVALID_AMOUNT", "payment.amount"),
        (card_payment("-5.00"), "INVALID_AMOUNT", "payment.amount"),
        (card_payment("1.001"), "AMOUNT_PRECISION_EXCEEDED", "payment.amount"),
        (card_payment("1.5", "JPY"), "AMOUNT_PRECISION_EXCEEDED", "payment.amount"),
        (card_payment("1.2345", "KWD"), "AMOUNT_PRECISION_EXCEEDED", "payment.amount"),
        (card_payment("10", "XXX"), "UNSUPPORTED_CURRENCY", "payment.amount.currency_code"),
        (card_payment("10", "usd"), "UNSUPPORTED_CURRENCY", "payment.amount.currency_code"),
        (
            payments_pb2.Payment(
                method=payments_pb2.PAYMENT_METHOD_CARD,
                card=payments_pb2.CardDetails(test_card_number=APPROVE),
            ),
            "INVALID_AMOUNT",
            "payment.amount",
        ),
        (
            card_payment(card="4111111111111111"),
            "UNKNOWN_TEST_CARD",
            "payment.card.test_card_number",
        ),
        (
            payments_pb2.Payment(amount=money("1"), method=payments_pb2.PAYMENT_METHOD_CARD),
            "METHOD_DETAILS_MISMATCH",
            "payment.card",
        ),
        (
            payments_pb2.Payment(
                amount=money("1"),
                method=payments_pb2.PAYMENT_METHOD_CARD,
                wallet=payments_pb2.WalletDetails(type=payments_pb2.WALLET_TYPE_PAYPAL, token="t"),
            ),
            "METHOD_DETAILS_MISMATCH",
            "payment.method_details",
        ),
        (
            payments_pb2.Payment(
                amount=money("1"),
                method=payments_pb2.PAYMENT_METHOD_WALLET,
                wallet=payments_pb2.WalletDetails(type=payments_pb2.WALLET_TYPE_PAYPAL),
            ),
            "METHOD_DETAILS_MISMATCH",
            "payment.wallet",
        ),
        (
            payments_pb2.Payment(
                amount=money("1"),
                method=payments_pb2.PAYMENT_METHOD_BANK_TRANSFER,
                bank_transfer=payments_pb2.BankTransferDetails(iban="DE89370400440532013001"),
            ),
            "INVALID_FIELD",
            "payment.bank_transfer.iban",
        ),
        (
            payments_pb2.Payment(
                amount=money("1"),
                card=payments_pb2.CardDetails(test_card_number=APPROVE),
            ),
            "INVALID_FIELD",
            "payment.method",
        ),
        (card_payment(metadata={"Bad Key": "x"}), "INVALID_METADATA", "payment.metadata"),
        (
            card_payment(metadata={f"k{i}": "v" for i in range(51)}),
            "INVALID_METADATA",
            "payment.metadata",
        ),
        (card_payment(metadata={"k": "v" * 501}), "INVALID_METADATA", "payment.metadata[k]"),
        (card_payment(description="d" * 501), "INVALID_FIELD", "payment.description"),
        (card_payment(payer="people/bob"), "INVALID_RESOURCE_NAME", "payment.payer"),
    ],
)
async def test_bad_input_is_refused_precisely_and_writes_nothing(
    payments: PaymentsHarness, payment: payments_pb2.Payment, reason: str, field: str
) -> None:
    status = await refused(
        payments.stub().CreatePayment(
            payments_pb2.CreatePaymentRequest(payment=payment, request_id=request_id()),
            metadata=payments.user(ALICE, ("payments.create", "payments.manage")),
        ),
        INVALID,
        reason,
    )
    violations = detail(status, error_details_pb2.BadRequest).field_violations
    assert [v.field for v in violations] == [field]
    assert violations[0].description
    await nothing_written(payments)


async def test_all_problems_come_back_together(payments: PaymentsHarness) -> None:
    status = await refused(
        payments.stub().CreatePayment(
            payments_pb2.CreatePaymentRequest(
                payment=payments_pb2.Payment(amount=money("0.001"), description="d" * 600),
                request_id=request_id(),
            ),
            metadata=payments.user(),
        ),
        INVALID,
        "AMOUNT_PRECISION_EXCEEDED",
    )
    fields = [v.field for v in detail(status, error_details_pb2.BadRequest).field_violations]
    assert fields == ["payment.amount", "payment.method", "payment.description"]


async def test_request_id_is_required_and_must_be_a_uuid(payments: PaymentsHarness) -> None:
    await refused(
        payments.stub().CreatePayment(
            payments_pb2.CreatePaymentRequest(payment=card_payment()), metadata=payments.user()
        ),
        INVALID,
        "INVALID_REQUEST_ID",
    )
    # The form is checked by the runtime before the handler (its reason: INVALID_FIELD).
    status = await refused(
        payments.stub().CreatePayment(
            payments_pb2.CreatePaymentRequest(payment=card_payment(), request_id="not-a-uuid"),
            metadata=payments.user(),
        ),
        INVALID,
        "INVALID_FIELD",
    )
    assert detail(status, error_details_pb2.BadRequest).field_violations[0].field == "request_id"
    await nothing_written(payments)


@pytest.fixture
async def live_provider(
    database_url: str, settings: Settings, certs_dir: Path
) -> AsyncIterator[PaymentsHarness]:
    provider = SandboxProvider(name="live", accepts_test_cards=False)
    async with running_payments(database_url, settings, certs_dir, provider=provider) as harness:
        yield harness


async def test_test_cards_are_refused_with_a_live_provider(live_provider: PaymentsHarness) -> None:
    await refused(
        live_provider.stub().CreatePayment(
            payments_pb2.CreatePaymentRequest(payment=card_payment(), request_id=request_id()),
            metadata=live_provider.user(),
        ),
        INVALID,
        "TEST_CARD_NOT_ALLOWED",
    )
    tokenised = await live_provider.create(
        payments_pb2.Payment(
            amount=money("1"),
            method=payments_pb2.PAYMENT_METHOD_CARD,
            card=payments_pb2.CardDetails(token="tok_visa"),
        )
    )
    assert tokenised.status == payments_pb2.PAYMENT_STATUS_PENDING


async def test_the_same_request_id_replays_the_first_payment(payments: PaymentsHarness) -> None:
    request = payments_pb2.CreatePaymentRequest(
        payment=card_payment("7.00"), request_id=request_id()
    )
    stub = payments.stub()
    first = await stub.CreatePayment(request, metadata=payments.user())
    again = await stub.CreatePayment(request, metadata=payments.user())
    assert again.payment == first.payment
    assert await payments.count("payments_payments") == 1
    assert await payments.count("outbox_events") == 1
    # Another caller choosing the same id is another request.
    theirs = await stub.CreatePayment(request, metadata=payments.user(BOB))
    assert theirs.payment.name != first.payment.name
    changed = payments_pb2.CreatePaymentRequest(
        payment=card_payment("8.00"), request_id=request.request_id
    )
    status = await refused(
        stub.CreatePayment(changed, metadata=payments.user()),
        grpc.StatusCode.ALREADY_EXISTS,
        "REQUEST_ID_REUSED",
    )
    assert error_info(status).domain == "payments.gatehouse"
    assert await payments.count("payments_payments") == 2


async def test_concurrent_retries_create_one_payment(payments: PaymentsHarness) -> None:
    request = payments_pb2.CreatePaymentRequest(payment=card_payment(), request_id=request_id())
    stub = payments.stub()
    responses = await asyncio.gather(
        *(stub.CreatePayment(request, metadata=payments.user()) for _ in range(8))
    )
    assert len({r.payment.name for r in responses}) == 1
    assert await payments.count("payments_payments") == 1


async def test_paying_on_behalf_of_another_user_needs_payments_manage(
    payments: PaymentsHarness,
) -> None:
    await refused(
        payments.stub().CreatePayment(
            payments_pb2.CreatePaymentRequest(
                payment=card_payment(payer=BOB), request_id=request_id()
            ),
            metadata=payments.user(ALICE),
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        "PERMISSION_MISSING",
    )
    await nothing_written(payments)
    manager = payments.user(ALICE, ("payments.create", "payments.manage"))
    created = await payments.create(card_payment(payer=BOB), metadata=manager)
    assert (created.payer, created.creator.user) == (BOB, ALICE)
    # Both the payer and the creator see it; a stranger does not.
    for user in (ALICE, BOB):
        seen = await payments.stub().GetPayment(
            payments_pb2.GetPaymentRequest(name=created.name), metadata=payments.user(user)
        )
        assert seen.payment.name == created.name
    status = await refused(
        payments.stub().GetPayment(
            payments_pb2.GetPaymentRequest(name=created.name), metadata=payments.user("users/eve")
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        "PERMISSION_MISSING",
    )
    assert error_info(status).metadata["permission"] == "payments.read_all"


async def test_creating_needs_payments_create(payments: PaymentsHarness) -> None:
    await refused(
        payments.stub().CreatePayment(
            payments_pb2.CreatePaymentRequest(payment=card_payment(), request_id=request_id()),
            metadata=payments.user(ALICE, ()),
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        "PERMISSION_MISSING",
    )


async def test_missing_payments_cannot_be_probed(payments: PaymentsHarness) -> None:
    missing = "payments/01J00000000000000000000000"
    # Without payments.read_all a missing payment looks like someone else's.
    await refused(
        payments.stub().GetPayment(
            payments_pb2.GetPaymentRequest(name=missing), metadata=payments.user()
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        "PERMISSION_MISSING",
    )
    await refused(
        payments.stub().GetPayment(
            payments_pb2.GetPaymentRequest(name=missing),
            metadata=payments.staff("payments.read_all"),
        ),
        grpc.StatusCode.NOT_FOUND,
        "PAYMENT_NOT_FOUND",
    )


async def test_creation_publishes_payment_created(payments: PaymentsHarness) -> None:
    created = await payments.create(card_payment("9.99", metadata={"invoice": "i-1"}))
    for _ in range(100):
        entries = await payments.bus.read("events.payment", after=None, count=10)
        if entries:
            break
        await asyncio.sleep(0.02)
    (_, event), *_ = entries
    assert (event.type, event.source, event.subject) == (
        "payment.created",
        "payments",
        created.name,
    )
    data = events_pb2.PaymentCreated()
    assert event.data.Unpack(data)
    assert (data.payment, data.payer, data.amount.units, data.metadata["invoice"]) == (
        created.name,
        ALICE,
        9,
        "i-1",
    )
    assert data.creator.user == ALICE
