"""Payments as JSON: the frozen copies kept with each change (WatchPayment replays them) and
with each idempotent reply (a retry gets the first answer, not today's state).

Secrets are never part of a snapshot: the payment source lives only in its own columns, and
`pending_reply` (bookkeeping of the application layer) is left out.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from gatehouse.payments.domain.money import Money
from gatehouse.payments.domain.payments import (
    Actor,
    BankTransferInfo,
    CardInfo,
    MethodInfo,
    Payment,
    PaymentMethod,
    PaymentStatus,
    Refund,
    RefundStatus,
    WalletInfo,
    WalletType,
)

SNAPSHOT_VERSION = 1


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _parse_time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _required_time(value: str) -> datetime:
    return datetime.fromisoformat(value)


def method_info_to_dict(info: MethodInfo) -> dict[str, Any] | None:
    if isinstance(info, CardInfo):
        return {
            "kind": "card",
            "brand": info.brand,
            "last4": info.last4,
            "exp_month": info.exp_month,
            "exp_year": info.exp_year,
        }
    if isinstance(info, BankTransferInfo):
        return {
            "kind": "bank_transfer",
            "account_holder_name": info.account_holder_name,
            "iban_last4": info.iban_last4,
            "bic": info.bic,
            "transfer_reference": info.transfer_reference,
        }
    if isinstance(info, WalletInfo):
        return {"kind": "wallet", "type": info.type.value}
    return None


def method_info_from_dict(data: dict[str, Any] | None) -> MethodInfo:
    if data is None:
        return None
    kind = data["kind"]
    if kind == "card":
        return CardInfo(
            brand=data["brand"],
            last4=data["last4"],
            exp_month=data["exp_month"],
            exp_year=data["exp_year"],
        )
    if kind == "bank_transfer":
        return BankTransferInfo(
            account_holder_name=data["account_holder_name"],
            iban_last4=data["iban_last4"],
            bic=data["bic"],
            transfer_reference=data["transfer_reference"],
        )
    if kind == "wallet":
        return WalletInfo(WalletType(data["type"]))
    raise ValueError(f"unknown method details kind {kind!r}")


def _actor(actor: Actor) -> list[str]:
    return [actor.user, actor.service, actor.client_address]


def _refund_to_dict(refund: Refund) -> dict[str, Any]:
    return {
        "id": refund.id,
        "amount": refund.amount.minor,
        "reason": refund.reason,
        "creator": _actor(refund.creator),
        "create_time": _time(refund.create_time),
        "status": refund.status.value,
        "provider_reference": refund.provider_reference,
        "failure_code": refund.failure_code,
        "failure_reason": refund.failure_reason,
        "complete_time": _time(refund.complete_time),
    }


def _refund_from_dict(data: dict[str, Any], payment_id: str, currency: str) -> Refund:
    return Refund(
        id=data["id"],
        payment_id=payment_id,
        amount=Money(data["amount"], currency),
        reason=data["reason"],
        creator=Actor(*data["creator"]),
        create_time=_required_time(data["create_time"]),
        status=RefundStatus(data["status"]),
        provider_reference=data["provider_reference"],
        failure_code=data["failure_code"],
        failure_reason=data["failure_reason"],
        complete_time=_parse_time(data["complete_time"]),
    )


def payment_to_dict(payment: Payment) -> dict[str, Any]:
    return {
        "v": SNAPSHOT_VERSION,
        "id": payment.id,
        "payer": payment.payer,
        "creator": _actor(payment.creator),
        "currency": payment.amount.currency,
        "amount": payment.amount.minor,
        "refunded": payment.refunded_amount.minor,
        "status": payment.status.value,
        "method": payment.method.value,
        "method_info": method_info_to_dict(payment.method_info),
        "description": payment.description,
        "metadata": payment.metadata,
        "failure_code": payment.failure_code,
        "failure_reason": payment.failure_reason,
        "provider": payment.provider,
        "provider_reference": payment.provider_reference,
        "cancel_reason": payment.cancel_reason,
        "version": payment.version,
        "create_time": _time(payment.create_time),
        "update_time": _time(payment.update_time),
        "complete_time": _time(payment.complete_time),
        "processing_started_at": _time(payment.processing_started_at),
        "refunds": [_refund_to_dict(refund) for refund in payment.refunds],
    }


def payment_from_dict(data: dict[str, Any]) -> Payment:
    if data.get("v") != SNAPSHOT_VERSION:
        raise ValueError(f"unknown payment snapshot version {data.get('v')!r}")
    currency = data["currency"]
    return Payment(
        id=data["id"],
        payer=data["payer"],
        creator=Actor(*data["creator"]),
        amount=Money(data["amount"], currency),
        refunded=Money(data["refunded"], currency),
        status=PaymentStatus(data["status"]),
        method=PaymentMethod(data["method"]),
        method_info=method_info_from_dict(data["method_info"]),
        description=data["description"],
        metadata=dict(data["metadata"]),
        failure_code=data["failure_code"],
        failure_reason=data["failure_reason"],
        provider=data["provider"],
        provider_reference=data["provider_reference"],
        cancel_reason=data["cancel_reason"],
        version=data["version"],
        create_time=_required_time(data["create_time"]),
        update_time=_required_time(data["update_time"]),
        complete_time=_parse_time(data["complete_time"]),
        processing_started_at=_parse_time(data["processing_started_at"]),
        refunds=[_refund_from_dict(r, data["id"], currency) for r in data["refunds"]],
    )


def dumps(data: dict[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"), sort_keys=True)


def payment_to_json(payment: Payment) -> str:
    return dumps(payment_to_dict(payment))


def payment_from_json(text: str) -> Payment:
    loaded: dict[str, Any] = json.loads(text)
    return payment_from_dict(loaded)
