"""Keypad lockout: after `max_failures` unknown PINs at one keypad within `window`, every
attempt there is denied for `duration` (brute-force defence)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta


@dataclass(frozen=True, slots=True)
class LockoutPolicy:
    max_failures: int = 5
    window: timedelta = timedelta(minutes=5)
    duration: timedelta = timedelta(minutes=15)

    def __post_init__(self) -> None:
        if self.max_failures < 1:
            raise ValueError("max_failures must be at least 1")
        if self.window <= timedelta(0) or self.duration <= timedelta(0):
            raise ValueError("window and duration must be positive")


@dataclass(frozen=True, slots=True)
class KeypadState:
    """One door's keypad: recent failures (oldest first) and the lockout, if any."""

    building_id: str
    door_id: str
    failures: tuple[datetime, ...] = ()
    locked_until: datetime | None = None

    def locked(self, now: datetime) -> bool:
        return self.locked_until is not None and now < self.locked_until

    def recent(self, now: datetime, policy: LockoutPolicy) -> tuple[datetime, ...]:
        return tuple(time for time in self.failures if now - time < policy.window)


@dataclass(frozen=True, slots=True)
class FailureOutcome:
    state: KeypadState
    failed_attempts: int  # within the window, this one included
    lockout_started: bool


def record_failure(state: KeypadState, now: datetime, policy: LockoutPolicy) -> FailureOutcome:
    failures = (*state.recent(now, policy), now)
    if len(failures) >= policy.max_failures:
        # The count starts again after the lockout: the attempts that caused it are spent.
        locked = replace(state, failures=(), locked_until=now + policy.duration)
        return FailureOutcome(locked, len(failures), lockout_started=True)
    return FailureOutcome(replace(state, failures=failures), len(failures), lockout_started=False)
