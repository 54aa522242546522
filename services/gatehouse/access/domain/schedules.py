"""Weekly schedules in a building's wall-clock time, with holiday exceptions.

A window is kept as (start, length) in seconds of local wall-clock time; it belongs to the date
it starts on. Whether an instant is inside is decided on the wall-clock reading of the instant
in the schedule's zone, which gives the contract's DST rules with no special case: on the day
clocks go forward no instant reads as a time in the skipped hour, so a boundary there takes
effect at the first instant after it (the transition); on the day they go back both instants
that read 02:30 compare as 02:30, so a window covers both occurrences of the repeated hour.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gatehouse.runtime.errors import FieldViolation

DAY = 86_400
WEEK = 7 * DAY
_DAY_NAMES = ("", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def load_zone(name: str) -> ZoneInfo | None:
    """The IANA zone, or None for a name that is not one (paths and empty names included)."""
    if not name or len(name) > 64 or name.startswith(("/", ".")) or ".." in name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def time_of_day(hours: int, minutes: int, seconds: int, nanos: int, *, end: bool) -> int | None:
    """Seconds since midnight for a google.type.TimeOfDay, or None when out of range.

    24:00 is accepted only as an end (end of day); nothing finer than a second is kept.
    """
    if end and (hours, minutes, seconds, nanos) == (24, 0, 0, 0):
        return DAY
    if not (0 <= hours <= 23 and 0 <= minutes <= 59 and 0 <= seconds <= 59):
        return None
    if not 0 <= nanos <= 999_999_999:
        return None
    return hours * 3600 + minutes * 60 + seconds


def span(start: int, end: int) -> int:
    """Length of [start, end) where an end not after the start means the next day."""
    return end - start if end > start else end + DAY - start


def clock(seconds: int) -> str:
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}"


@dataclass(frozen=True, slots=True)
class WeeklyWindow:
    """From `start` on ISO weekday `day` (1 = Monday) to `end`, in local seconds of day."""

    day: int
    start: int
    end: int

    @property
    def length(self) -> int:
        return span(self.start, self.end)


@dataclass(frozen=True, slots=True)
class DayWindow:
    start: int
    end: int

    @property
    def length(self) -> int:
        return span(self.start, self.end)


@dataclass(frozen=True, slots=True)
class Holiday:
    date: date
    windows: tuple[DayWindow, ...] = ()
    display_name: str = ""


@dataclass(frozen=True, slots=True)
class WeeklySchedule:
    """Windows in `time_zone` ("" = the building's zone, resolved by the caller)."""

    time_zone: str = ""
    windows: tuple[WeeklyWindow, ...] = ()
    holidays: tuple[Holiday, ...] = ()
    _by_date: dict[date, Holiday] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._by_date.update({holiday.date: holiday for holiday in self.holidays})

    def _starting_on(self, day: date) -> list[tuple[int, int]]:
        holiday = self._by_date.get(day)
        if holiday is not None:
            return [(window.start, window.length) for window in holiday.windows]
        weekday = day.isoweekday()
        return [(w.start, w.length) for w in self.windows if w.day == weekday]

    def contains(self, instant: datetime, zone: ZoneInfo) -> bool:
        """Whether `instant` (aware) lies inside a window, read in the schedule's own zone or,
        when it has none, in `zone` (the building's)."""
        local = instant.astimezone((load_zone(self.time_zone) if self.time_zone else None) or zone)
        today = local.date()
        second = local.hour * 3600 + local.minute * 60 + local.second
        if any(start <= second < start + length for start, length in self._starting_on(today)):
            return True
        yesterday = today - timedelta(days=1)
        return any(
            start <= second + DAY < start + length for start, length in self._starting_on(yesterday)
        )


class DoorScheduleMode(enum.IntEnum):
    """Numbered like the contract's DoorScheduleMode."""

    PIN_ANYTIME = 1
    PIN_DURING_WINDOWS = 2
    UNLOCKED_DURING_WINDOWS = 3


@dataclass(frozen=True, slots=True)
class DoorSchedule:
    building_id: str
    door_id: str
    mode: DoorScheduleMode = DoorScheduleMode.PIN_ANYTIME
    schedule: WeeklySchedule = field(default_factory=WeeklySchedule)
    etag: str = ""
    update_time: datetime | None = None
    updated_by: str = ""  # the Actor, serialized by the adapter
    # Whether the door's controller was last told to hold the door unlocked (business hours).
    held: bool = False

    def admits_pin(self, instant: datetime, zone: ZoneInfo) -> bool:
        """Whether the door takes PINs at `instant` (PIN_DURING_WINDOWS restricts them)."""
        if self.mode is DoorScheduleMode.PIN_DURING_WINDOWS:
            return self.schedule.contains(instant, zone)
        return True

    def held_unlocked(self, instant: datetime, zone: ZoneInfo) -> bool:
        return self.mode is DoorScheduleMode.UNLOCKED_DURING_WINDOWS and self.schedule.contains(
            instant, zone
        )


# --- validation ------------------------------------------------------------------------------


def _overlaps_on_circle(a: tuple[int, int], b: tuple[int, int], size: int) -> bool:
    (start_a, length_a), (start_b, length_b) = a, b
    return (start_b - start_a) % size < length_a or (start_a - start_b) % size < length_b


def weekly_window_problems(windows: tuple[WeeklyWindow, ...], prefix: str) -> list[FieldViolation]:
    """Overlaps between weekly windows (an overnight window overlaps the next day's too)."""
    problems: list[FieldViolation] = []
    placed = [((w.day - 1) * DAY + w.start, w.length) for w in windows]
    for index, window in enumerate(windows):
        for other in range(index):
            if _overlaps_on_circle(placed[index], placed[other], WEEK):
                problems.append(
                    FieldViolation(
                        f"{prefix}.windows[{index}]",
                        f"{_DAY_NAMES[window.day]} {clock(window.start)}-{clock(window.end)} "
                        f"overlaps windows[{other}]",
                    )
                )
                break
    return problems


def holiday_problems(holidays: tuple[Holiday, ...], prefix: str) -> list[FieldViolation]:
    problems: list[FieldViolation] = []
    seen: dict[date, int] = {}
    for index, holiday in enumerate(holidays):
        if holiday.date in seen:
            problems.append(
                FieldViolation(
                    f"{prefix}.holidays[{index}].date",
                    f"{holiday.date.isoformat()} already has holidays[{seen[holiday.date]}]",
                )
            )
        seen.setdefault(holiday.date, index)
        placed = [(window.start, window.length) for window in holiday.windows]
        for number, (start, length) in enumerate(placed):
            for other in range(number):
                other_start, other_length = placed[other]
                if start < other_start + other_length and other_start < start + length:
                    problems.append(
                        FieldViolation(
                            f"{prefix}.holidays[{index}].windows[{number}]",
                            f"overlaps windows[{other}]",
                        )
                    )
                    break
    return problems


def schedule_problems(schedule: WeeklySchedule, prefix: str) -> list[FieldViolation]:
    return weekly_window_problems(schedule.windows, prefix) + holiday_problems(
        schedule.holidays, prefix
    )


def door_schedule_problems(
    mode: DoorScheduleMode | None, schedule: WeeklySchedule, prefix: str
) -> list[FieldViolation]:
    problems: list[FieldViolation] = []
    if mode is None:
        problems.append(FieldViolation(f"{prefix}.mode", "is required"))
    elif mode is DoorScheduleMode.PIN_ANYTIME and schedule.windows:
        problems.append(
            FieldViolation(
                f"{prefix}.weekly_schedule.windows",
                "must be empty in DOOR_SCHEDULE_MODE_PIN_ANYTIME",
            )
        )
    elif mode is not DoorScheduleMode.PIN_ANYTIME and not schedule.windows:
        problems.append(
            FieldViolation(
                f"{prefix}.weekly_schedule.windows", "at least one window is required in this mode"
            )
        )
    return problems + schedule_problems(schedule, f"{prefix}.weekly_schedule")
