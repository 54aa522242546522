"""The events the payments service publishes (proto/gatehouse/payments/v1/events.proto)."""

from __future__ import annotations

from datetime import datetime

from google.protobuf.message import Message

from gatehouse.events.v1.envelope_pb2 import Event
from gatehouse.payments import mapping
from gatehouse.payments.domain.payments import Actor, CardInfo, Payment, Refund
from gatehouse.payments.v1 import events_pb2
from gatehouse.runtime.events import new_event

SOURCE = "payments"
CREATED = "payment.created"
PROCESSING = "payment.processing"
PROCESSED = "payment.processed"
FAILED = "payment.failed"
REFUNDED = "payment.refunded"
CANCELED = "payment.canceled"


def _event(type_: str, payment: Payment, data: Message, time: datetime) -> Event:
    return new_event(type_, source=SOURCE, subject=payment.name, data=data, time=time)


def created(payment: Payment) -> Event:
    return _event(
        CREATED,
        payment,
        events_pb2.PaymentCreated(
            payment=payment.name,
            payer=payment.payer,
            amount=mapping.money_to_proto(payment.amount),
            method=mapping.METHOD_TO_PROTO[payment.method],
            description=payment.description,
            metadata=payment.metadata,
            creator=mapping.actor_to_proto(payment.creator),
            create_time=mapping.timestamp(payment.create_time),
        ),
        payment.create_time,
    )


def processing(payment: Payment, now: datetime) -> Event:
    return _event(
        PROCESSING,
        payment,
        events_pb2.PaymentProcessing(
            payment=payment.name,
            payer=payment.payer,
            amount=mapping.money_to_proto(payment.amount),
            method=mapping.METHOD_TO_PROTO[payment.method],
            provider=payment.provider,
            start_time=mapping.timestamp(now),
        ),
        now,
    )


def processed(payment: Payment, now: datetime) -> Event:
    card = payment.method_info
    return _event(
        PROCESSED,
        payment,
        events_pb2.PaymentProcessed(
            payment=payment.name,
            payer=payment.payer,
            amount=mapping.money_to_proto(payment.amount),
            method=mapping.METHOD_TO_PROTO[payment.method],
            card_last4=card.last4 if isinstance(card, CardInfo) else "",
            description=payment.description,
            metadata=payment.metadata,
            provider=payment.provider,
            provider_reference=payment.provider_reference,
            complete_time=mapping.timestamp(now),
        ),
        now,
    )


def failed(payment: Payment, now: datetime) -> Event:
    return _event(
        FAILED,
        payment,
        events_pb2.PaymentFailed(
            payment=payment.name,
            payer=payment.payer,
            amount=mapping.money_to_proto(payment.amount),
            method=mapping.METHOD_TO_PROTO[payment.method],
            description=payment.description,
            metadata=payment.metadata,
            provider=payment.provider,
            failure_code=payment.failure_code,
            failure_reason=payment.failure_reason,
            fail_time=mapping.timestamp(now),
        ),
        now,
    )


def refunded(payment: Payment, refund: Refund, now: datetime) -> Event:
    return _event(
        REFUNDED,
        payment,
        events_pb2.PaymentRefunded(
            payment=payment.name,
            refund=refund.name,
            payer=payment.payer,
            refund_amount=mapping.money_to_proto(refund.amount),
            refunded_amount=mapping.money_to_proto(payment.refunded_amount),
            remaining_amount=mapping.money_to_proto(payment.amount - payment.refunded_amount),
            payment_amount=mapping.money_to_proto(payment.amount),
            status=mapping.STATUS_TO_PROTO[payment.status],
            reason=refund.reason,
            description=payment.description,
            refunded_by=mapping.actor_to_proto(refund.creator),
            refund_time=mapping.timestamp(now),
        ),
        now,
    )


def canceled(payment: Payment, by: Actor, now: datetime) -> Event:
    return _event(
        CANCELED,
        payment,
        events_pb2.PaymentCanceled(
            payment=payment.name,
            payer=payment.payer,
            amount=mapping.money_to_proto(payment.amount),
            reason=payment.cancel_reason,
            canceled_by=mapping.actor_to_proto(by),
            cancel_time=mapping.timestamp(now),
        ),
        now,
    )
