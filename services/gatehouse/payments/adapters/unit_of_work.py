"""The payments unit of work: its repositories on one session, events in the same commit."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from gatehouse.payments.adapters.repositories import (
    SqlAlchemyChangeRepository,
    SqlAlchemyLedgerRepository,
    SqlAlchemyPaymentRepository,
    SqlAlchemyReplyStore,
)
from gatehouse.payments.handlers.ports import (
    ChangeRepository,
    LedgerRepository,
    PaymentRepository,
    ReplyStore,
)
from gatehouse.runtime.outbox import OutboxUnitOfWork


class SqlAlchemyPaymentsUnitOfWork(OutboxUnitOfWork):
    """Implements `PaymentsUnitOfWork`; one per concurrent task (enter it again afterwards)."""

    payments: PaymentRepository
    changes: ChangeRepository
    ledger: LedgerRepository
    replies: ReplyStore

    def _create_repositories(self, session: AsyncSession) -> None:
        self.payments = SqlAlchemyPaymentRepository(session)
        self.changes = SqlAlchemyChangeRepository(session)
        self.ledger = SqlAlchemyLedgerRepository(session)
        self.replies = SqlAlchemyReplyStore(session)
