"""Buildings: where devices live, whose clock local-time rules use, and whose policy says
when an alert should lock the doors."""

from __future__ import annotations

import functools
import zoneinfo
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from gatehouse.monitoring.domain.enums import AlertRule, Severity
from gatehouse.monitoring.domain.names import building_name

DEFAULT_DOOR_HELD_OPEN_THRESHOLD = timedelta(seconds=60)
DEFAULT_DEVICE_OFFLINE_THRESHOLD = timedelta(minutes=5)
SECONDS_PER_DAY = 24 * 3600
MAX_DISPLAY_NAME = 200


@functools.lru_cache(maxsize=512)
def _zone(name: str) -> zoneinfo.ZoneInfo | None:
    # Looked up once per name: zoneinfo reads the tz database from disk.
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return None


def is_time_zone(name: str) -> bool:
    """Whether `name` is an IANA time zone name this machine knows (`Europe/Madrid`)."""
    # ZoneInfo also accepts file-system-ish keys; the IANA names never start with a slash or
    # hold `..`, and refusing those keeps odd input away from the tz lookup.
    if not name or name.startswith("/") or ".." in name:
        return False
    return _zone(name) is not None


@dataclass(frozen=True, slots=True)
class WeeklyWindow:
    """[start, end) local time on `day` (ISO weekday, Monday=1), in seconds since midnight;
    `end <= start` means the window runs into the next day."""

    day: int
    start_second: int
    end_second: int

    def contains(self, weekday: int, second: int) -> bool:
        if self.end_second > self.start_second:
            return weekday == self.day and self.start_second <= second < self.end_second
        next_day = self.day % 7 + 1
        return (weekday == self.day and second >= self.start_second) or (
            weekday == next_day and second < self.end_second
        )


@dataclass(frozen=True, slots=True)
class LockdownPolicy:
    enabled: bool = False
    min_severity: Severity = Severity.UNSPECIFIED
    rules: tuple[AlertRule, ...] = ()

    def matches(self, severity: Severity, rule: AlertRule) -> bool:
        """Whether an alert of this severity and rule should lock the building down."""
        if not self.enabled:
            return False
        floor = self.min_severity or Severity.CRITICAL
        return severity >= floor and (not self.rules or rule in self.rules)


@dataclass(frozen=True, slots=True)
class AlertRuleSettings:
    door_held_open_threshold: timedelta | None = None
    device_offline_threshold: timedelta | None = None
    occupied_hours: tuple[WeeklyWindow, ...] = ()
    motion_alert_zones: tuple[str, ...] = ()

    @property
    def held_open_threshold(self) -> timedelta:
        return self.door_held_open_threshold or DEFAULT_DOOR_HELD_OPEN_THRESHOLD

    @property
    def offline_threshold(self) -> timedelta:
        return self.device_offline_threshold or DEFAULT_DEVICE_OFFLINE_THRESHOLD

    def watches_zone(self, zone: str) -> bool:
        return not self.motion_alert_zones or zone in self.motion_alert_zones


@dataclass(frozen=True, slots=True)
class EmergencyState:
    """As access last reported it (`emergency.triggered` / `emergency.cleared`)."""

    active: bool = False
    kind: str = ""
    start_time: datetime | None = None
    trigger_event_id: str = ""


@dataclass(slots=True)
class Building:
    id: str
    display_name: str
    time_zone: str
    create_time: datetime
    # google.type.PostalAddress in its JSON mapping: nothing here reads inside it.
    address: Mapping[str, object] = field(default_factory=dict)
    lockdown_policy: LockdownPolicy = field(default_factory=LockdownPolicy)
    alert_rule_settings: AlertRuleSettings = field(default_factory=AlertRuleSettings)
    emergency: EmergencyState = field(default_factory=EmergencyState)

    @property
    def name(self) -> str:
        return building_name(self.id)

    def is_occupied(self, at: datetime) -> bool:
        """Whether `at` falls in the building's occupied hours, in its own time zone. No
        windows means never occupied."""
        windows = self.alert_rule_settings.occupied_hours
        zone = _zone(self.time_zone)
        if not windows or zone is None:
            return False
        local = at.astimezone(zone)
        second = local.hour * 3600 + local.minute * 60 + local.second
        return any(window.contains(local.isoweekday(), second) for window in windows)


def window_problems(windows: Sequence[WeeklyWindow]) -> list[str]:
    """Human-readable problems of occupied-hours windows (empty when they are fine)."""
    problems = []
    for index, window in enumerate(windows):
        if not 1 <= window.day <= 7:
            problems.append(f"occupied_hours[{index}].day: is required")
        if not 0 <= window.start_second < SECONDS_PER_DAY:
            problems.append(f"occupied_hours[{index}].start_time: must be a time of day")
        if not 0 <= window.end_second <= SECONDS_PER_DAY:
            problems.append(f"occupied_hours[{index}].end_time: must be a time of day or 24:00")
    return problems
