"""ULIDs: 128-bit ids that sort by creation time, as 26 Crockford base32 characters.

Layout (https://github.com/ulid/spec): a 48-bit Unix timestamp in milliseconds, then 80
random bits. Encoded big-endian, so string order is numeric order is time order.

Within one process ids are strictly increasing: when the clock has not moved on since the
previous id (same millisecond, or the wall clock stepped back), the previous id's random part
is incremented instead of drawing a new one. Ids from different processes made in the same
millisecond are ordered at random; only the millisecond prefix is comparable across hosts,
and only as well as their clocks agree.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

CROCKFORD_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
ULID_LENGTH = 26

_TIMESTAMP_BITS = 48
_RANDOM_BITS = 80
_MAX_TIMESTAMP_MS = (1 << _TIMESTAMP_BITS) - 1
_RANDOM_LIMIT = 1 << _RANDOM_BITS
# 26 characters carry 130 bits; the top two are always zero, so the first character is 0-7.
_ULID_PATTERN = re.compile(r"[0-7][0-9A-HJKMNP-TV-Z]{25}")
_DECODE = {char: value for value, char in enumerate(CROCKFORD_ALPHABET)}


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def _random_80_bits() -> int:
    return secrets.randbits(_RANDOM_BITS)


def encode_ulid(value: int) -> str:
    """The 26-character form of a 128-bit integer."""
    if not 0 <= value < 1 << 128:
        raise ValueError("a ULID is a 128-bit unsigned integer")
    chars = []
    for _ in range(ULID_LENGTH):
        chars.append(CROCKFORD_ALPHABET[value & 0x1F])
        value >>= 5
    return "".join(reversed(chars))


def decode_ulid(text: str) -> int:
    """The 128-bit integer a canonical (upper-case) ULID string stands for."""
    if not is_ulid(text):
        raise ValueError(f"not a ULID: {text!r}")
    value = 0
    for char in text:
        value = (value << 5) | _DECODE[char]
    return value


def is_ulid(text: str) -> bool:
    """Whether `text` is a canonical ULID (26 upper-case Crockford characters, <= 2^128 - 1)."""
    return _ULID_PATTERN.fullmatch(text) is not None


def ulid_time(text: str) -> datetime:
    """The creation time (millisecond precision, UTC) encoded in a ULID."""
    return datetime.fromtimestamp((decode_ulid(text) >> _RANDOM_BITS) / 1000, tz=UTC)


class UlidGenerator:
    """Makes strictly increasing ULIDs; thread-safe.

    `clock_ms` and `random_bits` exist for tests; the defaults are the wall clock and
    `secrets` (ids must not be guessable from one another across milliseconds).
    """

    def __init__(
        self,
        clock_ms: Callable[[], int] = _wall_clock_ms,
        random_bits: Callable[[], int] = _random_80_bits,
    ) -> None:
        self._clock_ms = clock_ms
        self._random_bits = random_bits
        self._lock = threading.Lock()
        self._last_ms = -1
        self._last_random = 0

    def new(self) -> str:
        with self._lock:
            now = self._clock_ms()
            if now > self._last_ms:
                timestamp, random = now, self._random_bits()
            else:
                # Same millisecond or a clock that stepped back: keep the last timestamp so
                # order survives, and count up from the last id.
                timestamp, random = self._last_ms, self._last_random + 1
                if random >= _RANDOM_LIMIT:
                    # 2^80 ids in one millisecond cannot happen with real randomness; borrow
                    # the next millisecond rather than fail (the spec's choice) or reorder.
                    timestamp, random = timestamp + 1, self._random_bits()
            if not 0 <= timestamp <= _MAX_TIMESTAMP_MS:
                raise ValueError(f"timestamp {timestamp} ms does not fit a ULID")
            if not 0 <= random < _RANDOM_LIMIT:
                raise ValueError("random part must be an 80-bit unsigned integer")
            self._last_ms, self._last_random = timestamp, random
        return encode_ulid((timestamp << _RANDOM_BITS) | random)


# Module state is only a lock and two integers; the first id allocates nothing else.
_process_generator = UlidGenerator()


def new_ulid() -> str:
    """A new ULID, greater than every ULID this process made before."""
    return _process_generator.new()
