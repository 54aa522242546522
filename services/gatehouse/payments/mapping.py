"""Between the contract's messages and the domain: enums, money, payments, refunds, changes.

Only output is mapped here (domain -> proto) plus the enum tables both directions need;
requests are read field by field where the servicer builds commands, so every field a
command holds has been looked at on purpose.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from google.protobuf import timestamp_pb2
from google.type import money_pb2

from gatehouse.common.v1 import common_pb2
from gatehouse.payments.domain.money import Money
from gatehouse.payments.domain.payments import (
    Actor,
    BankTransferInfo,
    CardInfo,
    Payment,
    PaymentChange,
    PaymentMethod,
    PaymentStatus,
    Refund,
    RefundStatus,
    WalletInfo,
    WalletType,
)
from gatehouse.payments.v1 import payments_pb2

STATUS_TO_PROTO: Mapping[PaymentStatus, payments_pb2.PaymentStatus.ValueType] = {
    PaymentStatus.PENDING: payments_pb2.PAYMENT_STATUS_PENDING,
    PaymentStatus.PROCESSING: payments_pb2.PAYMENT_STATUS_PROCESSING,
    PaymentStatus.COMPLETED: payments_pb2.PAYMENT_STATUS_COMPLETED,
    PaymentStatus.FAILED: payments_pb2.PAYMENT_STATUS_FAILED,
    PaymentStatus.CANCELED: payments_pb2.PAYMENT_STATUS_CANCELED,
    PaymentStatus.PARTIALLY_REFUNDED: payments_pb2.PAYMENT_STATUS_PARTIALLY_REFUNDED,
    PaymentStatus.REFUNDED: payments_pb2.PAYMENT_STATUS_REFUNDED,
}
STATUS_FROM_PROTO: Mapping[int, PaymentStatus] = {v: k for k, v in STATUS_TO_PROTO.items()}

METHOD_TO_PROTO: Mapping[PaymentMethod, payments_pb2.PaymentMethod.ValueType] = {
    PaymentMethod.CARD: payments_pb2.PAYMENT_METHOD_CARD,
    PaymentMethod.BANK_TRANSFER: payments_pb2.PAYMENT_METHOD_BANK_TRANSFER,
    PaymentMethod.WALLET: payments_pb2.PAYMENT_METHOD_WALLET,
}
METHOD_FROM_PROTO: Mapping[int, PaymentMethod] = {v: k for k, v in METHOD_TO_PROTO.items()}

WALLET_TO_PROTO: Mapping[WalletType, payments_pb2.WalletType.ValueType] = {
    WalletType.APPLE_PAY: payments_pb2.WALLET_TYPE_APPLE_PAY,
    WalletType.GOOGLE_PAY: payments_pb2.WALLET_TYPE_GOOGLE_PAY,
    WalletType.PAYPAL: payments_pb2.WALLET_TYPE_PAYPAL,
}
WALLET_FROM_PROTO: Mapping[int, WalletType] = {v: k for k, v in WALLET_TO_PROTO.items()}

REFUND_STATUS_TO_PROTO: Mapping[RefundStatus, payments_pb2.RefundStatus.ValueType] = {
    RefundStatus.PENDING: payments_pb2.REFUND_STATUS_PENDING,
    RefundStatus.SUCCEEDED: payments_pb2.REFUND_STATUS_SUCCEEDED,
    RefundStatus.FAILED: payments_pb2.REFUND_STATUS_FAILED,
}


def money_to_proto(money: Money) -> money_pb2.Money:
    units, nanos = money.units_nanos()
    return money_pb2.Money(currency_code=money.currency, units=units, nanos=nanos)


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def actor_to_proto(actor: Actor) -> common_pb2.Actor:
    return common_pb2.Actor(
        user=actor.user, service=actor.service, client_address=actor.client_address
    )


def refund_to_proto(refund: Refund) -> payments_pb2.Refund:
    return payments_pb2.Refund(
        name=refund.name,
        amount=money_to_proto(refund.amount),
        reason=refund.reason,
        status=REFUND_STATUS_TO_PROTO[refund.status],
        provider_reference=refund.provider_reference,
        failure_code=refund.failure_code,
        failure_reason=refund.failure_reason,
        creator=actor_to_proto(refund.creator),
        create_time=timestamp(refund.create_time),
        complete_time=timestamp(refund.complete_time),
    )


def payment_to_proto(payment: Payment) -> payments_pb2.Payment:
    message = payments_pb2.Payment(
        name=payment.name,
        payer=payment.payer,
        amount=money_to_proto(payment.amount),
        refunded_amount=money_to_proto(payment.refunded_amount),
        status=STATUS_TO_PROTO[payment.status],
        method=METHOD_TO_PROTO[payment.method],
        description=payment.description,
        metadata=payment.metadata,
        failure_code=payment.failure_code,
        failure_reason=payment.failure_reason,
        provider=payment.provider,
        provider_reference=payment.provider_reference,
        etag=payment.etag,
        create_time=timestamp(payment.create_time),
        update_time=timestamp(payment.update_time),
        complete_time=timestamp(payment.complete_time),
        refunds=[refund_to_proto(refund) for refund in payment.refunds],
        creator=actor_to_proto(payment.creator),
        cancel_reason=payment.cancel_reason,
    )
    info = payment.method_info
    if isinstance(info, CardInfo):
        message.card.CopyFrom(
            payments_pb2.CardDetails(
                brand=info.brand,
                last4=info.last4,
                exp_month=info.exp_month,
                exp_year=info.exp_year,
            )
        )
    elif isinstance(info, BankTransferInfo):
        message.bank_transfer.CopyFrom(
            payments_pb2.BankTransferDetails(
                account_holder_name=info.account_holder_name,
                iban_last4=info.iban_last4,
                bic=info.bic,
                transfer_reference=info.transfer_reference,
            )
        )
    elif isinstance(info, WalletInfo):
        message.wallet.CopyFrom(payments_pb2.WalletDetails(type=WALLET_TO_PROTO[info.type]))
    return message


def change_to_proto(
    change: PaymentChange, *, first: bool = False
) -> payments_pb2.PaymentStatusChange:
    """`first`: the opening message of a stream that did not resume (no previous status)."""
    refund = change.refund
    previous = change.previous_status
    return payments_pb2.PaymentStatusChange(
        event_id=change.id,
        previous_status=(
            payments_pb2.PAYMENT_STATUS_UNSPECIFIED
            if first or previous is None
            else STATUS_TO_PROTO[previous]
        ),
        status=STATUS_TO_PROTO[change.status],
        change_time=timestamp(change.time),
        payment=payment_to_proto(change.payment),
        refund=None if refund is None else refund_to_proto(refund),
    )
