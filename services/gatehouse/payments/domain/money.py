"""Money as an integer count of a currency's minor units, and the currencies we take.

Amounts never pass through floats: `google.type.Money` (units + nanos) is converted exactly,
and an amount with more decimals than its currency has (1.001 USD, 1.5 JPY) is refused rather
than rounded, since rounding someone's money silently is a bug either way it goes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from gatehouse.runtime.errors import FieldViolation, InvalidArgument

INVALID_AMOUNT = "INVALID_AMOUNT"
AMOUNT_PRECISION_EXCEEDED = "AMOUNT_PRECISION_EXCEEDED"
UNSUPPORTED_CURRENCY = "UNSUPPORTED_CURRENCY"

NANOS_PER_UNIT = 1_000_000_000
# Far above any real payment, far below int64 (the column type) in every exponent we know.
MAX_MINOR_UNITS = 10**15


@dataclass(frozen=True, slots=True)
class Currency:
    """An ISO 4217 currency and its exponent (digits after the decimal point)."""

    code: str
    exponent: int
    name: str

    @property
    def minor_per_unit(self) -> int:
        return int(10**self.exponent)


def _table(*currencies: Currency) -> Mapping[str, Currency]:
    return MappingProxyType({currency.code: currency for currency in currencies})


# The currencies this service takes. Exponents from ISO 4217; a code missing here is
# UNSUPPORTED_CURRENCY whether or not ISO knows it.
CURRENCIES: Mapping[str, Currency] = _table(
    Currency("USD", 2, "US dollar"),
    Currency("EUR", 2, "Euro"),
    Currency("GBP", 2, "Pound sterling"),
    Currency("CHF", 2, "Swiss franc"),
    Currency("CAD", 2, "Canadian dollar"),
    Currency("AUD", 2, "Australian dollar"),
    Currency("NZD", 2, "New Zealand dollar"),
    Currency("SEK", 2, "Swedish krona"),
    Currency("NOK", 2, "Norwegian krone"),
    Currency("DKK", 2, "Danish krone"),
    Currency("PLN", 2, "Polish zloty"),
    Currency("CZK", 2, "Czech koruna"),
    Currency("MXN", 2, "Mexican peso"),
    Currency("BRL", 2, "Brazilian real"),
    Currency("INR", 2, "Indian rupee"),
    Currency("CNY", 2, "Renminbi"),
    Currency("HKD", 2, "Hong Kong dollar"),
    Currency("SGD", 2, "Singapore dollar"),
    Currency("ZAR", 2, "South African rand"),
    Currency("JPY", 0, "Japanese yen"),
    Currency("KRW", 0, "South Korean won"),
    Currency("ISK", 0, "Icelandic krona"),
    Currency("CLP", 0, "Chilean peso"),
    Currency("VND", 0, "Vietnamese dong"),
    Currency("KWD", 3, "Kuwaiti dinar"),
    Currency("BHD", 3, "Bahraini dinar"),
    Currency("OMR", 3, "Omani rial"),
    Currency("JOD", 3, "Jordanian dinar"),
    Currency("TND", 3, "Tunisian dinar"),
)


def invalid(field: str, description: str, reason: str) -> InvalidArgument:
    return InvalidArgument([FieldViolation(field, description)], reason=reason)


def find_currency(code: str, *, field: str, enabled: frozenset[str] | None = None) -> Currency:
    """The currency for `code`; UNSUPPORTED_CURRENCY if unknown or not enabled."""
    currency = CURRENCIES.get(code)
    if currency is None or (enabled is not None and code not in enabled):
        shown = code if code.isalnum() and len(code) <= 8 else "the code given"
        raise invalid(
            field,
            f"{shown} is not a supported ISO 4217 currency code (e.g. USD, EUR, JPY)",
            UNSUPPORTED_CURRENCY,
        )
    return currency


@dataclass(frozen=True, slots=True, order=False)
class Money:
    """`minor` units of `currency` (cents for USD, yen for JPY, fils for KWD). May be negative
    only inside the ledger; amounts of payments and refunds are positive."""

    minor: int
    currency: str

    def __post_init__(self) -> None:
        if self.currency not in CURRENCIES:
            raise ValueError(f"unknown currency {self.currency!r}")

    @classmethod
    def zero(cls, currency: str) -> Money:
        return cls(0, currency)

    @property
    def exponent(self) -> int:
        return CURRENCIES[self.currency].exponent

    def _same(self, other: Money) -> None:
        if other.currency != self.currency:
            raise ValueError(f"cannot combine {self.currency} with {other.currency}")

    def __add__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.minor + other.minor, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.minor - other.minor, self.currency)

    def __neg__(self) -> Money:
        return Money(-self.minor, self.currency)

    def __lt__(self, other: Money) -> bool:
        self._same(other)
        return self.minor < other.minor

    def __le__(self, other: Money) -> bool:
        self._same(other)
        return self.minor <= other.minor

    def __gt__(self, other: Money) -> bool:
        self._same(other)
        return self.minor > other.minor

    def __ge__(self, other: Money) -> bool:
        self._same(other)
        return self.minor >= other.minor

    @property
    def is_positive(self) -> bool:
        return self.minor > 0

    def units_nanos(self) -> tuple[int, int]:
        """As `google.type.Money` holds it: units and nanos of the same sign."""
        per_unit = 10**self.exponent
        sign = -1 if self.minor < 0 else 1
        units, rest = divmod(abs(self.minor), per_unit)
        nanos = rest * (NANOS_PER_UNIT // per_unit)
        return sign * units, sign * nanos

    def decimal(self) -> str:
        """`12.34`, `1200`, `-0.005`: exact, with exactly the currency's decimals."""
        exponent = self.exponent
        sign = "-" if self.minor < 0 else ""
        units, rest = divmod(abs(self.minor), 10**exponent)
        if exponent == 0:
            return f"{sign}{units}"
        return f"{sign}{units}.{rest:0{exponent}d}"

    def __str__(self) -> str:
        return f"{self.decimal()} {self.currency}"


def money_from_parts(
    units: int,
    nanos: int,
    currency_code: str,
    *,
    field: str,
    enabled: frozenset[str] | None = None,
) -> Money:
    """Exact conversion of `google.type.Money` parts; any sign, checked shape and precision.

    Raises InvalidArgument: UNSUPPORTED_CURRENCY, INVALID_AMOUNT (nanos out of range, units
    and nanos of different sign, too large), AMOUNT_PRECISION_EXCEEDED.
    """
    currency = find_currency(currency_code, field=f"{field}.currency_code", enabled=enabled)
    if not -NANOS_PER_UNIT < nanos < NANOS_PER_UNIT:
        raise invalid(
            f"{field}.nanos", "must be between -999,999,999 and +999,999,999", INVALID_AMOUNT
        )
    if (units > 0 and nanos < 0) or (units < 0 and nanos > 0):
        raise invalid(field, "units and nanos must have the same sign", INVALID_AMOUNT)
    step = NANOS_PER_UNIT // currency.minor_per_unit
    if nanos % step:
        decimals = "no decimals" if currency.exponent == 0 else f"{currency.exponent} decimals"
        raise invalid(
            field,
            f"{currency.code} has {decimals}; the amount has more",
            AMOUNT_PRECISION_EXCEEDED,
        )
    minor = units * currency.minor_per_unit + nanos // step
    if abs(minor) > MAX_MINOR_UNITS:
        raise invalid(field, "is too large", INVALID_AMOUNT)
    return Money(minor, currency.code)


def positive_money(
    units: int,
    nanos: int,
    currency_code: str,
    *,
    field: str,
    enabled: frozenset[str] | None = None,
) -> Money:
    """As `money_from_parts`, and the amount must be above zero (INVALID_AMOUNT)."""
    money = money_from_parts(units, nanos, currency_code, field=field, enabled=enabled)
    if not money.is_positive:
        raise invalid(field, "must be greater than zero", INVALID_AMOUNT)
    return money
