"""Grant states and the PIN decision: every deny reason, in the contract's precedence."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from gatehouse.access.domain.grants import (
    Actor,
    DenyReason,
    Grant,
    GrantState,
    decide,
    matching_grant,
)
from gatehouse.access.domain.schedules import (
    DoorSchedule,
    DoorScheduleMode,
    WeeklySchedule,
    WeeklyWindow,
)

MADRID = ZoneInfo("Europe/Madrid")
NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)  # a Monday, 10:00 in Madrid
H = 3600


def grant(**fields: object) -> Grant:
    base = Grant(
        id="g1",
        building_id="b1",
        holder="users/ana",
        doors=("main",),
        pin_digest="d",
        valid_from=NOW - timedelta(days=1),
        valid_until=NOW + timedelta(days=1),
        create_time=NOW - timedelta(days=1),
        issued_by=Actor(user="users/admin"),
    )
    return replace(base, **fields)  # type: ignore[arg-type]


def judge(
    *candidates: Grant,
    door: str = "main",
    schedule: DoorSchedule | None = None,
    **overrides: object,
) -> tuple[bool, object]:
    options: dict[str, object] = {
        "door_id": door,
        "now": NOW,
        "zone": MADRID,
        "lockdown": False,
        "locked_out": False,
        "candidates": candidates,
        "door": schedule,
    }
    options.update(overrides)
    decision = decide(**options)  # type: ignore[arg-type]
    return decision.granted, decision.reason


def test_an_active_grant_for_the_door_opens_it_and_counts_a_use() -> None:
    decision = decide(
        door_id="main",
        now=NOW,
        zone=MADRID,
        lockdown=False,
        locked_out=False,
        candidates=[grant(max_uses=2)],
        door=None,
    )
    assert decision.granted
    assert decision.reason is None
    assert decision.grant is not None
    assert decision.grant.use_count == 1
    assert decision.grant.last_use_time == NOW
    assert not decision.counts_as_failure


@pytest.mark.parametrize(
    ("candidate", "door", "reason"),
    [
        (grant(revoke_time=NOW - timedelta(minutes=1)), "main", DenyReason.REVOKED),
        (grant(valid_until=NOW), "main", DenyReason.EXPIRED),
        (grant(max_uses=1, use_count=1, last_use_time=NOW), "main", DenyReason.USES_EXHAUSTED),
        (grant(valid_from=NOW + timedelta(seconds=1)), "main", DenyReason.NOT_YET_VALID),
        (grant(), "side", DenyReason.WRONG_DOOR),
        (
            grant(schedule=WeeklySchedule(windows=(WeeklyWindow(1, 12 * H, 14 * H),))),
            "main",
            DenyReason.OUTSIDE_SCHEDULE,
        ),
    ],
)
def test_each_grant_reason(candidate: Grant, door: str, reason: DenyReason) -> None:
    assert judge(candidate, door=door) == (False, reason)


def test_a_door_that_takes_pins_only_in_its_windows() -> None:
    closed = DoorSchedule(
        "b1",
        "main",
        DoorScheduleMode.PIN_DURING_WINDOWS,
        WeeklySchedule(windows=(WeeklyWindow(1, 12 * H, 14 * H),)),
    )
    assert judge(grant(), schedule=closed) == (False, DenyReason.OUTSIDE_SCHEDULE)
    opened = replace(closed, schedule=WeeklySchedule(windows=(WeeklyWindow(1, 9 * H, 14 * H),)))
    assert judge(grant(), schedule=opened) == (True, None)


def test_unknown_pins_count_toward_lockout_others_do_not() -> None:
    unknown = decide(
        door_id="main",
        now=NOW,
        zone=MADRID,
        lockdown=False,
        locked_out=False,
        candidates=[],
        door=None,
    )
    assert (unknown.granted, unknown.reason, unknown.counts_as_failure) == (
        False,
        DenyReason.UNKNOWN_PIN,
        True,
    )
    assert judge(grant(), door="side") == (False, DenyReason.WRONG_DOOR)


def test_lockdown_wins_over_lockout_which_wins_over_the_pin() -> None:
    assert judge(grant(), lockdown=True, locked_out=True) == (
        False,
        DenyReason.EMERGENCY_LOCKDOWN,
    )
    assert judge(grant(), locked_out=True) == (False, DenyReason.LOCKED_OUT)
    assert judge(locked_out=True) == (False, DenyReason.LOCKED_OUT)


def test_precedence_among_grant_reasons() -> None:
    # Revoked and expired and exhausted: REVOKED first; expired and exhausted: EXPIRED.
    everything = grant(revoke_time=NOW, valid_until=NOW, max_uses=1, use_count=1, last_use_time=NOW)
    assert judge(everything) == (False, DenyReason.REVOKED)
    assert judge(replace(everything, revoke_time=None)) == (False, DenyReason.EXPIRED)
    pending_wrong_door = grant(valid_from=NOW + timedelta(hours=1))
    assert judge(pending_wrong_door, door="side") == (False, DenyReason.NOT_YET_VALID)


def test_an_open_grant_wins_over_ended_ones_with_the_same_pin() -> None:
    old = grant(id="old", revoke_time=NOW - timedelta(days=2))
    new = grant(id="new", create_time=NOW)
    assert matching_grant([old, new], NOW) == new
    assert judge(old, new) == (True, None)


def test_otherwise_the_most_recently_ended_grant_judges() -> None:
    revoked_long_ago = grant(id="a", revoke_time=NOW - timedelta(days=3))
    expired_recently = grant(id="b", valid_until=NOW - timedelta(hours=1))
    chosen = matching_grant([revoked_long_ago, expired_recently], NOW)
    assert chosen is not None
    assert chosen.id == "b"
    assert judge(revoked_long_ago, expired_recently) == (False, DenyReason.EXPIRED)
    assert matching_grant([], NOW) is None


def test_states() -> None:
    assert grant().state(NOW) is GrantState.ACTIVE
    assert grant(valid_from=NOW + timedelta(1)).state(NOW) is GrantState.PENDING
    assert grant(valid_until=NOW).state(NOW) is GrantState.EXPIRED
    assert grant(max_uses=3, use_count=3).state(NOW) is GrantState.EXHAUSTED
    assert grant(revoke_time=NOW).state(NOW) is GrantState.REVOKED
    assert grant(valid_until=None).state(NOW + timedelta(days=999)) is GrantState.ACTIVE
    revoked = grant().revoked(NOW, Actor(user="users/x"), "moved out")
    assert (revoked.revoke_reason, revoked.revoked_by) == ("moved out", Actor(user="users/x"))
