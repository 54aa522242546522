"""Brute-force lockout: how many failures lock, and for how long.

Failures are counted per account (per email as entered, existing or not, so a lock says
nothing about whether the account exists) and per client address. Reaching the threshold
inside the window locks; each further lock within `memory` lasts twice as long as the last,
up to `max_lock`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import timedelta


class LockScope(enum.StrEnum):
    ACCOUNT = "account"
    CLIENT_ADDRESS = "client_address"


@dataclass(frozen=True, slots=True)
class LockoutPolicy:
    max_failures: int
    window: timedelta
    base_lock: timedelta
    max_lock: timedelta
    memory: timedelta

    def lock_duration(self, level: int) -> timedelta:
        """The length of the `level`-th lock in a row (1 = first): base x 2^(level-1)."""
        if level < 1:
            raise ValueError("lock levels start at 1")
        # Capped exponent: 2^40 x a second already exceeds any sane maximum.
        doubled = self.base_lock * (1 << min(level - 1, 40))
        return min(doubled, self.max_lock)


@dataclass(frozen=True, slots=True)
class Lock:
    scope: LockScope
    retry_after: timedelta
    failures: int = 0
    level: int = 0
