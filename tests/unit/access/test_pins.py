"""PIN policy, generation and the keyed lookup digest; invitation codes."""

from __future__ import annotations

import random

import pytest

from gatehouse.access.domain.pins import (
    PinHasher,
    PinPolicy,
    generate_invitation_code,
    generate_pin,
    normalize_invitation_code,
)

KEY = b"k" * 32


def test_lengths_zero_means_the_default_and_only_6_to_8_are_valid() -> None:
    policy = PinPolicy(default_length=7)
    assert policy.length_for(0) == 7
    assert [policy.length_for(n) for n in (6, 7, 8)] == [6, 7, 8]
    assert policy.length_for(5) is None
    assert policy.length_for(9) is None
    assert policy.length_for(-1) is None
    with pytest.raises(ValueError, match="PIN length"):
        PinPolicy(default_length=4)


def test_generated_pins_are_digits_of_the_length_with_leading_zeros_kept() -> None:
    assert generate_pin(6, lambda bound: 42) == "000042"
    rng = random.Random(7)
    pins = {generate_pin(8, rng.randrange) for _ in range(200)}
    assert all(len(pin) == 8 and pin.isdigit() for pin in pins)
    assert len(pins) > 190


@pytest.mark.parametrize("pin", ["12345", "123456789", "12a456", "١٢٣٤٥٦", "", "123 456"])
def test_malformed_pins_are_refused(pin: str) -> None:
    assert not PinPolicy.well_formed(pin)


def test_well_formed_pins_pass() -> None:
    assert PinPolicy.well_formed("000000")
    assert PinPolicy.well_formed("12345678")


def test_digest_is_keyed_and_salted_by_building_and_never_contains_the_pin() -> None:
    hasher = PinHasher(KEY)
    digest = hasher.digest("b1", "123456")
    assert digest == hasher.digest("b1", "123456")
    assert digest != hasher.digest("b2", "123456")
    assert digest != PinHasher(b"o" * 32).digest("b1", "123456")
    assert "123456" not in digest
    assert hasher.code_digest("b1", "abcdefgh") == hasher.code_digest("b1", "ABCDEFGH")
    with pytest.raises(ValueError, match="32 bytes"):
        PinHasher(b"short")


def test_invitation_codes_are_crockford_and_normalise_aliases() -> None:
    code = generate_invitation_code(random.Random(1).randrange)
    assert normalize_invitation_code(code) == code
    assert len(code) == 8
    assert normalize_invitation_code("abcd-efgh") == "ABCDEFGH"
    assert normalize_invitation_code("oiloilo1") == "01101101"
    assert normalize_invitation_code("ABCDEFG") is None
    assert normalize_invitation_code("ABCDEFGU") is None
