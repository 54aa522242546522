"""Reading payments: GetPayment and ListPayments (keyset pagination, opaque page tokens)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime

from gatehouse.payments.domain.money import (
    UNSUPPORTED_CURRENCY,
    Money,
    find_currency,
    invalid,
    money_from_parts,
)
from gatehouse.payments.domain.payments import Payment, PaymentMethod, PaymentStatus
from gatehouse.payments.handlers.common import (
    GET_ACCESS,
    INVALID_RESOURCE_NAME,
    READ_ALL,
    USER_NAME,
    PaymentsDeps,
    Principal,
    load_payment,
    violations_of,
)
from gatehouse.payments.handlers.payments import INVALID_FIELD, MoneyInput
from gatehouse.payments.handlers.ports import PageCursor, PaymentFilter, PaymentsUnitOfWork
from gatehouse.runtime.errors import InvalidArgument, permission_missing

INVALID_PAGE_TOKEN = "INVALID_PAGE_TOKEN"  # noqa: S105 - an error reason
INVALID_PAGE_SIZE = "INVALID_PAGE_SIZE"
INVALID_ORDER_BY = "INVALID_ORDER_BY"
INVALID_TIME_RANGE = "INVALID_TIME_RANGE"
INVALID_AMOUNT_RANGE = "INVALID_AMOUNT_RANGE"

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
_TOKEN_PREFIX = "pt1."  # noqa: S105 - marks our page tokens, not a secret
_NEWEST_FIRST = {"": True, "create_time desc": True, "create_time": False, "create_time asc": False}


async def get_payment(payment_id: str, principal: Principal, uow: PaymentsUnitOfWork) -> Payment:
    async with uow:
        return await load_payment(uow, payment_id, principal, GET_ACCESS)


@dataclass(frozen=True, slots=True)
class ListPayments:
    page_size: int = 0
    page_token: str = ""
    payer: str = ""
    statuses: tuple[PaymentStatus | None, ...] = ()  # None: unspecified or unknown
    methods: tuple[PaymentMethod | None, ...] = ()
    created_from: datetime | None = None
    created_before: datetime | None = None
    min_amount: MoneyInput | None = None
    max_amount: MoneyInput | None = None
    currency_code: str = ""
    order_by: str = ""


@dataclass(frozen=True, slots=True)
class Page:
    payments: list[Payment]
    next_page_token: str


def _amount_bound(value: MoneyInput, field: str, deps: PaymentsDeps) -> Money:
    try:
        money = money_from_parts(
            value.units,
            value.nanos,
            value.currency_code,
            field=field,
            enabled=deps.enabled_currencies,
        )
    except InvalidArgument as error:
        if error.reason == UNSUPPORTED_CURRENCY:
            raise
        raise invalid(field, error.violations[0].description, INVALID_AMOUNT_RANGE) from None
    if money.minor < 0:
        raise invalid(field, "must not be negative", INVALID_AMOUNT_RANGE)
    return money


def _amount_filter(
    query: ListPayments, deps: PaymentsDeps
) -> tuple[str | None, Money | None, Money | None]:
    """The currency and amount bounds the filters name (all in one currency)."""
    currency = query.currency_code or None
    if currency is not None:
        find_currency(currency, field="currency_code", enabled=deps.enabled_currencies)
    low = None if query.min_amount is None else _amount_bound(query.min_amount, "min_amount", deps)
    high = None if query.max_amount is None else _amount_bound(query.max_amount, "max_amount", deps)
    currencies = {m.currency for m in (low, high) if m is not None} | (
        {currency} if currency else set()
    )
    if len(currencies) > 1:
        raise invalid(
            "max_amount" if high is not None else "min_amount",
            "min_amount, max_amount and currency_code must name the same currency",
            INVALID_AMOUNT_RANGE,
        )
    if low is not None and high is not None and low > high:
        raise invalid("min_amount", "is above max_amount", INVALID_AMOUNT_RANGE)
    return (currencies.pop() if currencies else None), low, high


def _shape_problems(query: ListPayments) -> list[InvalidArgument]:
    problems = []
    if query.payer and not USER_NAME.fullmatch(query.payer):
        problems.append(invalid("payer", "must look like 'users/{id}'", INVALID_RESOURCE_NAME))
    if query.page_size < 0:
        problems.append(invalid("page_size", "must not be negative", INVALID_PAGE_SIZE))
    if _order(query) is None:
        problems.append(
            invalid(
                "order_by",
                "must be 'create_time desc' (default) or 'create_time asc'",
                INVALID_ORDER_BY,
            )
        )
    if any(status is None for status in query.statuses):
        problems.append(invalid("statuses", "must name known statuses", INVALID_FIELD))
    if any(method is None for method in query.methods):
        problems.append(invalid("methods", "must name known methods", INVALID_FIELD))
    if (
        query.created_from is not None
        and query.created_before is not None
        and query.created_before < query.created_from
    ):
        problems.append(
            invalid("create_time_range", "end_time is before start_time", INVALID_TIME_RANGE)
        )
    return problems


def _order(query: ListPayments) -> bool | None:
    """True: newest first; None: not an ordering we offer."""
    return _NEWEST_FIRST.get(" ".join(query.order_by.split()).lower())


def _filter(query: ListPayments, principal: Principal, deps: PaymentsDeps) -> PaymentFilter:
    problems = _shape_problems(query)
    currency, low, high = None, None, None
    try:
        currency, low, high = _amount_filter(query, deps)
    except InvalidArgument as error:
        problems.append(error)
    if problems:
        raise violations_of(problems)
    read_all = principal.has(READ_ALL)
    payer = query.payer or None
    if payer is not None and payer != principal.user and not read_all:
        raise permission_missing(READ_ALL)
    return PaymentFilter(
        visible_to=None if read_all else principal.user,
        payer=payer,
        statuses=frozenset(s for s in query.statuses if s is not None),
        methods=frozenset(m for m in query.methods if m is not None),
        created_from=query.created_from,
        created_before=query.created_before,
        currency=currency,
        min_minor=None if low is None else low.minor,
        max_minor=None if high is None else high.minor,
    )


# --- page tokens -----------------------------------------------------------------------------


def query_fingerprint(where: PaymentFilter, newest_first: bool) -> str:
    """Names the query a token belongs to, including whose view it is: a token is only
    accepted for the same filters, order and caller."""
    canonical = json.dumps(
        {
            "visible_to": where.visible_to,
            "payer": where.payer,
            "statuses": sorted(s.value for s in where.statuses),
            "methods": sorted(m.value for m in where.methods),
            "from": None if where.created_from is None else where.created_from.isoformat(),
            "before": None if where.created_before is None else where.created_before.isoformat(),
            "currency": where.currency,
            "min": where.min_minor,
            "max": where.max_minor,
            "newest_first": newest_first,
        },
        sort_keys=True,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def encode_page_token(fingerprint: str, cursor: PageCursor) -> str:
    body = json.dumps(
        {"q": fingerprint, "t": cursor.create_time.isoformat(), "i": cursor.payment_id},
        separators=(",", ":"),
    )
    return _TOKEN_PREFIX + base64.urlsafe_b64encode(body.encode()).decode().rstrip("=")


def _bad_token(description: str) -> InvalidArgument:
    return invalid("page_token", description, INVALID_PAGE_TOKEN)


def decode_page_token(token: str, fingerprint: str) -> PageCursor:
    if not token.startswith(_TOKEN_PREFIX) or len(token) > 512:
        raise _bad_token("is not a page token of ListPayments")
    payload = token.removeprefix(_TOKEN_PREFIX)
    try:
        body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        query, time, payment_id = body["q"], body["t"], body["i"]
        if not all(isinstance(part, str) for part in (query, time, payment_id)):
            raise TypeError("token fields must be strings")
        create_time = datetime.fromisoformat(time)
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise _bad_token("is not a page token of ListPayments") from None
    if create_time.utcoffset() is None:
        raise _bad_token("is not a page token of ListPayments")
    if query != fingerprint:
        raise _bad_token(
            "was issued for a different query; keep every other field unchanged between pages"
        )
    return PageCursor(create_time, payment_id)


async def list_payments(
    query: ListPayments, principal: Principal, uow: PaymentsUnitOfWork, deps: PaymentsDeps
) -> Page:
    where = _filter(query, principal, deps)
    newest_first = _order(query) is not False
    fingerprint = query_fingerprint(where, newest_first)
    after = decode_page_token(query.page_token, fingerprint) if query.page_token else None
    size = min(query.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    async with uow:
        rows = await uow.payments.page(
            where, newest_first=newest_first, after=after, limit=size + 1
        )
    page, more = rows[:size], len(rows) > size
    token = ""
    if more:
        last = page[-1]
        token = encode_page_token(fingerprint, PageCursor(last.create_time, last.id))
    return Page(page, token)
