"""SQLAlchemy repositories of the payments service, on the unit of work's session.

Writes go through Core statements where the semantics matter (the versioned UPDATE that
makes concurrent transitions serialise); reads map rows to domain objects explicitly, so the
domain stays free of ORM state.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    CursorResult,
    Select,
    String,
    Table,
    and_,
    case,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from gatehouse.payments.adapters import snapshots
from gatehouse.payments.adapters.orm import (
    ChangeRow,
    LedgerEntryRow,
    LedgerTransactionRow,
    PaymentRow,
    RefundRow,
)
from gatehouse.payments.domain.ledger import (
    PAYMENT_ACCOUNT_PREFIX,
    PROVIDER_ACCOUNT_PREFIX,
    AccountBalance,
    LedgerTransaction,
    PaymentBalance,
    TransactionSum,
)
from gatehouse.payments.domain.money import Money
from gatehouse.payments.domain.payments import (
    Actor,
    Payment,
    PaymentChange,
    PaymentMethod,
    PaymentSource,
    PaymentStatus,
    Refund,
    RefundStatus,
    SourceKind,
)
from gatehouse.payments.handlers.ports import (
    PageCursor,
    PaymentFilter,
    PaymentResult,
    StaleVersionError,
    StoredReply,
)
from gatehouse.runtime.db import translate_integrity_errors
from gatehouse.runtime.idempotency import IdempotencyRecordRow

_payments = cast("Table", PaymentRow.__table__)
_refunds = cast("Table", RefundRow.__table__)
_changes = cast("Table", ChangeRow.__table__)
_transactions = cast("Table", LedgerTransactionRow.__table__)
_entries = cast("Table", LedgerEntryRow.__table__)


def _rowcount(result: Any) -> int:
    return cast("CursorResult[Any]", result).rowcount


# --- payments --------------------------------------------------------------------------------


def _payment_values(payment: Payment) -> dict[str, Any]:
    return {
        "payer": payment.payer,
        "creator_user": payment.creator.user,
        "creator_service": payment.creator.service,
        "creator_address": payment.creator.client_address,
        "amount_minor": payment.amount.minor,
        "currency": payment.amount.currency,
        "refunded_minor": payment.refunded_amount.minor,
        "status": payment.status.value,
        "method": payment.method.value,
        "method_info": json.dumps(snapshots.method_info_to_dict(payment.method_info)),
        "description": payment.description,
        "metadata_json": json.dumps(payment.metadata, sort_keys=True),
        "failure_code": payment.failure_code,
        "failure_reason": payment.failure_reason,
        "provider": payment.provider,
        "provider_reference": payment.provider_reference,
        "cancel_reason": payment.cancel_reason,
        "version": payment.version,
        "create_time": payment.create_time,
        "update_time": payment.update_time,
        "complete_time": payment.complete_time,
        "processing_started_at": payment.processing_started_at,
        "pending_reply": payment.pending_reply,
    }


def _refund_values(refund: Refund) -> dict[str, Any]:
    return {
        "payment_id": refund.payment_id,
        "amount_minor": refund.amount.minor,
        "currency": refund.amount.currency,
        "reason": refund.reason,
        "status": refund.status.value,
        "provider_reference": refund.provider_reference,
        "failure_code": refund.failure_code,
        "failure_reason": refund.failure_reason,
        "creator_user": refund.creator.user,
        "creator_service": refund.creator.service,
        "creator_address": refund.creator.client_address,
        "create_time": refund.create_time,
        "complete_time": refund.complete_time,
        "pending_reply": refund.pending_reply,
    }


def _refund_from_row(row: Any) -> Refund:
    return Refund(
        id=row.id,
        payment_id=row.payment_id,
        amount=Money(row.amount_minor, row.currency),
        reason=row.reason,
        creator=Actor(row.creator_user, row.creator_service, row.creator_address),
        create_time=row.create_time,
        status=RefundStatus(row.status),
        provider_reference=row.provider_reference,
        failure_code=row.failure_code,
        failure_reason=row.failure_reason,
        complete_time=row.complete_time,
        pending_reply=row.pending_reply,
    )


def _payment_from_row(row: Any, refunds: list[Refund]) -> Payment:
    return Payment(
        id=row.id,
        payer=row.payer,
        creator=Actor(row.creator_user, row.creator_service, row.creator_address),
        amount=Money(row.amount_minor, row.currency),
        refunded=Money(row.refunded_minor, row.currency),
        status=PaymentStatus(row.status),
        method=PaymentMethod(row.method),
        method_info=snapshots.method_info_from_dict(json.loads(row.method_info)),
        description=row.description,
        metadata=json.loads(row.metadata_json),
        failure_code=row.failure_code,
        failure_reason=row.failure_reason,
        provider=row.provider,
        provider_reference=row.provider_reference,
        cancel_reason=row.cancel_reason,
        version=row.version,
        create_time=row.create_time,
        update_time=row.update_time,
        complete_time=row.complete_time,
        processing_started_at=row.processing_started_at,
        pending_reply=row.pending_reply,
        refunds=refunds,
    )


class SqlAlchemyPaymentRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session
        # Refund ids known to be stored, so `update` inserts only the new ones.
        self._stored_refunds: set[str] = set()

    async def add(self, payment: Payment, source: PaymentSource) -> None:
        await self._session.execute(
            insert(_payments).values(
                id=payment.id,
                source_kind=source.kind.value,
                source_value=source.value,
                **_payment_values(payment),
            )
        )
        await self._save_refunds(payment)

    async def get(self, payment_id: str) -> Payment | None:
        row = (
            await self._session.execute(select(_payments).where(_payments.c.id == payment_id))
        ).one_or_none()
        if row is None:
            return None
        refunds = await self._refunds_of([payment_id])
        return _payment_from_row(row, refunds.get(payment_id, []))

    async def source(self, payment_id: str) -> PaymentSource:
        row = (
            await self._session.execute(
                select(PaymentRow.source_kind, PaymentRow.source_value).where(
                    PaymentRow.id == payment_id
                )
            )
        ).one()
        return PaymentSource(SourceKind(row.source_kind), row.source_value)

    async def update(self, payment: Payment, *, expected_version: int) -> None:
        result = await self._session.execute(
            update(_payments)
            .where(_payments.c.id == payment.id, _payments.c.version == expected_version)
            .values(**_payment_values(payment))
        )
        if _rowcount(result) != 1:
            raise StaleVersionError(payment.id)
        await self._save_refunds(payment)

    async def _save_refunds(self, payment: Payment) -> None:
        for refund in payment.refunds:
            if refund.id in self._stored_refunds:
                await self._session.execute(
                    update(_refunds)
                    .where(_refunds.c.id == refund.id)
                    .values(**_refund_values(refund))
                )
            else:
                with translate_integrity_errors():
                    await self._session.execute(
                        insert(_refunds).values(id=refund.id, **_refund_values(refund))
                    )
                self._stored_refunds.add(refund.id)

    async def _refunds_of(self, payment_ids: Sequence[str]) -> dict[str, list[Refund]]:
        if not payment_ids:
            return {}
        rows = (
            await self._session.execute(
                select(_refunds)
                .where(_refunds.c.payment_id.in_(payment_ids))
                .order_by(_refunds.c.create_time, _refunds.c.id)
            )
        ).all()
        found: dict[str, list[Refund]] = {}
        for row in rows:
            found.setdefault(row.payment_id, []).append(_refund_from_row(row))
            self._stored_refunds.add(row.id)
        return found

    async def page(
        self,
        where: PaymentFilter,
        *,
        newest_first: bool,
        after: PageCursor | None,
        limit: int,
    ) -> list[Payment]:
        query = _filtered(select(_payments), where)
        if after is not None:
            if newest_first:
                query = query.where(
                    or_(
                        PaymentRow.create_time < after.create_time,
                        and_(
                            PaymentRow.create_time == after.create_time,
                            PaymentRow.id < after.payment_id,
                        ),
                    )
                )
            else:
                query = query.where(
                    or_(
                        PaymentRow.create_time > after.create_time,
                        and_(
                            PaymentRow.create_time == after.create_time,
                            PaymentRow.id > after.payment_id,
                        ),
                    )
                )
        if newest_first:
            query = query.order_by(PaymentRow.create_time.desc(), PaymentRow.id.desc())
        else:
            query = query.order_by(PaymentRow.create_time, PaymentRow.id)
        rows = (await self._session.execute(query.limit(limit))).all()
        refunds = await self._refunds_of([row.id for row in rows])
        return [_payment_from_row(row, refunds.get(row.id, [])) for row in rows]

    async def processing_since_before(self, cutoff: datetime, limit: int) -> list[str]:
        rows = await self._session.execute(
            select(PaymentRow.id)
            .where(
                PaymentRow.status == PaymentStatus.PROCESSING.value,
                PaymentRow.processing_started_at < cutoff,
            )
            .order_by(PaymentRow.processing_started_at)
            .limit(limit)
        )
        return list(rows.scalars())

    async def pending_refunds_before(self, cutoff: datetime, limit: int) -> list[tuple[str, str]]:
        rows = await self._session.execute(
            select(RefundRow.payment_id, RefundRow.id)
            .where(
                RefundRow.status == RefundStatus.PENDING.value,
                RefundRow.create_time < cutoff,
            )
            .order_by(RefundRow.create_time)
            .limit(limit)
        )
        return [(row.payment_id, row.id) for row in rows]


def _filtered(query: Select[Any], where: PaymentFilter) -> Select[Any]:
    if where.visible_to is not None:
        query = query.where(
            or_(PaymentRow.payer == where.visible_to, PaymentRow.creator_user == where.visible_to)
        )
    if where.payer is not None:
        query = query.where(PaymentRow.payer == where.payer)
    if where.statuses:
        query = query.where(PaymentRow.status.in_(sorted(s.value for s in where.statuses)))
    if where.methods:
        query = query.where(PaymentRow.method.in_(sorted(m.value for m in where.methods)))
    if where.created_from is not None:
        query = query.where(PaymentRow.create_time >= where.created_from)
    if where.created_before is not None:
        query = query.where(PaymentRow.create_time < where.created_before)
    if where.currency is not None:
        query = query.where(PaymentRow.currency == where.currency)
    if where.min_minor is not None:
        query = query.where(PaymentRow.amount_minor >= where.min_minor)
    if where.max_minor is not None:
        query = query.where(PaymentRow.amount_minor <= where.max_minor)
    return query


# --- changes ---------------------------------------------------------------------------------


def _change_from_row(row: ChangeRow) -> PaymentChange:
    return PaymentChange(
        id=row.id,
        payment_id=row.payment_id,
        sequence=row.sequence,
        previous_status=None if row.previous_status is None else PaymentStatus(row.previous_status),
        status=PaymentStatus(row.status),
        time=row.time,
        payment=snapshots.payment_from_json(row.snapshot),
        refund_id=row.refund_id,
    )


class SqlAlchemyChangeRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, change: PaymentChange) -> None:
        await self._session.execute(
            insert(_changes).values(
                id=change.id,
                payment_id=change.payment_id,
                sequence=change.sequence,
                previous_status=(
                    None if change.previous_status is None else change.previous_status.value
                ),
                status=change.status.value,
                time=change.time,
                refund_id=change.refund_id,
                snapshot=snapshots.payment_to_json(change.payment),
            )
        )

    async def get(self, change_id: str) -> PaymentChange | None:
        row = (
            await self._session.execute(select(ChangeRow).where(ChangeRow.id == change_id))
        ).scalar_one_or_none()
        return None if row is None else _change_from_row(row)

    async def latest(self, payment_id: str) -> PaymentChange | None:
        row = (
            await self._session.execute(
                select(ChangeRow)
                .where(ChangeRow.payment_id == payment_id)
                .order_by(ChangeRow.sequence.desc())
                .limit(1)
            )
        ).scalar_one_or_none()
        return None if row is None else _change_from_row(row)

    async def after(self, payment_id: str, sequence: int, limit: int) -> list[PaymentChange]:
        rows = (
            await self._session.execute(
                select(ChangeRow)
                .where(ChangeRow.payment_id == payment_id, ChangeRow.sequence > sequence)
                .order_by(ChangeRow.sequence)
                .limit(limit)
            )
        ).scalars()
        return [_change_from_row(row) for row in rows]


# --- ledger ----------------------------------------------------------------------------------


class SqlAlchemyLedgerRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def post(self, transaction: LedgerTransaction) -> None:
        await self._session.execute(
            insert(_transactions).values(
                id=transaction.id,
                kind=transaction.kind.value,
                payment_id=transaction.payment_id,
                refund_id=transaction.refund_id,
                currency=transaction.currency,
                time=transaction.time,
            )
        )
        await self._session.execute(
            insert(_entries),
            [
                {
                    "transaction_id": transaction.id,
                    "line": line,
                    "account": entry.account,
                    "currency": transaction.currency,
                    "amount_minor": entry.amount,
                }
                for line, entry in enumerate(transaction.entries, start=1)
            ],
        )

    async def transaction_sums(self) -> list[TransactionSum]:
        foreign = case((LedgerEntryRow.currency != LedgerTransactionRow.currency, 1), else_=0)
        # Outer join: a transaction without entries shows up with none (and is unbalanced).
        rows = await self._session.execute(
            select(
                LedgerTransactionRow.id,
                LedgerTransactionRow.currency,
                func.count(LedgerEntryRow.line),
                func.coalesce(func.sum(LedgerEntryRow.amount_minor), 0),
                func.coalesce(func.sum(foreign), 0),
            )
            .select_from(LedgerTransactionRow)
            .outerjoin(LedgerEntryRow, LedgerEntryRow.transaction_id == LedgerTransactionRow.id)
            .group_by(LedgerTransactionRow.id, LedgerTransactionRow.currency)
            .order_by(LedgerTransactionRow.id)
        )
        return [
            TransactionSum(txn_id, currency, int(count), int(total), int(foreign_entries))
            for txn_id, currency, count, total, foreign_entries in rows
        ]

    async def payment_balances(self) -> list[PaymentBalance]:
        account = literal(PAYMENT_ACCOUNT_PREFIX, type_=String()).concat(PaymentRow.id)
        balance = (
            select(func.coalesce(func.sum(LedgerEntryRow.amount_minor), 0))
            .where(LedgerEntryRow.account == account)
            .scalar_subquery()
        )
        settled = (
            select(func.coalesce(func.sum(RefundRow.amount_minor), 0))
            .where(
                RefundRow.payment_id == PaymentRow.id,
                RefundRow.status == RefundStatus.SUCCEEDED.value,
            )
            .scalar_subquery()
        )
        rows = await self._session.execute(
            select(
                PaymentRow.id,
                PaymentRow.status,
                PaymentRow.provider,
                PaymentRow.currency,
                PaymentRow.amount_minor,
                PaymentRow.refunded_minor,
                balance,
                settled,
            ).order_by(PaymentRow.id)
        )
        return [
            PaymentBalance(
                payment_id=row[0],
                status=PaymentStatus(row[1]),
                provider=row[2],
                amount=Money(int(row[4]), row[3]),
                refunded=Money(int(row[5]), row[3]),
                account_balance=int(row[6]),
                succeeded_refunds=int(row[7]),
            )
            for row in rows
        ]

    async def provider_balances(self) -> list[AccountBalance]:
        rows = await self._session.execute(
            select(
                LedgerEntryRow.account,
                LedgerEntryRow.currency,
                func.sum(LedgerEntryRow.amount_minor),
            )
            .where(LedgerEntryRow.account.startswith(PROVIDER_ACCOUNT_PREFIX, autoescape=True))
            .group_by(LedgerEntryRow.account, LedgerEntryRow.currency)
            .order_by(LedgerEntryRow.account, LedgerEntryRow.currency)
        )
        return [AccountBalance(account, currency, int(total)) for account, currency, total in rows]


# --- idempotent replies ----------------------------------------------------------------------

_PENDING_TYPE = "gatehouse.payments.PendingReply"
_RESULT_TYPE = "gatehouse.payments.PaymentResult+json"
_records = cast("Table", IdempotencyRecordRow.__table__)


def _encode_result(result: PaymentResult) -> bytes:
    return snapshots.dumps(
        {"payment": snapshots.payment_to_dict(result.payment), "refund_id": result.refund_id}
    ).encode()


def _decode_result(body: bytes) -> PaymentResult:
    data = json.loads(body)
    return PaymentResult(snapshots.payment_from_dict(data["payment"]), data["refund_id"])


class SqlAlchemyReplyStore:
    """`ReplyStore` over the runtime's `idempotency_records`: a claim is a record of type
    `PendingReply` with an empty body, filled in once the call's outcome is known."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def get(self, scope: str, request_id: str) -> StoredReply | None:
        row = (
            await self._session.execute(
                select(
                    IdempotencyRecordRow.request_fingerprint,
                    IdempotencyRecordRow.response,
                    IdempotencyRecordRow.response_type,
                    IdempotencyRecordRow.expires_at,
                ).where(
                    IdempotencyRecordRow.scope == scope,
                    IdempotencyRecordRow.request_id == request_id,
                )
            )
        ).one_or_none()
        if row is None:
            return None
        fingerprint, body, response_type, expires_at = row
        result = None if response_type == _PENDING_TYPE else _decode_result(body)
        return StoredReply(fingerprint, expires_at, result)

    async def add(
        self,
        scope: str,
        request_id: str,
        fingerprint: bytes,
        result: PaymentResult | None,
        *,
        now: datetime,
        ttl: timedelta,
    ) -> None:
        # A plain INSERT, no savepoint: it is the first statement of its transaction, and
        # a duplicate means the whole transaction is abandoned for a replay anyway.
        with translate_integrity_errors():
            await self._session.execute(
                insert(_records).values(
                    scope=scope,
                    request_id=request_id,
                    request_fingerprint=fingerprint,
                    response=b"" if result is None else _encode_result(result),
                    response_type=_PENDING_TYPE if result is None else _RESULT_TYPE,
                    created_at=now,
                    expires_at=now + ttl,
                )
            )

    async def complete(self, scope: str, request_id: str, result: PaymentResult) -> None:
        await self._session.execute(
            update(_records)
            .where(
                _records.c.scope == scope,
                _records.c.request_id == request_id,
                _records.c.response_type == _PENDING_TYPE,
            )
            .values(response=_encode_result(result), response_type=_RESULT_TYPE)
        )

    async def delete(self, scope: str, request_id: str) -> None:
        await self._session.execute(
            delete(_records).where(_records.c.scope == scope, _records.c.request_id == request_id)
        )
