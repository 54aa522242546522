"""Visitors: registered by a host's side, checked in (one-day PIN) and out (PIN revoked)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from gatehouse.access.domain.grants import Actor


class VisitorState(enum.IntEnum):
    """Numbered like the contract's VisitorState."""

    EXPECTED = 1
    CHECKED_IN = 2
    CHECKED_OUT = 3
    EXPIRED = 4


class CheckInMethod(enum.IntEnum):
    RECEPTION = 1
    INVITATION_CODE = 2


def end_of_local_day(instant: datetime, zone: ZoneInfo) -> datetime:
    """The first instant of the next building-local day (DST-correct: a day may be 23 or 25 h)."""
    local_date = instant.astimezone(zone).date() + timedelta(days=1)
    return datetime.combine(local_date, time(0), tzinfo=zone).astimezone(instant.tzinfo)


@dataclass(frozen=True, slots=True)
class Visitor:
    id: str
    building_id: str
    display_name: str
    host: str
    expected_arrival_time: datetime
    invitation_expire_time: datetime
    code_digest: str
    create_time: datetime
    registered_by: Actor
    company: str = ""
    expected_departure_time: datetime | None = None
    doors: tuple[str, ...] = ()
    note: str = ""
    grant_id: str = ""
    check_in_time: datetime | None = None
    check_out_time: datetime | None = None
    check_in_method: CheckInMethod | None = None

    def state(self, now: datetime) -> VisitorState:
        if self.check_out_time is not None:
            return VisitorState.CHECKED_OUT
        if self.check_in_time is not None:
            return VisitorState.CHECKED_IN
        if now >= self.invitation_expire_time:
            return VisitorState.EXPIRED
        return VisitorState.EXPECTED

    def checked_in(self, now: datetime, method: CheckInMethod, grant_id: str) -> Visitor:
        return replace(self, check_in_time=now, check_in_method=method, grant_id=grant_id)

    def checked_out(self, now: datetime) -> Visitor:
        return replace(self, check_out_time=now)
