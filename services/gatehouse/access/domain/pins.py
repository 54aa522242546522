"""PINs: generated at random, never stored in clear, found again by a keyed digest.

The digest is HMAC-SHA256 under the service's secret key over the building id and the PIN
(docs/decisions/0008-access.md says why not argon2): the key makes a stolen database useless
for guessing PINs offline, the building id salts it so equal PINs of two buildings differ, and
being deterministic it is both the lookup key of ValidatePin (one indexed equality) and what
makes a PIN unique in its building among grants that have not ended.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass

MIN_PIN_LENGTH = 6
MAX_PIN_LENGTH = 8

RandomBelow = Callable[[int], int]


@dataclass(frozen=True, slots=True)
class PinPolicy:
    default_length: int = 6

    def __post_init__(self) -> None:
        if not MIN_PIN_LENGTH <= self.default_length <= MAX_PIN_LENGTH:
            raise ValueError(f"PIN length must be {MIN_PIN_LENGTH} to {MAX_PIN_LENGTH}")

    def length_for(self, requested: int) -> int | None:
        """The length to generate (0 = the default), or None when `requested` is invalid."""
        if requested == 0:
            return self.default_length
        if MIN_PIN_LENGTH <= requested <= MAX_PIN_LENGTH:
            return requested
        return None

    @staticmethod
    def well_formed(pin: str) -> bool:
        """Digits only, of a length some PIN can have (entered PINs are checked first)."""
        return pin.isascii() and pin.isdigit() and MIN_PIN_LENGTH <= len(pin) <= MAX_PIN_LENGTH


def generate_pin(length: int, random_below: RandomBelow = secrets.randbelow) -> str:
    """`length` uniformly random decimal digits (leading zeros allowed)."""
    return f"{random_below(10**length):0{length}d}"


class PinHasher:
    """The keyed, building-salted lookup digest of a PIN (hex)."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("the PIN key must be at least 32 bytes")
        self._key = key

    def digest(self, building_id: str, pin: str) -> str:
        message = b"access-pin\0" + building_id.encode() + b"\0" + pin.encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def code_digest(self, building_id: str, code: str) -> str:
        """Same scheme for visitors' invitation codes (a separate label: never equal to a PIN's)."""
        message = b"access-invitation\0" + building_id.encode() + b"\0" + code.upper().encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()


CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
INVITATION_CODE_LENGTH = 8


def generate_invitation_code(random_below: RandomBelow = secrets.randbelow) -> str:
    return "".join(CROCKFORD[random_below(32)] for _ in range(INVITATION_CODE_LENGTH))


def normalize_invitation_code(code: str) -> str | None:
    """Crockford base32, case-insensitive, with its usual aliases (O->0, I/L->1); None if bad."""
    text = code.strip().upper().replace("-", "").translate(str.maketrans("OIL", "011"))
    if len(text) != INVITATION_CODE_LENGTH or any(char not in CROCKFORD for char in text):
        return None
    return text
