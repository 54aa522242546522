"""The built-in sandbox payment provider: decides by the documented test card numbers.

Deterministic on purpose: a decision depends only on the request (card number, idempotency
key), never on what this process remembers, so a reconciler in another replica that asks
about a charge gets the same answer the first caller would have, and references are stable
hashes of the idempotency key (asking twice names the same charge).

- 4242424242424242 approves; 4000000000000002 / ...9995 / ...0069 decline (CARD_DECLINED,
  INSUFFICIENT_FUNDS, CARD_EXPIRED); ...0119 is a provider error (PROVIDER_ERROR).
- 4000000000000259 hangs past the caller's timeout; asked afterwards (`find_charge`) it
  reports the charge approved, as a real provider whose reply was lost would.
- Card tokens, bank transfers and wallets are approved. Refunds are approved.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field
from datetime import timedelta

from gatehouse.payments.domain.instruments import TEST_CARDS, TestCardOutcome, card_brand
from gatehouse.payments.domain.payments import CardInfo, SourceKind
from gatehouse.payments.handlers.ports import (
    ChargeRequest,
    ProviderDecision,
    ProviderTimeoutError,
    RefundRequest,
)

SANDBOX = "sandbox"
# Long enough that any sane timeout fires first; a bound so a caller without one still ends.
_HANG = timedelta(minutes=5)

_DECLINES: dict[TestCardOutcome, tuple[str, str]] = {
    TestCardOutcome.DECLINE: ("CARD_DECLINED", "The card was declined."),
    TestCardOutcome.INSUFFICIENT_FUNDS: (
        "INSUFFICIENT_FUNDS",
        "The card has insufficient funds for this payment.",
    ),
    TestCardOutcome.EXPIRED: ("CARD_EXPIRED", "The card has expired."),
    TestCardOutcome.PROVIDER_ERROR: (
        "PROVIDER_ERROR",
        "The payment provider could not process the payment. Please try again later.",
    ),
}


def _reference(prefix: str, key: str) -> str:
    return f"{prefix}_{hashlib.sha256(key.encode()).hexdigest()[:24]}"


@dataclass
class SandboxProvider:
    """`PaymentProvider` for development and tests. `calls` counts charge attempts per
    idempotency key (what a real provider would have deduplicated)."""

    name: str = SANDBOX
    accepts_test_cards: bool = True
    calls: dict[str, int] = field(default_factory=dict)

    def check_available(self) -> None:
        return None

    def _decide(self, request: ChargeRequest, *, after_timeout: bool) -> ProviderDecision:
        reference = _reference("sbx_ch", request.idempotency_key)
        source = request.source
        if source.kind is not SourceKind.TEST_CARD:
            return ProviderDecision(approved=True, reference=reference)
        outcome = TEST_CARDS.get(source.value)
        card = CardInfo(brand=card_brand(source.value), last4=source.value[-4:])
        if outcome is None:
            # Create refuses unknown test cards; one can only get here through a bug.
            return ProviderDecision(
                approved=False,
                reference=reference,
                failure_code="PROVIDER_REJECTED",
                failure_reason="The provider does not know this test card.",
            )
        if outcome is TestCardOutcome.EXPIRED:
            card = CardInfo(brand=card.brand, last4=card.last4, exp_month=1, exp_year=2020)
        if outcome is TestCardOutcome.APPROVE or (
            outcome is TestCardOutcome.TIMEOUT and after_timeout
        ):
            return ProviderDecision(approved=True, reference=reference, card=card)
        code, reason = _DECLINES.get(outcome, _DECLINES[TestCardOutcome.PROVIDER_ERROR])
        return ProviderDecision(
            approved=False,
            reference=reference,
            failure_code=code,
            failure_reason=reason,
            card=card,
        )

    async def charge(self, request: ChargeRequest, *, timeout: timedelta) -> ProviderDecision:
        key = request.idempotency_key
        self.calls[key] = self.calls.get(key, 0) + 1
        source = request.source
        if source.kind is SourceKind.TEST_CARD and TEST_CARDS.get(source.value) is (
            TestCardOutcome.TIMEOUT
        ):
            try:
                async with asyncio.timeout(timeout.total_seconds()):
                    await asyncio.sleep(_HANG.total_seconds())
            except TimeoutError:
                raise ProviderTimeoutError(key) from None
        return self._decide(request, after_timeout=False)

    async def find_charge(
        self, request: ChargeRequest, *, timeout: timedelta
    ) -> ProviderDecision | None:
        return self._decide(request, after_timeout=True)

    async def refund(self, request: RefundRequest, *, timeout: timedelta) -> ProviderDecision:
        return ProviderDecision(
            approved=True, reference=_reference("sbx_re", request.idempotency_key)
        )

    async def find_refund(
        self, request: RefundRequest, *, timeout: timedelta
    ) -> ProviderDecision | None:
        return await self.refund(request, timeout=timeout)
