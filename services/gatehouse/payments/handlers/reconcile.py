"""The reconciler: settles charges and refunds whose provider outcome never arrived.

A provider timeout (or a crash between the two transactions of a charge) leaves a payment
PROCESSING or a refund PENDING. Once it has been so for `reconcile_after` (longer than any
provider call may take, so calls still in flight are left alone), the reconciler asks the
provider what became of it, under the same idempotency key, and records the answer exactly
as the RPC would have. A provider that never received the request is sent it again with
that key, which cannot charge twice. Several replicas may reconcile at once: recording an
outcome is a versioned update, so exactly one of them records it.
"""

from __future__ import annotations

from dataclasses import dataclass

from gatehouse.payments.domain.payments import PaymentStatus, RefundStatus
from gatehouse.payments.handlers.common import PaymentsDeps, ask_provider, log
from gatehouse.payments.handlers.payments import (
    charge_request,
    finish_charge,
    finish_refund,
    refund_request,
)
from gatehouse.payments.handlers.ports import PaymentsUnitOfWork


@dataclass
class ReconcileReport:
    charges_settled: int = 0
    refunds_settled: int = 0
    still_unknown: int = 0


async def reconcile_once(
    uow: PaymentsUnitOfWork, deps: PaymentsDeps, *, limit: int = 100
) -> ReconcileReport:
    report = ReconcileReport()
    cutoff = deps.clock() - deps.reconcile_after
    async with uow:
        charges = await uow.payments.processing_since_before(cutoff, limit)
        refunds = await uow.payments.pending_refunds_before(cutoff, limit)
    for payment_id in charges:
        if await _reconcile_charge(uow, payment_id, deps):
            report.charges_settled += 1
        else:
            report.still_unknown += 1
    for payment_id, refund_id in refunds:
        if await _reconcile_refund(uow, payment_id, refund_id, deps):
            report.refunds_settled += 1
        else:
            report.still_unknown += 1
    return report


async def _reconcile_charge(uow: PaymentsUnitOfWork, payment_id: str, deps: PaymentsDeps) -> bool:
    async with uow:
        payment = await uow.payments.get(payment_id)
        if payment is None or payment.status is not PaymentStatus.PROCESSING:
            return False
        request = charge_request(payment, await uow.payments.source(payment_id))
    timeout = deps.provider_timeout
    answered, decision = await ask_provider(
        deps.provider.find_charge(request, timeout=timeout), timeout
    )
    if answered and decision is None:
        # The provider never got it (we died before asking): ask now, same key.
        answered, decision = await ask_provider(
            deps.provider.charge(request, timeout=timeout), timeout
        )
    if decision is None:
        return False
    settled = await finish_charge(uow, payment_id, decision, deps)
    log.info("reconciled %s: %s", settled.name, settled.status.value)
    return True


async def _reconcile_refund(
    uow: PaymentsUnitOfWork, payment_id: str, refund_id: str, deps: PaymentsDeps
) -> bool:
    async with uow:
        payment = await uow.payments.get(payment_id)
        if payment is None:
            return False
        refund = payment.refund(refund_id)
        if refund.status is not RefundStatus.PENDING:
            return False
        request = refund_request(payment, refund, await uow.payments.source(payment_id))
    timeout = deps.provider_timeout
    answered, decision = await ask_provider(
        deps.provider.find_refund(request, timeout=timeout), timeout
    )
    if answered and decision is None:
        answered, decision = await ask_provider(
            deps.provider.refund(request, timeout=timeout), timeout
        )
    if decision is None:
        return False
    settled = await finish_refund(uow, payment_id, refund_id, decision, deps)
    log.info("reconciled %s: %s", settled.refund(refund_id).name, settled.status.value)
    return True
