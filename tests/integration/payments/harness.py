"""Running the real payments service in tests: a real gRPC server on port 0 with mTLS, the
real access rules (TestIssuer tokens), a real database, the in-process bus and live hub."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import status_pb2
from google.type import money_pb2

from gatehouse.events.v1.envelope_pb2 import Event
from gatehouse.payments.app import PaymentsApp
from gatehouse.payments.handlers.common import utc_now
from gatehouse.payments.handlers.ports import AnyPayer, PayerDirectory, PaymentProvider
from gatehouse.payments.settings import PaymentsSettings
from gatehouse.payments.v1 import payments_pb2, payments_pb2_grpc
from gatehouse.runtime.bus import InProcessEventBus
from gatehouse.runtime.config import Settings
from gatehouse.runtime.identity import JwksTokenVerifier, StaticKeySource
from gatehouse.runtime.kv import InMemoryKeyValueStore
from gatehouse.runtime.live import LiveHub, LiveHubOptions
from gatehouse.runtime.server import Lifecycle, ServiceServer
from gatehouse.runtime.service_context import ServiceContext
from tests.support.grpc_calls import error_info, rich_status
from tests.support.mesh import channel_to, single_server
from tests.support.tokens import TestIssuer

ALICE = "users/alice"
BOB = "users/bob"
STAFF = "users/staff"
APPROVE = "4242424242424242"
DECLINE = "4000000000000002"
INSUFFICIENT = "4000000000009995"
EXPIRED = "4000000000000069"
ERROR = "4000000000000119"
TIMEOUT = "4000000000000259"
# What an end user holds; staff hold more.
PAYER_PERMISSIONS = ("payments.create", "payments.process")
STAFF_PERMISSIONS = (
    "payments.create",
    "payments.process",
    "payments.refund",
    "payments.manage",
    "payments.read_all",
)

Metadata = tuple[tuple[str, str], ...]


def fast_settings(**overrides: Any) -> PaymentsSettings:
    values: dict[str, Any] = {
        "provider_timeout": timedelta(milliseconds=300),
        # Long, so that "not overdue yet" holds however slow the machine; tests that need a
        # call to be overdue move the harness clock past it instead of sleeping.
        "reconcile_after": timedelta(seconds=30),
        "reconcile_interval": timedelta(hours=1),  # tests reconcile when they choose
        "watch_heartbeat": timedelta(seconds=1),
    }
    values.update(overrides)
    return PaymentsSettings(_env_file=None, **values)  # type: ignore[call-arg]


def request_id() -> str:
    return str(uuid.uuid4())


def money(amount: str, currency: str = "USD") -> money_pb2.Money:
    """'12.34' -> Money(units=12, nanos=340000000)."""
    negative = amount.startswith("-")
    units_text, _, fraction = amount.lstrip("-").partition(".")
    nanos = int((fraction + "0" * 9)[:9]) if fraction else 0
    units = int(units_text)
    sign = -1 if negative else 1
    return money_pb2.Money(currency_code=currency, units=sign * units, nanos=sign * nanos)


def card_payment(
    amount: str = "10.00",
    currency: str = "USD",
    card: str = APPROVE,
    **fields: Any,
) -> payments_pb2.Payment:
    return payments_pb2.Payment(
        amount=money(amount, currency),
        method=payments_pb2.PAYMENT_METHOD_CARD,
        card=payments_pb2.CardDetails(test_card_number=card),
        **fields,
    )


async def refused(call: Awaitable[Any], code: grpc.StatusCode, reason: str) -> status_pb2.Status:
    """Await a call that must fail with `code` and ErrorInfo `reason`; its rich status."""
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    assert raised.value.code() == code, (raised.value.code(), raised.value.details())
    status = rich_status(raised.value)
    info = error_info(status)
    assert info.reason == reason, (info.reason, raised.value.details())
    assert info.domain == "payments.gatehouse"
    return status


class MovableClock:
    """The wall clock plus an offset the test moves forward: "time passes" without sleeping."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return utc_now() + self.offset

    def advance(self, delta: timedelta) -> None:
        self.offset += delta


@dataclass
class PaymentsHarness:
    app: PaymentsApp
    server: ServiceServer
    port: int
    issuer: TestIssuer
    certs_dir: Path
    bus: InProcessEventBus
    live: LiveHub
    clock: MovableClock
    channels: list[grpc.aio.Channel] = field(default_factory=list)

    def channel(self) -> grpc.aio.Channel:
        channel = channel_to(self.certs_dir)(self.port)
        self.channels.append(channel)
        return channel

    def stub(self) -> payments_pb2_grpc.PaymentsServiceAsyncStub:
        return payments_pb2_grpc.PaymentsServiceStub(self.channel())

    def user(self, user: str = ALICE, permissions: Sequence[str] = PAYER_PERMISSIONS) -> Metadata:
        return self.issuer.bearer(subject=user, permissions=list(permissions))

    def staff(self, *permissions: str) -> Metadata:
        return self.user(STAFF, permissions or STAFF_PERMISSIONS)

    async def create(
        self,
        payment: payments_pb2.Payment | None = None,
        *,
        user: str = ALICE,
        metadata: Metadata | None = None,
    ) -> payments_pb2.Payment:
        response = await self.stub().CreatePayment(
            payments_pb2.CreatePaymentRequest(
                payment=payment or card_payment(), request_id=request_id()
            ),
            metadata=metadata or self.user(user),
        )
        return response.payment

    async def process(
        self, name: str, *, metadata: Metadata | None = None, etag: str = ""
    ) -> payments_pb2.Payment:
        response = await self.stub().ProcessPayment(
            payments_pb2.ProcessPaymentRequest(name=name, request_id=request_id(), etag=etag),
            metadata=metadata or self.staff(),
        )
        return response.payment

    async def completed(self, amount: str = "10.00", currency: str = "USD") -> payments_pb2.Payment:
        created = await self.create(card_payment(amount, currency))
        done = await self.process(created.name)
        assert done.status == payments_pb2.PAYMENT_STATUS_COMPLETED
        return done

    async def refund(
        self, name: str, amount: money_pb2.Money | None = None, *, reason: str = "goodwill"
    ) -> payments_pb2.RefundPaymentResponse:
        response: payments_pb2.RefundPaymentResponse = await self.stub().RefundPayment(
            payments_pb2.RefundPaymentRequest(
                name=name, amount=amount, reason=reason, request_id=request_id()
            ),
            metadata=self.staff(),
        )
        return response

    async def get(self, name: str) -> payments_pb2.Payment:
        response = await self.stub().GetPayment(
            payments_pb2.GetPaymentRequest(name=name), metadata=self.staff()
        )
        return response.payment

    def let_overdue(self) -> None:
        """Move time past the reconciler's waiting period."""
        self.clock.advance(self.app.settings.reconcile_after + timedelta(seconds=1))

    async def count(self, table: str) -> int:
        from sqlalchemy import text  # noqa: PLC0415

        async with self.app.database.database.engine.connect() as connection:
            result = await connection.execute(text(f"SELECT count(*) FROM {table}"))
            return int(result.scalar_one())


@asynccontextmanager
async def running_payments(
    database_url: str,
    settings: Settings,
    certs_dir: Path,
    *,
    issuer: TestIssuer | None = None,
    payments_settings: PaymentsSettings | None = None,
    provider: PaymentProvider | None = None,
    payers: PayerDirectory | None = None,
    bus: InProcessEventBus | None = None,
    reconciler: bool = False,
    migrate: bool = True,
) -> AsyncIterator[PaymentsHarness]:
    issuer = issuer or TestIssuer()
    own_bus = bus is None
    bus = bus or InProcessEventBus()
    live = LiveHub(bus, LiveHubOptions(heartbeat_interval=timedelta(seconds=1)))
    context = ServiceContext(
        name="payments",
        settings=settings.model_copy(
            update={"database_url": database_url, "migrate_on_start": migrate}
        ),
        lifecycle=Lifecycle(),
        kv=InMemoryKeyValueStore(),
        bus=bus,
        live=live,
    )
    clock = MovableClock()
    app = PaymentsApp(
        context,
        payments_settings or fast_settings(),
        provider=provider,
        # Auth is not running here unless a test brings it: every well-formed user may pay.
        payers=payers or AnyPayer(),
        clock=clock,
        reconciler=reconciler,
    )
    verifier = JwksTokenVerifier(
        StaticKeySource(issuer.jwks()), issuer="gatehouse", audience="gatehouse"
    )
    server = single_server(
        app.definition(), certs_dir, verifier=verifier, lifecycle=context.lifecycle
    )
    await live.start()
    port = await server.start()
    harness = PaymentsHarness(app, server, port, issuer, certs_dir, bus, live, clock)
    try:
        yield harness
    finally:
        for channel in harness.channels:
            await channel.close()
        await server.stop(0)
        await live.stop()
        if own_bus:
            await bus.close()


async def ledger_ok(payments: PaymentsHarness) -> None:
    from gatehouse.payments.handlers.ledger import verify_ledger  # noqa: PLC0415

    report = await verify_ledger(payments.app.uow())
    assert report.ok, report.problems


async def events_about(
    payments: PaymentsHarness, subject: str, *, wait_for: int = 0
) -> list[Event]:
    """The events published about `subject`, in order (waits until `wait_for` are there)."""
    import asyncio  # noqa: PLC0415

    found: list[Event] = []
    for _ in range(300):
        entries = await payments.bus.read("events.payment", after=None, count=10_000)
        found = [event for _, event in entries if event.subject == subject]
        if len(found) >= wait_for:
            break
        await asyncio.sleep(0.01)
    return found


async def event_types(payments: PaymentsHarness, subject: str, *, wait_for: int = 0) -> list[str]:
    return [event.type for event in await events_about(payments, subject, wait_for=wait_for)]
