"""Weekly schedules in local wall-clock time: overnight windows, holidays, DST, validation."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from gatehouse.access.domain.schedules import (
    DAY,
    DayWindow,
    DoorSchedule,
    DoorScheduleMode,
    Holiday,
    WeeklySchedule,
    WeeklyWindow,
    door_schedule_problems,
    load_zone,
    schedule_problems,
    time_of_day,
)

MADRID = ZoneInfo("Europe/Madrid")
H = 3600


def local(year: int, month: int, day: int, hour: int, minute: int, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=MADRID)


def weekdays(start: int, end: int) -> tuple[WeeklyWindow, ...]:
    return tuple(WeeklyWindow(day, start, end) for day in range(1, 6))


def test_business_hours_on_weekdays_only() -> None:
    schedule = WeeklySchedule(windows=weekdays(8 * H, 18 * H))
    # 2026-11-30 is a Monday.
    assert schedule.contains(local(2026, 11, 30, 8, 0), MADRID)
    assert schedule.contains(local(2026, 11, 30, 17, 59, 59), MADRID)
    assert not schedule.contains(local(2026, 11, 30, 18, 0), MADRID)
    assert not schedule.contains(local(2026, 11, 30, 7, 59), MADRID)
    assert not schedule.contains(local(2026, 12, 5, 10, 0), MADRID)  # Saturday


def test_an_overnight_window_runs_into_the_next_day() -> None:
    schedule = WeeklySchedule(windows=(WeeklyWindow(5, 22 * H, 6 * H),))  # Friday night
    assert schedule.contains(local(2026, 12, 4, 23, 0), MADRID)
    assert schedule.contains(local(2026, 12, 5, 5, 59), MADRID)
    assert not schedule.contains(local(2026, 12, 5, 6, 0), MADRID)
    assert not schedule.contains(local(2026, 12, 4, 21, 59), MADRID)


def test_midnight_to_midnight_is_the_whole_day_and_24h_ends_the_day() -> None:
    whole = WeeklySchedule(windows=(WeeklyWindow(1, 0, 0),))
    assert whole.contains(local(2026, 11, 30, 0, 0), MADRID)
    assert whole.contains(local(2026, 11, 30, 23, 59, 59), MADRID)
    assert not whole.contains(local(2026, 12, 1, 0, 0), MADRID)
    evening = WeeklySchedule(windows=(WeeklyWindow(1, 20 * H, DAY),))
    assert evening.contains(local(2026, 11, 30, 23, 59, 59), MADRID)
    assert not evening.contains(local(2026, 12, 1, 0, 0), MADRID)


def test_a_holiday_replaces_the_windows_starting_that_day_but_not_the_night_before() -> None:
    schedule = WeeklySchedule(
        windows=(*weekdays(8 * H, 18 * H), WeeklyWindow(4, 22 * H, 2 * H)),
        holidays=(
            Holiday(date(2026, 12, 4), (DayWindow(10 * H, 12 * H),), "Closure"),
            Holiday(date(2026, 12, 8), (), "Immaculate Conception"),
        ),
    )
    assert not schedule.contains(local(2026, 12, 4, 9, 0), MADRID)
    assert schedule.contains(local(2026, 12, 4, 11, 0), MADRID)
    # Thursday's overnight window still runs into the holiday.
    assert schedule.contains(local(2026, 12, 4, 1, 0), MADRID)
    assert not schedule.contains(local(2026, 12, 8, 9, 0), MADRID)
    assert schedule.contains(local(2026, 12, 9, 9, 0), MADRID)


def test_spring_forward_a_boundary_in_the_skipped_hour_takes_effect_at_the_transition() -> None:
    # 2026-03-29 (Sunday): Madrid jumps from 02:00 to 03:00 local.
    schedule = WeeklySchedule(windows=(WeeklyWindow(7, 2 * H + 30 * 60, 5 * H),))
    transition = datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
    assert not schedule.contains(datetime(2026, 3, 29, 0, 59, 59, tzinfo=UTC), MADRID)
    assert schedule.contains(transition, MADRID)
    # Business hours stay 08:00-18:00 local on both sides of the change.
    hours = WeeklySchedule(windows=tuple(WeeklyWindow(d, 8 * H, 18 * H) for d in (6, 7)))
    assert hours.contains(datetime(2026, 3, 28, 7, 0, tzinfo=UTC), MADRID)  # 08:00 CET
    assert not hours.contains(datetime(2026, 3, 29, 5, 59, tzinfo=UTC), MADRID)  # 07:59 CEST
    assert hours.contains(datetime(2026, 3, 29, 6, 0, tzinfo=UTC), MADRID)  # 08:00 CEST
    assert not hours.contains(datetime(2026, 3, 29, 16, 0, tzinfo=UTC), MADRID)  # 18:00 CEST


def test_fall_back_a_window_covers_both_occurrences_of_the_repeated_hour() -> None:
    # 2026-10-25 (Sunday): Madrid goes from 03:00 CEST back to 02:00 CET.
    schedule = WeeklySchedule(windows=(WeeklyWindow(7, 2 * H, 2 * H + 30 * 60),))
    first = datetime(2026, 10, 25, 0, 15, tzinfo=UTC)  # 02:15 CEST
    second = datetime(2026, 10, 25, 1, 15, tzinfo=UTC)  # 02:15 CET
    assert first.astimezone(MADRID).fold == 0
    assert second.astimezone(MADRID).fold == 1
    assert schedule.contains(first, MADRID)
    assert schedule.contains(second, MADRID)
    assert not schedule.contains(datetime(2026, 10, 25, 1, 45, tzinfo=UTC), MADRID)


def test_time_of_day_ranges() -> None:
    assert time_of_day(8, 30, 0, 0, end=False) == 8 * H + 1800
    assert time_of_day(24, 0, 0, 0, end=True) == DAY
    assert time_of_day(24, 0, 0, 0, end=False) is None
    assert time_of_day(23, 60, 0, 0, end=False) is None
    assert time_of_day(-1, 0, 0, 0, end=False) is None
    assert time_of_day(25, 0, 0, 0, end=True) is None


def test_zones_must_be_iana_names() -> None:
    assert load_zone("Europe/Madrid") is not None
    assert load_zone("Mars/Olympus") is None
    assert load_zone("") is None
    assert load_zone("../../etc/passwd") is None


def test_overlapping_windows_are_named_one_by_one() -> None:
    problems = schedule_problems(
        WeeklySchedule(
            windows=(
                WeeklyWindow(1, 8 * H, 12 * H),
                WeeklyWindow(1, 11 * H, 13 * H),
                WeeklyWindow(1, 22 * H, 6 * H),  # overnight into Tuesday
                WeeklyWindow(2, 5 * H, 7 * H),
                WeeklyWindow(7, 23 * H, 1 * H),  # Sunday night into Monday 00:00-01:00
                WeeklyWindow(3, 8 * H, 9 * H),
            )
        ),
        "grant.schedule",
    )
    fields = [problem.field for problem in problems]
    assert fields == [
        "grant.schedule.windows[1]",
        "grant.schedule.windows[3]",
    ]
    wrap = schedule_problems(
        WeeklySchedule(windows=(WeeklyWindow(7, 23 * H, 1 * H), WeeklyWindow(1, 0, H))), "s"
    )
    assert [problem.field for problem in wrap] == ["s.windows[1]"]


def test_two_holidays_on_one_date_and_overlapping_holiday_windows() -> None:
    problems = schedule_problems(
        WeeklySchedule(
            holidays=(
                Holiday(date(2026, 12, 25), (DayWindow(8 * H, 10 * H), DayWindow(9 * H, 11 * H))),
                Holiday(date(2026, 12, 25)),
            )
        ),
        "s",
    )
    assert [problem.field for problem in problems] == [
        "s.holidays[0].windows[1]",
        "s.holidays[1].date",
    ]


def test_door_modes_require_or_forbid_windows() -> None:
    empty = WeeklySchedule()
    some = WeeklySchedule(windows=weekdays(8 * H, 18 * H))
    assert door_schedule_problems(None, empty, "schedule")[0].field == "schedule.mode"
    assert door_schedule_problems(DoorScheduleMode.PIN_ANYTIME, some, "schedule")
    assert door_schedule_problems(DoorScheduleMode.PIN_DURING_WINDOWS, empty, "schedule")
    assert not door_schedule_problems(DoorScheduleMode.UNLOCKED_DURING_WINDOWS, some, "schedule")
    assert not door_schedule_problems(DoorScheduleMode.PIN_ANYTIME, empty, "schedule")


@pytest.mark.parametrize(
    ("mode", "inside_pin", "inside_unlocked"),
    [
        (DoorScheduleMode.PIN_ANYTIME, (True, True), (False, False)),
        (DoorScheduleMode.PIN_DURING_WINDOWS, (True, False), (False, False)),
        (DoorScheduleMode.UNLOCKED_DURING_WINDOWS, (True, True), (True, False)),
    ],
)
def test_door_modes(
    mode: DoorScheduleMode, inside_pin: tuple[bool, bool], inside_unlocked: tuple[bool, bool]
) -> None:
    windows = () if mode is DoorScheduleMode.PIN_ANYTIME else weekdays(8 * H, 18 * H)
    door = DoorSchedule("b", "d", mode, WeeklySchedule(windows=windows))
    during, outside = local(2026, 11, 30, 9, 0), local(2026, 11, 30, 20, 0)
    assert (door.admits_pin(during, MADRID), door.admits_pin(outside, MADRID)) == inside_pin
    assert (
        door.held_unlocked(during, MADRID),
        door.held_unlocked(outside, MADRID),
    ) == inside_unlocked
