"""Money: exact conversion from google.type.Money, currency exponents, precise errors."""

from __future__ import annotations

import pytest

from gatehouse.payments.domain.money import (
    AMOUNT_PRECISION_EXCEEDED,
    CURRENCIES,
    INVALID_AMOUNT,
    MAX_MINOR_UNITS,
    UNSUPPORTED_CURRENCY,
    Money,
    money_from_parts,
    positive_money,
)
from gatehouse.runtime.errors import InvalidArgument


@pytest.mark.parametrize(
    ("units", "nanos", "currency", "minor"),
    [
        (12, 340_000_000, "USD", 1234),
        (0, 10_000_000, "USD", 1),
        (1500, 0, "JPY", 1500),
        (1, 234_000_000, "KWD", 1234),
        (0, 1_000_000, "BHD", 1),
        (-3, -50_000_000, "EUR", -305),
    ],
)
def test_exact_conversion(units: int, nanos: int, currency: str, minor: int) -> None:
    money = money_from_parts(units, nanos, currency, field="amount")
    assert money == Money(minor, currency)
    assert money.units_nanos() == (units, nanos)


@pytest.mark.parametrize(
    ("units", "nanos", "currency"),
    [(1, 1_000_000, "USD"), (1, 500_000_000, "JPY"), (0, 100_000, "KWD"), (0, 1, "EUR")],
)
def test_more_decimals_than_the_currency_has_is_refused(
    units: int, nanos: int, currency: str
) -> None:
    with pytest.raises(InvalidArgument) as raised:
        money_from_parts(units, nanos, currency, field="payment.amount")
    assert raised.value.reason == AMOUNT_PRECISION_EXCEEDED
    assert [v.field for v in raised.value.violations] == ["payment.amount"]


@pytest.mark.parametrize(
    ("units", "nanos"), [(0, 0), (-1, 0), (0, -10_000_000), (1, -10_000_000), (-1, 10_000_000)]
)
def test_zero_negative_and_mixed_signs_are_invalid_amounts(units: int, nanos: int) -> None:
    with pytest.raises(InvalidArgument) as raised:
        positive_money(units, nanos, "USD", field="amount")
    assert raised.value.reason == INVALID_AMOUNT


def test_nanos_out_of_range_and_huge_amounts_are_invalid() -> None:
    for units, nanos in ((0, 1_000_000_000), (MAX_MINOR_UNITS, 0)):
        with pytest.raises(InvalidArgument) as raised:
            positive_money(units, nanos, "USD", field="amount")
        assert raised.value.reason == INVALID_AMOUNT


@pytest.mark.parametrize("code", ["", "usd", "XXX", "US", "BTC", "EURO"])
def test_unknown_currencies_are_unsupported(code: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        positive_money(1, 0, code, field="amount")
    assert raised.value.reason == UNSUPPORTED_CURRENCY
    assert raised.value.violations[0].field == "amount.currency_code"


def test_a_currency_not_enabled_is_unsupported() -> None:
    with pytest.raises(InvalidArgument) as raised:
        positive_money(1, 0, "GBP", field="amount", enabled=frozenset({"USD"}))
    assert raised.value.reason == UNSUPPORTED_CURRENCY


def test_decimal_strings_have_the_currency_exponent() -> None:
    assert Money(1234, "USD").decimal() == "12.34"
    assert Money(5, "USD").decimal() == "0.05"
    assert Money(1200, "JPY").decimal() == "1200"
    assert Money(1, "KWD").decimal() == "0.001"
    assert Money(-305, "EUR").decimal() == "-3.05"


def test_the_table_has_zero_two_and_three_exponent_currencies() -> None:
    assert {CURRENCIES[c].exponent for c in ("JPY", "USD", "KWD", "BHD")} == {0, 2, 3}
    assert all(len(code) == 3 and code.isupper() for code in CURRENCIES)


def test_money_of_different_currencies_does_not_mix() -> None:
    with pytest.raises(ValueError, match="cannot combine"):
        _ = Money(1, "USD") + Money(1, "EUR")
