"""Payment instruments: the documented sandbox test cards and IBAN validation.

The test cards are part of the contract (proto `CardDetails.test_card_number`): clients and
tests rely on each number's outcome, so the table lives in the domain, not in the sandbox.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from types import MappingProxyType


class TestCardOutcome(enum.StrEnum):
    """What the sandbox provider does with a test card."""

    __test__ = False  # not a pytest test class

    APPROVE = "APPROVE"
    DECLINE = "DECLINE"
    INSUFFICIENT_FUNDS = "INSUFFICIENT_FUNDS"
    EXPIRED = "EXPIRED"
    PROVIDER_ERROR = "PROVIDER_ERROR"
    TIMEOUT = "TIMEOUT"


TEST_CARDS: Mapping[str, TestCardOutcome] = MappingProxyType(
    {
        "4242424242424242": TestCardOutcome.APPROVE,
        "4000000000000002": TestCardOutcome.DECLINE,
        "4000000000009995": TestCardOutcome.INSUFFICIENT_FUNDS,
        "4000000000000069": TestCardOutcome.EXPIRED,
        "4000000000000119": TestCardOutcome.PROVIDER_ERROR,
        "4000000000000259": TestCardOutcome.TIMEOUT,
    }
)


def card_brand(number: str) -> str:
    """The brand a card number's prefix names (enough for receipts of test cards)."""
    if number.startswith("4"):
        return "visa"
    if number[:2] in {"51", "52", "53", "54", "55"} or (
        number[:4].isdigit() and (2221 <= int(number[:4]) <= 2720)
    ):
        return "mastercard"
    if number[:2] in {"34", "37"}:
        return "amex"
    return "unknown"


# Lengths of the IBANs of the countries we see most; others are accepted at 15-34 characters
# as long as the checksum holds (ISO 13616 bounds every IBAN to that).
IBAN_LENGTHS: Mapping[str, int] = MappingProxyType(
    {
        "AT": 20, "BE": 16, "CH": 21, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "EE": 20,
        "ES": 24, "FI": 18, "FR": 27, "GB": 22, "GR": 27, "HR": 21, "HU": 28, "IE": 22,
        "IS": 26, "IT": 27, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MT": 31,
        "NL": 18, "NO": 15, "PL": 28, "PT": 25, "RO": 24, "SE": 24, "SI": 19, "SK": 24,
        "SM": 27,
    }
)  # fmt: skip
_IBAN_SHAPE = re.compile(r"[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}")


def normalize_iban(text: str) -> str:
    return re.sub(r"\s+", "", text).upper()


def iban_problem(iban: str) -> str | None:
    """Why `iban` (normalized) is not a valid IBAN, or None when it is."""
    if not _IBAN_SHAPE.fullmatch(iban):
        return "must be a country code, two check digits and 11-30 letters or digits"
    expected = IBAN_LENGTHS.get(iban[:2])
    if expected is not None and len(iban) != expected:
        return f"an IBAN of {iban[:2]} has {expected} characters"
    rearranged = iban[4:] + iban[:4]
    digits = "".join(str(int(char, 36)) for char in rearranged)
    if int(digits) % 97 != 1:
        return "the check digits do not match (mistyped?)"
    return None
