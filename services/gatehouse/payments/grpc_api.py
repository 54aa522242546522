"""gRPC entrypoint of the payments service: a thin servicer, proto -> command -> handler -> proto.

No rules and no status codes here: the handlers raise domain errors and the error
interceptor maps them. What happens here is reading requests field by field into commands
(so every field a command holds was looked at on purpose) and building responses.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf import timestamp_pb2
from google.type import money_pb2
from typing_extensions import override

from gatehouse.common.v1 import common_pb2
from gatehouse.payments import mapping
from gatehouse.payments.handlers import payments as use_cases
from gatehouse.payments.handlers.common import PaymentsDeps, Principal
from gatehouse.payments.handlers.ports import PaymentsUnitOfWork
from gatehouse.payments.handlers.queries import ListPayments, get_payment, list_payments
from gatehouse.payments.handlers.watch import ChangeItem, WatchPayment, watch_payment
from gatehouse.payments.v1 import payments_pb2, payments_pb2_grpc
from gatehouse.runtime.live import LiveSource
from gatehouse.runtime.principal import current_principal, request_fingerprint

UnitOfWorkFactory = Callable[[], PaymentsUnitOfWork]
Context = grpc.aio.ServicerContext[Any, Any]
_NAME_PREFIX = "payments/"


def payment_id(name: str) -> str:
    # The validation interceptor has checked the name against `payments/*` already.
    return name.removeprefix(_NAME_PREFIX)


def money_input(message: money_pb2.Money) -> use_cases.MoneyInput:
    return use_cases.MoneyInput(message.units, message.nanos, message.currency_code)


def _time(message: timestamp_pb2.Timestamp) -> datetime:
    return message.ToDatetime(tzinfo=UTC)


def _details(payment: payments_pb2.Payment) -> use_cases.DetailsInput:
    kind = payment.WhichOneof("method_details")
    if kind == "card":
        card = payment.card
        return use_cases.CardInput(token=card.token, test_card_number=card.test_card_number)
    if kind == "bank_transfer":
        bank = payment.bank_transfer
        return use_cases.BankTransferInput(bank.account_holder_name, bank.iban, bank.bic)
    if kind == "wallet":
        wallet = payment.wallet
        return use_cases.WalletInput(mapping.WALLET_FROM_PROTO.get(wallet.type), wallet.token)
    return None


def principal() -> Principal:
    return current_principal(Principal)


class PaymentsServicer(payments_pb2_grpc.PaymentsServiceServicer):
    """Payments, their lifecycle, refunds, the provider adapter and the ledger."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        deps: Callable[[], PaymentsDeps],
        live: LiveSource,
        stopping: asyncio.Event | None = None,
    ) -> None:
        self._uow = uow
        self._deps = deps
        self._live = live
        self._stopping = stopping

    @override
    async def CreatePayment(
        self, request: payments_pb2.CreatePaymentRequest, context: Context
    ) -> payments_pb2.CreatePaymentResponse:
        payment = request.payment
        command = use_cases.CreatePayment(
            request_id=request.request_id,
            fingerprint=request_fingerprint(request),
            amount=money_input(payment.amount) if payment.HasField("amount") else None,
            method=mapping.METHOD_FROM_PROTO.get(payment.method),
            details=_details(payment),
            payer=payment.payer,
            description=payment.description,
            metadata=dict(payment.metadata),
        )
        created = await use_cases.create_payment(command, principal(), self._uow(), self._deps())
        return payments_pb2.CreatePaymentResponse(payment=mapping.payment_to_proto(created))

    @override
    async def GetPayment(
        self, request: payments_pb2.GetPaymentRequest, context: Context
    ) -> payments_pb2.GetPaymentResponse:
        found = await get_payment(payment_id(request.name), principal(), self._uow())
        return payments_pb2.GetPaymentResponse(payment=mapping.payment_to_proto(found))

    @override
    async def ListPayments(
        self, request: payments_pb2.ListPaymentsRequest, context: Context
    ) -> payments_pb2.ListPaymentsResponse:
        time_range = request.create_time_range
        query = ListPayments(
            page_size=request.page_size,
            page_token=request.page_token,
            payer=request.payer,
            statuses=tuple(mapping.STATUS_FROM_PROTO.get(s) for s in request.statuses),
            methods=tuple(mapping.METHOD_FROM_PROTO.get(m) for m in request.methods),
            created_from=(
                _time(time_range.start_time) if time_range.HasField("start_time") else None
            ),
            created_before=(
                _time(time_range.end_time) if time_range.HasField("end_time") else None
            ),
            min_amount=money_input(request.min_amount) if request.HasField("min_amount") else None,
            max_amount=money_input(request.max_amount) if request.HasField("max_amount") else None,
            currency_code=request.currency_code,
            order_by=request.order_by,
        )
        page = await list_payments(query, principal(), self._uow(), self._deps())
        return payments_pb2.ListPaymentsResponse(
            payments=[mapping.payment_to_proto(p) for p in page.payments],
            next_page_token=page.next_page_token,
        )

    @override
    async def ProcessPayment(
        self, request: payments_pb2.ProcessPaymentRequest, context: Context
    ) -> payments_pb2.ProcessPaymentResponse:
        command = use_cases.ProcessPayment(
            payment_id=payment_id(request.name),
            request_id=request.request_id,
            fingerprint=request_fingerprint(request),
            etag=request.etag,
        )
        processed = await use_cases.process_payment(command, principal(), self._uow(), self._deps())
        return payments_pb2.ProcessPaymentResponse(payment=mapping.payment_to_proto(processed))

    @override
    async def CancelPayment(
        self, request: payments_pb2.CancelPaymentRequest, context: Context
    ) -> payments_pb2.CancelPaymentResponse:
        command = use_cases.CancelPayment(
            payment_id=payment_id(request.name),
            request_id=request.request_id,
            fingerprint=request_fingerprint(request),
            reason=request.reason,
            etag=request.etag,
        )
        canceled = await use_cases.cancel_payment(command, principal(), self._uow(), self._deps())
        return payments_pb2.CancelPaymentResponse(payment=mapping.payment_to_proto(canceled))

    @override
    async def RefundPayment(
        self, request: payments_pb2.RefundPaymentRequest, context: Context
    ) -> payments_pb2.RefundPaymentResponse:
        command = use_cases.RefundPayment(
            payment_id=payment_id(request.name),
            request_id=request.request_id,
            fingerprint=request_fingerprint(request),
            reason=request.reason,
            amount=money_input(request.amount) if request.HasField("amount") else None,
            etag=request.etag,
        )
        refund, payment = await use_cases.refund_payment(
            command, principal(), self._uow(), self._deps()
        )
        return payments_pb2.RefundPaymentResponse(
            refund=mapping.refund_to_proto(refund), payment=mapping.payment_to_proto(payment)
        )

    @override
    async def WatchPayment(
        self, request: payments_pb2.WatchPaymentRequest, context: Context
    ) -> AsyncIterator[payments_pb2.WatchPaymentResponse]:
        query = WatchPayment(
            payment_id=payment_id(request.name),
            resume_after=request.resume_after,
            follow_refunds=request.follow_refunds,
        )
        items = watch_payment(
            query,
            principal(),
            self._uow(),
            self._live,
            self._deps(),
            self._stopping,
        )
        async for item in items:
            if isinstance(item, ChangeItem):
                yield payments_pb2.WatchPaymentResponse(
                    status_change=mapping.change_to_proto(item.change, first=item.first)
                )
            else:
                yield payments_pb2.WatchPaymentResponse(
                    heartbeat=common_pb2.Heartbeat(
                        time=mapping.timestamp(item.time), last_event_id=item.last_event_id
                    )
                )
