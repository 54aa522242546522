"""Grants (who may open which doors, when, how often) and the PIN decision."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from zoneinfo import ZoneInfo

from gatehouse.access.domain.schedules import DoorSchedule, WeeklySchedule


@dataclass(frozen=True, slots=True)
class Actor:
    user: str = ""
    service: str = ""
    client_address: str = ""


class GrantState(enum.IntEnum):
    """Numbered like the contract's GrantState."""

    ACTIVE = 1
    PENDING = 2
    EXPIRED = 3
    EXHAUSTED = 4
    REVOKED = 5


class DenyReason(enum.IntEnum):
    """Numbered like the contract's DenyReason; the contract fixes their precedence."""

    UNKNOWN_PIN = 1
    EXPIRED = 2
    NOT_YET_VALID = 3
    OUTSIDE_SCHEDULE = 4
    WRONG_DOOR = 5
    USES_EXHAUSTED = 6
    REVOKED = 7
    LOCKED_OUT = 8
    EMERGENCY_LOCKDOWN = 9


@dataclass(frozen=True, slots=True)
class Grant:
    id: str
    building_id: str
    holder: str
    doors: tuple[str, ...]  # door ids of the building
    pin_digest: str
    valid_from: datetime
    valid_until: datetime | None
    create_time: datetime
    issued_by: Actor
    display_name: str = ""
    schedule: WeeklySchedule | None = None
    max_uses: int = 0
    use_count: int = 0
    last_use_time: datetime | None = None
    revoke_time: datetime | None = None
    revoked_by: Actor | None = None
    revoke_reason: str = ""
    visitor_id: str = ""  # set for a visitor's one-day grant

    def state(self, now: datetime) -> GrantState:
        if self.revoke_time is not None:
            return GrantState.REVOKED
        if self.valid_until is not None and now >= self.valid_until:
            return GrantState.EXPIRED
        if self.exhausted:
            return GrantState.EXHAUSTED
        if now < self.valid_from:
            return GrantState.PENDING
        return GrantState.ACTIVE

    @property
    def exhausted(self) -> bool:
        return self.max_uses > 0 and self.use_count >= self.max_uses

    def ended(self, now: datetime) -> bool:
        return self.state(now) in (GrantState.REVOKED, GrantState.EXPIRED, GrantState.EXHAUSTED)

    def end_time(self) -> datetime | None:
        """When it ended (revocation, expiry or last use), for picking the latest ended one."""
        if self.revoke_time is not None:
            return self.revoke_time
        if self.exhausted:
            return self.last_use_time
        return self.valid_until

    def revoked(self, now: datetime, actor: Actor, reason: str) -> Grant:
        return replace(self, revoke_time=now, revoked_by=actor, revoke_reason=reason)

    def used(self, now: datetime) -> Grant:
        return replace(self, use_count=self.use_count + 1, last_use_time=now)

    def judge(  # noqa: PLR0911 - one return per reason, in the contract's order
        self, door_id: str, now: datetime, zone: ZoneInfo, door: DoorSchedule | None
    ) -> DenyReason | None:
        """Why this grant does not open `door_id` now, in the contract's order; None: it does."""
        state = self.state(now)
        if state is GrantState.REVOKED:
            return DenyReason.REVOKED
        if state is GrantState.EXPIRED:
            return DenyReason.EXPIRED
        if state is GrantState.EXHAUSTED:
            return DenyReason.USES_EXHAUSTED
        if state is GrantState.PENDING:
            return DenyReason.NOT_YET_VALID
        if door_id not in self.doors:
            return DenyReason.WRONG_DOOR
        if self.schedule is not None and not self.schedule.contains(now, zone):
            return DenyReason.OUTSIDE_SCHEDULE
        if door is not None and not door.admits_pin(now, zone):
            return DenyReason.OUTSIDE_SCHEDULE
        return None


def matching_grant(candidates: Sequence[Grant], now: datetime) -> Grant | None:
    """The grant a PIN is judged by: one that has not ended, else the latest ended one."""
    open_grants = [grant for grant in candidates if not grant.ended(now)]
    if open_grants:
        return max(open_grants, key=lambda grant: grant.create_time)
    ended = [grant for grant in candidates if grant.end_time() is not None]
    if not ended:
        return None
    return max(ended, key=lambda grant: (grant.end_time() or grant.create_time, grant.create_time))


@dataclass(frozen=True, slots=True)
class Decision:
    granted: bool
    reason: DenyReason | None
    grant: Grant | None  # the matched grant (after counting the use, when granted)
    counts_as_failure: bool

    @property
    def holder(self) -> str:
        return self.grant.holder if self.grant is not None else ""


def decide(
    *,
    door_id: str,
    now: datetime,
    zone: ZoneInfo,
    lockdown: bool,
    locked_out: bool,
    candidates: Sequence[Grant],
    door: DoorSchedule | None,
) -> Decision:
    """The outcome of one PIN entry. Only UNKNOWN_PIN counts toward the keypad lockout."""
    if lockdown:
        return Decision(False, DenyReason.EMERGENCY_LOCKDOWN, None, counts_as_failure=False)
    if locked_out:
        return Decision(False, DenyReason.LOCKED_OUT, None, counts_as_failure=False)
    grant = matching_grant(candidates, now)
    if grant is None:
        return Decision(False, DenyReason.UNKNOWN_PIN, None, counts_as_failure=True)
    reason = grant.judge(door_id, now, zone, door)
    if reason is not None:
        return Decision(False, reason, grant, counts_as_failure=False)
    return Decision(True, None, grant.used(now), counts_as_failure=False)
