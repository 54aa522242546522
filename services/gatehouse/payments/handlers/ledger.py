"""verify_ledger: prove that the ledger balances and reconciles with the payments."""

from __future__ import annotations

from gatehouse.payments.domain.ledger import LedgerReport, verify
from gatehouse.payments.handlers.ports import PaymentsUnitOfWork


async def verify_ledger(uow: PaymentsUnitOfWork) -> LedgerReport:
    """Every transaction sums to zero in its currency; every payment's account holds
    `-(captured - refunded)`; `refunded_amount` equals its settled refunds and never exceeds
    the amount; per provider and currency the provider account holds the net of all
    payments. One read transaction, so the figures are of one moment (PostgreSQL: statements
    of a READ COMMITTED transaction may see later commits; run it against a quiet database
    or read the problems as "to look at again")."""
    async with uow:
        return verify(
            await uow.ledger.transaction_sums(),
            await uow.ledger.payment_balances(),
            await uow.ledger.provider_balances(),
        )
