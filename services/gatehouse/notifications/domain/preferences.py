"""A user's notification preferences: opt-outs and addresses per channel, quiet hours in
their own time zone, marketing consent, preferred locale."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gatehouse.notifications.domain.addresses import Address, Channel

INVALID_TIME_ZONE = "INVALID_TIME_ZONE"
INVALID_QUIET_HOURS = "INVALID_QUIET_HOURS"


class QuietHoursError(ValueError):
    def __init__(self, reason: str, description: str) -> None:
        super().__init__(description)
        self.reason = reason
        self.description = description


def zone(name: str) -> ZoneInfo:
    if not name or name != name.strip() or ".." in name or name.startswith("/"):
        raise QuietHoursError(INVALID_TIME_ZONE, "must be an IANA time zone, e.g. Europe/Madrid")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise QuietHoursError(
            INVALID_TIME_ZONE, "must be an IANA time zone, e.g. Europe/Madrid"
        ) from None


@dataclass(frozen=True, slots=True)
class QuietHours:
    """A daily window [start, end) in local time; start after end spans midnight."""

    start: time
    end: time
    time_zone: str

    def __post_init__(self) -> None:
        zone(self.time_zone)
        if self.start == self.end:
            raise QuietHoursError(INVALID_QUIET_HOURS, "start and end must differ")

    def _inside(self, local: time) -> bool:
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end

    def release_time(self, now: datetime) -> datetime | None:
        """When the window that `now` falls in ends (UTC-aware), or None outside it.

        Daylight saving is followed: the end is the wall-clock time in the zone on the day
        it falls, so a 22:00-07:00 window ends at 07:00 local even on the night the clocks
        change."""
        tz = zone(self.time_zone)
        local = now.astimezone(tz)
        if not self._inside(local.time().replace(tzinfo=None)):
            return None
        end_day = local.date()
        if self.start > self.end and local.time().replace(tzinfo=None) >= self.start:
            end_day = end_day + timedelta(days=1)
        end_local = datetime.combine(end_day, self.end, tzinfo=tz)
        released = end_local.astimezone(now.tzinfo)
        # A local time skipped by a DST jump could land at or before now; never hold for ever.
        return released if released > now else now + timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class ChannelPreference:
    channel: Channel
    opted_out: bool = False
    address: Address | None = None


@dataclass(frozen=True, slots=True)
class Preferences:
    user: str  # `users/{id}`
    channels: tuple[ChannelPreference, ...] = ()
    quiet_hours: QuietHours | None = None
    marketing_opt_in: bool = False
    preferred_locale: str = ""
    version: int = 0  # 0: defaults never saved
    update_time: datetime | None = None

    @property
    def name(self) -> str:
        return f"{self.user}/notificationPreferences"

    @property
    def etag(self) -> str:
        return f'"prefs/{self.version}"'

    def for_channel(self, channel: Channel) -> ChannelPreference:
        for preference in self.channels:
            if preference.channel is channel:
                return preference
        return ChannelPreference(channel)


@dataclass(frozen=True, slots=True)
class PreferencesPatch:
    """SetPreferences input: the fields named in `fields` (all when empty) replace ours."""

    channels: tuple[ChannelPreference, ...] = ()
    quiet_hours: QuietHours | None = None
    marketing_opt_in: bool = False
    preferred_locale: str = ""
    fields: frozenset[str] = field(default_factory=frozenset)


WRITABLE_FIELDS = frozenset({"channels", "quiet_hours", "marketing_opt_in", "preferred_locale"})


def apply_patch(current: Preferences, patch: PreferencesPatch, now: datetime) -> Preferences:
    names = patch.fields or WRITABLE_FIELDS
    return Preferences(
        user=current.user,
        channels=patch.channels if "channels" in names else current.channels,
        quiet_hours=patch.quiet_hours if "quiet_hours" in names else current.quiet_hours,
        marketing_opt_in=(
            patch.marketing_opt_in if "marketing_opt_in" in names else current.marketing_opt_in
        ),
        preferred_locale=(
            patch.preferred_locale if "preferred_locale" in names else current.preferred_locale
        ),
        version=current.version + 1,
        update_time=now,
    )


def same_settings(a: Preferences, b: Preferences) -> bool:
    return (a.channels, a.quiet_hours, a.marketing_opt_in, a.preferred_locale) == (
        b.channels,
        b.quiet_hours,
        b.marketing_opt_in,
        b.preferred_locale,
    )
