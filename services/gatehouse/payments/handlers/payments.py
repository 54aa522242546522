"""Creating, processing, canceling and refunding payments.

Every mutating use case follows the same shape: validate the input (nothing touched yet),
then one transaction that replays an earlier reply to the same request or makes the change,
logs it (`payments_changes`), publishes its event (outbox) and stores the reply, all in one
commit. ProcessPayment and RefundPayment call the provider *between* two transactions (a
transaction is never held open across a network call): the first moves the payment on and
claims the request id, the second records the provider's answer. Whatever happens between
them, the reconciler finishes the job later and the provider's idempotency key (the payment's
or refund's name) keeps it from ever moving money twice.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from gatehouse.payments.domain.instruments import (
    TEST_CARDS,
    card_brand,
    iban_problem,
    normalize_iban,
)
from gatehouse.payments.domain.ledger import charge_transaction, refund_transaction
from gatehouse.payments.domain.money import (
    Money,
    find_currency,
    invalid,
    positive_money,
)
from gatehouse.payments.domain.payments import (
    BankTransferInfo,
    CardInfo,
    MethodInfo,
    Payment,
    PaymentMethod,
    PaymentSource,
    PaymentStatus,
    Refund,
    RefundStatus,
    SourceKind,
    WalletInfo,
    WalletType,
    check_transition,
)
from gatehouse.payments.handlers import events
from gatehouse.payments.handlers.common import (
    CANCEL_ACCESS,
    INVALID_REASON,
    INVALID_RESOURCE_NAME,
    MANAGE,
    PROCESS_ACCESS,
    REFUND_ACCESS,
    USER_NAME,
    Claim,
    LostRaceError,
    PaymentsDeps,
    Principal,
    ReplyKey,
    ask_provider,
    check_etag,
    check_reason,
    complete_reply,
    load_payment,
    log,
    provider_unavailable,
    record_change,
    reply_key,
    violations_of,
)
from gatehouse.payments.handlers.ports import (
    ChargeRequest,
    PayerState,
    PaymentResult,
    PaymentsUnitOfWork,
    ProviderDecision,
    ProviderUnavailableError,
    RefundRequest,
    StaleVersionError,
)
from gatehouse.runtime.errors import (
    Aborted,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    permission_missing,
)

METHOD_DETAILS_MISMATCH = "METHOD_DETAILS_MISMATCH"
TEST_CARD_NOT_ALLOWED = "TEST_CARD_NOT_ALLOWED"
UNKNOWN_TEST_CARD = "UNKNOWN_TEST_CARD"
INVALID_METADATA = "INVALID_METADATA"
CURRENCY_MISMATCH = "CURRENCY_MISMATCH"
PAYER_NOT_FOUND = "PAYER_NOT_FOUND"
PAYER_INACTIVE = "PAYER_INACTIVE"
INVALID_FIELD = "INVALID_FIELD"

MAX_DESCRIPTION_CHARS = 500
MAX_METADATA_ENTRIES = 50
MAX_METADATA_VALUE_CHARS = 500
METADATA_KEY = re.compile(r"[a-z0-9_.-]{1,40}")
MAX_TOKEN_CHARS = 255
MAX_HOLDER_CHARS = 140
BIC = re.compile(r"[A-Z]{6}[A-Z0-9]{2}([A-Z0-9]{3})?")


def conflict() -> Aborted:
    return Aborted(
        "the payment kept changing under this request; read it again and retry",
        reason="CONCURRENT_UPDATE",
    )


# --- commands --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MoneyInput:
    """`google.type.Money` as the caller sent it, not yet checked."""

    units: int
    nanos: int
    currency_code: str


@dataclass(frozen=True, slots=True)
class CardInput:
    token: str = ""
    test_card_number: str = ""


@dataclass(frozen=True, slots=True)
class BankTransferInput:
    account_holder_name: str = ""
    iban: str = ""
    bic: str = ""


@dataclass(frozen=True, slots=True)
class WalletInput:
    type: WalletType | None = None  # None: unset or unknown
    token: str = ""


DetailsInput = CardInput | BankTransferInput | WalletInput | None


@dataclass(frozen=True, slots=True)
class CreatePayment:
    request_id: str
    fingerprint: bytes
    amount: MoneyInput | None
    method: PaymentMethod | None  # None: unset or unknown
    details: DetailsInput
    payer: str = ""
    description: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ProcessPayment:
    payment_id: str
    request_id: str
    fingerprint: bytes
    etag: str = ""


@dataclass(frozen=True, slots=True)
class CancelPayment:
    payment_id: str
    request_id: str
    fingerprint: bytes
    reason: str = ""
    etag: str = ""


@dataclass(frozen=True, slots=True)
class RefundPayment:
    payment_id: str
    request_id: str
    fingerprint: bytes
    reason: str
    amount: MoneyInput | None = None  # None: the whole refundable balance
    etag: str = ""


# --- CreatePayment ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Checked:
    payer: str
    amount: Money
    method: PaymentMethod
    info: MethodInfo
    source: PaymentSource


def _check_method(
    method: PaymentMethod | None, details: DetailsInput, deps: PaymentsDeps
) -> tuple[MethodInfo, PaymentSource]:
    if method is None:
        raise invalid("payment.method", "is required: CARD, BANK_TRANSFER or WALLET", INVALID_FIELD)
    wanted = {
        PaymentMethod.CARD: (CardInput, "card"),
        PaymentMethod.BANK_TRANSFER: (BankTransferInput, "bank_transfer"),
        PaymentMethod.WALLET: (WalletInput, "wallet"),
    }[method]
    if details is not None and not isinstance(details, wanted[0]):
        raise invalid(
            "payment.method_details",
            f"{method.value} takes `{wanted[1]}` details",
            METHOD_DETAILS_MISMATCH,
        )
    if method is PaymentMethod.CARD:
        return _check_card(details if isinstance(details, CardInput) else None, deps)
    if method is PaymentMethod.WALLET:
        wallet = details if isinstance(details, WalletInput) else None
        if wallet is None or wallet.type is None or not wallet.token:
            raise invalid(
                "payment.wallet",
                "WALLET needs `wallet` details with a type and the wallet's payment token",
                METHOD_DETAILS_MISMATCH,
            )
        if len(wallet.token) > MAX_TOKEN_CHARS:
            raise invalid("payment.wallet.token", "is too long", INVALID_FIELD)
        return WalletInfo(wallet.type), PaymentSource(SourceKind.WALLET_TOKEN, wallet.token)
    bank = details if isinstance(details, BankTransferInput) else BankTransferInput()
    return _check_bank(bank)


def _check_card(card: CardInput | None, deps: PaymentsDeps) -> tuple[MethodInfo, PaymentSource]:
    if card is None or bool(card.token) == bool(card.test_card_number):
        raise invalid(
            "payment.card",
            "CARD needs `card` details with a token (or, in the sandbox, a test card number)",
            METHOD_DETAILS_MISMATCH,
        )
    if card.token:
        if len(card.token) > MAX_TOKEN_CHARS or not card.token.isprintable():
            raise invalid("payment.card.token", "is not a provider card token", INVALID_FIELD)
        return CardInfo(), PaymentSource(SourceKind.CARD_TOKEN, card.token)
    number = card.test_card_number
    if not deps.provider.accepts_test_cards:
        raise invalid(
            "payment.card.test_card_number",
            "test card numbers are only accepted by the sandbox provider",
            TEST_CARD_NOT_ALLOWED,
        )
    if number not in TEST_CARDS:
        raise invalid(
            "payment.card.test_card_number",
            "is not one of the documented sandbox test cards",
            UNKNOWN_TEST_CARD,
        )
    info = CardInfo(brand=card_brand(number), last4=number[-4:])
    return info, PaymentSource(SourceKind.TEST_CARD, number)


def _check_bank(bank: BankTransferInput) -> tuple[MethodInfo, PaymentSource]:
    problems: list[InvalidArgument] = []
    iban = normalize_iban(bank.iban)
    if iban:
        problem = iban_problem(iban)
        if problem is not None:
            problems.append(invalid("payment.bank_transfer.iban", problem, INVALID_FIELD))
    bic = bank.bic.strip().upper()
    if bic and not BIC.fullmatch(bic):
        problems.append(
            invalid(
                "payment.bank_transfer.bic", "must be a BIC (8 or 11 characters)", INVALID_FIELD
            )
        )
    if len(bank.account_holder_name) > MAX_HOLDER_CHARS:
        problems.append(
            invalid(
                "payment.bank_transfer.account_holder_name",
                f"must be at most {MAX_HOLDER_CHARS} characters",
                INVALID_FIELD,
            )
        )
    if problems:
        raise violations_of(problems)
    info = BankTransferInfo(
        account_holder_name=bank.account_holder_name.strip(),
        iban_last4=iban[-4:],
        bic=bic,
    )
    source = PaymentSource(SourceKind.IBAN, iban) if iban else PaymentSource()
    return info, source


def _check_metadata(metadata: Mapping[str, str]) -> None:
    if len(metadata) > MAX_METADATA_ENTRIES:
        raise invalid(
            "payment.metadata", f"at most {MAX_METADATA_ENTRIES} entries", INVALID_METADATA
        )
    for key, value in metadata.items():
        if not METADATA_KEY.fullmatch(key):
            raise invalid(
                "payment.metadata",
                "keys are 1-40 characters of a-z, 0-9, '_', '.' and '-'",
                INVALID_METADATA,
            )
        if len(value) > MAX_METADATA_VALUE_CHARS:
            raise invalid(
                f"payment.metadata[{key}]",
                f"values are at most {MAX_METADATA_VALUE_CHARS} characters",
                INVALID_METADATA,
            )


def _check_create(cmd: CreatePayment, principal: Principal, deps: PaymentsDeps) -> _Checked:
    """Every input problem at once, in one INVALID_ARGUMENT."""
    problems: list[InvalidArgument] = []
    payer = cmd.payer or principal.user
    if not payer:
        problems.append(
            invalid("payment.payer", "is required when no user is calling", INVALID_RESOURCE_NAME)
        )
    elif not USER_NAME.fullmatch(payer):
        problems.append(
            invalid("payment.payer", "must look like 'users/{id}'", INVALID_RESOURCE_NAME)
        )
    amount: Money | None = None
    try:
        if cmd.amount is None:
            raise invalid("payment.amount", "is required", "INVALID_AMOUNT")
        amount = positive_money(
            cmd.amount.units,
            cmd.amount.nanos,
            cmd.amount.currency_code,
            field="payment.amount",
            enabled=deps.enabled_currencies,
        )
    except InvalidArgument as error:
        problems.append(error)
    info: MethodInfo = None
    source = PaymentSource()
    try:
        info, source = _check_method(cmd.method, cmd.details, deps)
    except InvalidArgument as error:
        problems.append(error)
    if len(cmd.description) > MAX_DESCRIPTION_CHARS:
        problems.append(
            invalid(
                "payment.description",
                f"must be at most {MAX_DESCRIPTION_CHARS} characters",
                INVALID_FIELD,
            )
        )
    try:
        _check_metadata(cmd.metadata)
    except InvalidArgument as error:
        problems.append(error)
    if problems:
        raise violations_of(problems)
    assert amount is not None
    assert cmd.method is not None
    return _Checked(payer, amount, cmd.method, info, source)


async def create_payment(
    cmd: CreatePayment, principal: Principal, uow: PaymentsUnitOfWork, deps: PaymentsDeps
) -> Payment:
    problems: list[InvalidArgument] = []
    try:
        key = reply_key("CreatePayment", principal, cmd.request_id, cmd.fingerprint)
    except InvalidArgument as error:
        problems.append(error)
    try:
        checked = _check_create(cmd, principal, deps)
    except InvalidArgument as error:
        problems.append(error)
    if problems:
        raise violations_of(problems)
    if checked.payer != principal.user:
        if not principal.has(MANAGE):
            raise permission_missing(MANAGE)
        state = await deps.payers.state(checked.payer)
        if state is PayerState.UNKNOWN:
            raise NotFound(checked.payer, reason=PAYER_NOT_FOUND)
        if state is PayerState.INACTIVE:
            raise FailedPrecondition(
                f"{checked.payer} cannot pay: the account is not active", reason=PAYER_INACTIVE
            )
    claim = Claim()
    for _ in range(3):  # later rounds only replay a twin that won the race
        async with uow:
            now = deps.clock()
            payment_id = deps.new_id()
            info = checked.info
            if isinstance(info, BankTransferInfo):
                # What the payer quotes on the transfer so it can be matched to this payment.
                info = BankTransferInfo(
                    account_holder_name=info.account_holder_name,
                    iban_last4=info.iban_last4,
                    bic=info.bic,
                    transfer_reference=f"GH-{payment_id[-12:]}",
                )
            payment = Payment(
                id=payment_id,
                payer=checked.payer,
                creator=principal.actor(),
                amount=checked.amount,
                method=checked.method,
                method_info=info,
                description=cmd.description,
                metadata=dict(cmd.metadata),
                create_time=now,
                update_time=now,
            )
            try:
                first = await claim.take(uow, key, deps, PaymentResult(payment.snapshot()))
            except LostRaceError:
                continue
            if first is not None:
                return first.payment
            await uow.payments.add(payment, checked.source)
            await record_change(uow, payment, events.created(payment), None, now)
            await uow.commit()
            return payment
    raise conflict()


# --- ProcessPayment --------------------------------------------------------------------------


def charge_request(payment: Payment, source: PaymentSource) -> ChargeRequest:
    return ChargeRequest(
        idempotency_key=payment.name,
        amount=payment.amount,
        method=payment.method,
        source=source,
        description=payment.description,
    )


async def settle_charge(
    uow: PaymentsUnitOfWork, payment: Payment, decision: ProviderDecision, deps: PaymentsDeps
) -> None:
    """Record the provider's answer on a PROCESSING payment: status, ledger, change, event,
    and the reply of the caller who started it. The versioned update comes first, so a
    concurrent recorder of the same answer fails there (StaleVersionError) before it has
    written anything else."""
    expected = payment.version
    now = deps.clock()
    if decision.approved:
        payment.complete(decision.reference, now, decision.card)
        event = events.processed(payment, now)
    else:
        payment.fail(
            decision.failure_code or "PROVIDER_ERROR",
            decision.failure_reason or "The payment provider refused the payment.",
            now,
            decision.reference,
        )
        event = events.failed(payment, now)
    token, payment.pending_reply = payment.pending_reply, ""
    await uow.payments.update(payment, expected_version=expected)
    if decision.approved:
        await uow.ledger.post(charge_transaction(payment, deps.new_id(), now))
    await record_change(uow, payment, event, PaymentStatus.PROCESSING, now)
    await complete_reply(uow, token, PaymentResult(payment.snapshot()))


async def _hand_over_reply(
    uow: PaymentsUnitOfWork, payment: Payment, token: str, refund_id: str | None = None
) -> None:
    """The outcome is still unknown: the waiting caller's answer is the state it got."""
    await uow.payments.update(payment, expected_version=payment.version)
    await complete_reply(uow, token, PaymentResult(payment.snapshot(), refund_id))


async def _start_processing(
    cmd: ProcessPayment,
    key: ReplyKey,
    principal: Principal,
    uow: PaymentsUnitOfWork,
    deps: PaymentsDeps,
) -> PaymentResult | tuple[Payment, PaymentSource]:
    claim = Claim()
    for _ in range(deps.conflict_retries + 1):
        async with uow:
            # Claim the request id before reading the payment: a concurrent twin then waits
            # for this transaction and replays it, instead of reading the state it makes.
            try:
                first = await claim.take(uow, key, deps)
            except LostRaceError:
                continue
            if first is not None:
                return first
            payment = await load_payment(uow, cmd.payment_id, principal, PROCESS_ACCESS)
            check_etag(payment, cmd.etag)
            expected = payment.version
            check_transition(payment.status, PaymentStatus.PROCESSING)
            try:
                deps.provider.check_available()
            except ProviderUnavailableError:
                raise provider_unavailable() from None
            now = deps.clock()
            payment.start_processing(deps.provider.name, now)
            payment.pending_reply = key.token
            try:
                await uow.payments.update(payment, expected_version=expected)
            except StaleVersionError:
                continue
            await record_change(
                uow, payment, events.processing(payment, now), PaymentStatus.PENDING, now
            )
            source = await uow.payments.source(payment.id)
            await uow.commit()
            return payment, source
    raise conflict()


async def finish_charge(
    uow: PaymentsUnitOfWork,
    payment_id: str,
    decision: ProviderDecision | None,
    deps: PaymentsDeps,
) -> Payment:
    """Second transaction of a charge (the RPC's or the reconciler's): record `decision` if
    the payment still waits for one; with no decision (timeout), just hand the waiting
    caller its reply. Whoever comes second finds the work done and changes nothing."""
    for _ in range(deps.conflict_retries + 1):
        async with uow:
            payment = await uow.payments.get(payment_id)
            if payment is None:
                raise RuntimeError(f"payment {payment_id} vanished")
            try:
                if decision is not None and payment.status is PaymentStatus.PROCESSING:
                    await settle_charge(uow, payment, decision, deps)
                elif payment.pending_reply:
                    token, payment.pending_reply = payment.pending_reply, ""
                    await _hand_over_reply(uow, payment, token)
                else:
                    return payment
            except StaleVersionError:
                continue
            await uow.commit()
            return payment
    raise conflict()


async def process_payment(
    cmd: ProcessPayment, principal: Principal, uow: PaymentsUnitOfWork, deps: PaymentsDeps
) -> Payment:
    key = reply_key("ProcessPayment", principal, cmd.request_id, cmd.fingerprint)
    started = await _start_processing(cmd, key, principal, uow, deps)
    if isinstance(started, PaymentResult):
        return started.payment
    payment, source = started
    answered, decision = await ask_provider(
        deps.provider.charge(charge_request(payment, source), timeout=deps.provider_timeout),
        deps.provider_timeout,
    )
    if not answered:
        log.info("charge of %s has no known outcome yet; left to the reconciler", payment.name)
    return await finish_charge(uow, payment.id, decision, deps)


# --- CancelPayment ---------------------------------------------------------------------------


async def cancel_payment(
    cmd: CancelPayment, principal: Principal, uow: PaymentsUnitOfWork, deps: PaymentsDeps
) -> Payment:
    key = reply_key("CancelPayment", principal, cmd.request_id, cmd.fingerprint)
    check_reason(cmd.reason)
    claim = Claim()
    for _ in range(deps.conflict_retries + 1):
        async with uow:
            try:
                first = await claim.take(uow, key, deps)
            except LostRaceError:
                continue
            if first is not None:
                return first.payment
            payment = await load_payment(uow, cmd.payment_id, principal, CANCEL_ACCESS)
            check_etag(payment, cmd.etag)
            expected = payment.version
            now = deps.clock()
            payment.cancel(cmd.reason, now)
            try:
                await uow.payments.update(payment, expected_version=expected)
            except StaleVersionError:
                continue
            await record_change(
                uow,
                payment,
                events.canceled(payment, principal.actor(), now),
                PaymentStatus.PENDING,
                now,
            )
            await complete_reply(uow, key.token, PaymentResult(payment.snapshot()))
            await uow.commit()
            return payment
    raise conflict()


# --- RefundPayment ---------------------------------------------------------------------------


def _refund_amount(amount: MoneyInput | None, payment: Payment) -> Money | None:
    if amount is None:
        return None
    currency = payment.amount.currency
    if amount.currency_code != currency:
        raise invalid(
            "amount.currency_code",
            f"must be the payment's currency, {currency}",
            CURRENCY_MISMATCH,
        )
    find_currency(currency, field="amount.currency_code")
    return positive_money(amount.units, amount.nanos, currency, field="amount")


def refund_request(payment: Payment, refund: Refund, source: PaymentSource) -> RefundRequest:
    return RefundRequest(
        idempotency_key=refund.name,
        charge_reference=payment.provider_reference,
        amount=refund.amount,
        charge=charge_request(payment, source),
    )


async def _start_refund(
    cmd: RefundPayment,
    key: ReplyKey,
    principal: Principal,
    uow: PaymentsUnitOfWork,
    deps: PaymentsDeps,
) -> PaymentResult | tuple[Payment, Refund, PaymentSource]:
    claim = Claim()
    for _ in range(deps.conflict_retries + 1):
        async with uow:
            try:
                first = await claim.take(uow, key, deps)
            except LostRaceError:
                continue
            if first is not None:
                return first
            payment = await load_payment(uow, cmd.payment_id, principal, REFUND_ACCESS)
            amount = _refund_amount(cmd.amount, payment)
            check_etag(payment, cmd.etag)
            expected = payment.version
            now = deps.clock()
            refund = payment.request_refund(
                deps.new_id(), amount, cmd.reason, principal.actor(), now
            )
            try:
                deps.provider.check_available()
            except ProviderUnavailableError:
                raise provider_unavailable() from None
            refund.pending_reply = key.token
            try:
                await uow.payments.update(payment, expected_version=expected)
            except StaleVersionError:
                continue
            source = await uow.payments.source(payment.id)
            await uow.commit()
            return payment, refund, source
    raise conflict()


async def settle_refund(
    uow: PaymentsUnitOfWork,
    payment: Payment,
    refund_id: str,
    decision: ProviderDecision,
    deps: PaymentsDeps,
) -> None:
    """Record the provider's answer on a PENDING refund; like `settle_charge`."""
    expected = payment.version
    now = deps.clock()
    refund = payment.refund(refund_id)
    previous = payment.status
    if decision.approved:
        payment.settle_refund(refund_id, decision.reference, now)
    else:
        payment.fail_refund(
            refund_id,
            decision.failure_code or "PROVIDER_REJECTED",
            decision.failure_reason or "The payment provider refused the refund.",
            now,
            decision.reference,
        )
    token, refund.pending_reply = refund.pending_reply, ""
    await uow.payments.update(payment, expected_version=expected)
    if decision.approved:
        await uow.ledger.post(refund_transaction(payment, refund, deps.new_id(), now))
        await record_change(
            uow, payment, events.refunded(payment, refund, now), previous, now, refund_id
        )
    await complete_reply(uow, token, PaymentResult(payment.snapshot(), refund_id))


async def finish_refund(
    uow: PaymentsUnitOfWork,
    payment_id: str,
    refund_id: str,
    decision: ProviderDecision | None,
    deps: PaymentsDeps,
) -> Payment:
    """Second transaction of a refund; like `finish_charge`."""
    for _ in range(deps.conflict_retries + 1):
        async with uow:
            payment = await uow.payments.get(payment_id)
            if payment is None:
                raise RuntimeError(f"payment {payment_id} vanished")
            refund = payment.refund(refund_id)
            try:
                if decision is not None and refund.status is RefundStatus.PENDING:
                    await settle_refund(uow, payment, refund_id, decision, deps)
                elif refund.pending_reply:
                    token, refund.pending_reply = refund.pending_reply, ""
                    await _hand_over_reply(uow, payment, token, refund_id)
                else:
                    return payment
            except StaleVersionError:
                continue
            await uow.commit()
            return payment
    raise conflict()


async def refund_payment(
    cmd: RefundPayment, principal: Principal, uow: PaymentsUnitOfWork, deps: PaymentsDeps
) -> tuple[Refund, Payment]:
    problems: list[InvalidArgument] = []
    try:
        key = reply_key("RefundPayment", principal, cmd.request_id, cmd.fingerprint)
    except InvalidArgument as error:
        problems.append(error)
    if not cmd.reason.strip():
        problems.append(
            InvalidArgument(
                [FieldViolation("reason", "is required: why the money is returned")],
                reason=INVALID_REASON,
            )
        )
    try:
        check_reason(cmd.reason)
    except InvalidArgument as error:
        problems.append(error)
    if problems:
        raise violations_of(problems)
    started = await _start_refund(cmd, key, principal, uow, deps)
    if isinstance(started, PaymentResult):
        assert started.refund_id is not None
        return started.payment.refund(started.refund_id), started.payment
    payment, refund, source = started
    answered, decision = await ask_provider(
        deps.provider.refund(
            refund_request(payment, refund, source), timeout=deps.provider_timeout
        ),
        deps.provider_timeout,
    )
    if not answered:
        log.info("refund %s has no known outcome yet; left to the reconciler", refund.name)
    payment = await finish_refund(uow, payment.id, refund.id, decision, deps)
    return payment.refund(refund.id), payment
