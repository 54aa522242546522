"""Proto <-> domain for the access service, and the access log's entry hash.

Parsing functions collect every problem as a field violation and never raise half-way, so a
request is refused as a whole (nothing is written for a refused request).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime

from google.protobuf import timestamp_pb2
from google.type import date_pb2, timeofday_pb2

from gatehouse.access.domain import names
from gatehouse.access.domain.chain import LogEntry
from gatehouse.access.domain.emergency import Emergency
from gatehouse.access.domain.grants import Actor, Grant
from gatehouse.access.domain.schedules import (
    DayWindow,
    DoorSchedule,
    Holiday,
    WeeklySchedule,
    WeeklyWindow,
    load_zone,
    time_of_day,
)
from gatehouse.access.domain.visitors import Visitor
from gatehouse.access.v1 import access_pb2
from gatehouse.common.v1 import common_pb2
from gatehouse.runtime.errors import FieldViolation, InvalidArgument
from gatehouse.runtime.identity import Caller

INVALID_SCHEDULE = "INVALID_SCHEDULE"
UNKNOWN_TIME_ZONE = "UNKNOWN_TIME_ZONE"
INVALID_FIELD = "INVALID_FIELD"


@dataclass
class Problems:
    """Field violations gathered while parsing; the first specific reason names the error."""

    violations: list[FieldViolation] = field(default_factory=list)
    reason: str = ""

    def add(self, field_path: str, description: str, reason: str = INVALID_FIELD) -> None:
        self.violations.append(FieldViolation(field_path, description))
        if not self.reason or (self.reason == INVALID_FIELD and reason != INVALID_FIELD):
            self.reason = reason

    def extend(self, violations: Sequence[FieldViolation], reason: str) -> None:
        for violation in violations:
            self.add(violation.field, violation.description, reason)

    def raise_if_any(self) -> None:
        if self.violations:
            raise InvalidArgument(self.violations, reason=self.reason or INVALID_FIELD)


# --- times and actors ------------------------------------------------------------------------


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value.astimezone(UTC))
    return stamp


def from_timestamp(stamp: timestamp_pb2.Timestamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)


def actor_of(caller: Caller) -> Actor:
    return Actor(
        user=caller.user or "",
        service=caller.peer_spiffe_id or "",
        client_address=caller.client_address or "",
    )


def actor_proto(actor: Actor | None) -> common_pb2.Actor | None:
    if actor is None:
        return None
    return common_pb2.Actor(
        user=actor.user, service=actor.service, client_address=actor.client_address
    )


def actor_json(actor: Actor | None) -> str | None:
    if actor is None:
        return None
    return json.dumps(
        {"user": actor.user, "service": actor.service, "client_address": actor.client_address},
        separators=(",", ":"),
    )


def actor_from_json(text: str | None) -> Actor | None:
    if text is None:
        return None
    data = json.loads(text)
    return Actor(
        user=data.get("user", ""),
        service=data.get("service", ""),
        client_address=data.get("client_address", ""),
    )


# --- schedules -------------------------------------------------------------------------------


def _seconds(value: timeofday_pb2.TimeOfDay, *, end: bool) -> int | None:
    return time_of_day(value.hours, value.minutes, value.seconds, value.nanos, end=end)


def _time_of_day(seconds: int) -> timeofday_pb2.TimeOfDay:
    return timeofday_pb2.TimeOfDay(
        hours=seconds // 3600, minutes=seconds % 3600 // 60, seconds=seconds % 60
    )


def _date(value: date_pb2.Date) -> date | None:
    if not (value.year and value.month and value.day):
        return None
    try:
        return date(value.year, value.month, value.day)
    except ValueError:
        return None


def parse_schedule(
    message: access_pb2.WeeklySchedule, prefix: str, problems: Problems
) -> WeeklySchedule:
    """A schedule with every malformed part reported (INVALID_SCHEDULE / UNKNOWN_TIME_ZONE)."""
    if message.time_zone and load_zone(message.time_zone) is None:
        problems.add(
            f"{prefix}.time_zone",
            "is not an IANA time zone name (e.g. Europe/Madrid)",
            UNKNOWN_TIME_ZONE,
        )
    windows: list[WeeklyWindow] = []
    for index, window in enumerate(message.windows):
        path = f"{prefix}.windows[{index}]"
        start = _seconds(window.start_time, end=False)
        end = _seconds(window.end_time, end=True)
        bad = False
        if not 1 <= window.day <= 7:
            problems.add(f"{path}.day", "is required (MONDAY to SUNDAY)", INVALID_SCHEDULE)
            bad = True
        if start is None:
            problems.add(f"{path}.start_time", "is not a time of day", INVALID_SCHEDULE)
            bad = True
        if end is None:
            problems.add(
                f"{path}.end_time", "is not a time of day (24:00 allowed)", INVALID_SCHEDULE
            )
            bad = True
        if not bad and start is not None and end is not None:
            windows.append(WeeklyWindow(window.day, start, end))
    holidays: list[Holiday] = []
    for index, holiday in enumerate(message.holidays):
        path = f"{prefix}.holidays[{index}]"
        day = _date(holiday.date)
        if day is None:
            problems.add(f"{path}.date", "must be a full date (year, month, day)", INVALID_SCHEDULE)
            continue
        day_windows: list[DayWindow] = []
        for number, day_window in enumerate(holiday.windows):
            start = _seconds(day_window.start_time, end=False)
            end = _seconds(day_window.end_time, end=True)
            if start is None or end is None:
                problems.add(
                    f"{path}.windows[{number}]", "is not a valid time range", INVALID_SCHEDULE
                )
                continue
            day_windows.append(DayWindow(start, end))
        if len(holiday.display_name) > 200:
            problems.add(f"{path}.display_name", "must be at most 200 characters")
        holidays.append(Holiday(day, tuple(day_windows), holiday.display_name))
    return WeeklySchedule(message.time_zone, tuple(windows), tuple(holidays))


def schedule_proto(schedule: WeeklySchedule, zone: str) -> access_pb2.WeeklySchedule:
    return access_pb2.WeeklySchedule(
        time_zone=schedule.time_zone or zone,
        windows=[
            access_pb2.WeeklyWindow(
                day=window.day,
                start_time=_time_of_day(window.start),
                end_time=_time_of_day(window.end),
            )
            for window in schedule.windows
        ],
        holidays=[
            access_pb2.HolidayException(
                date=date_pb2.Date(
                    year=holiday.date.year, month=holiday.date.month, day=holiday.date.day
                ),
                windows=[
                    access_pb2.DayWindow(
                        start_time=_time_of_day(window.start), end_time=_time_of_day(window.end)
                    )
                    for window in holiday.windows
                ],
                display_name=holiday.display_name,
            )
            for holiday in schedule.holidays
        ],
    )


def schedule_json(schedule: WeeklySchedule) -> str:
    return json.dumps(
        {
            "z": schedule.time_zone,
            "w": [[w.day, w.start, w.end] for w in schedule.windows],
            "h": [
                [h.date.isoformat(), [[w.start, w.end] for w in h.windows], h.display_name]
                for h in schedule.holidays
            ],
        },
        separators=(",", ":"),
    )


def schedule_from_json(text: str) -> WeeklySchedule:
    data = json.loads(text)
    return WeeklySchedule(
        time_zone=data["z"],
        windows=tuple(WeeklyWindow(day, start, end) for day, start, end in data["w"]),
        holidays=tuple(
            Holiday(date.fromisoformat(day), tuple(DayWindow(s, e) for s, e in windows), label)
            for day, windows, label in data["h"]
        ),
    )


def door_schedule_proto(schedule: DoorSchedule, zone: str) -> access_pb2.DoorSchedule:
    return access_pb2.DoorSchedule(
        name=names.schedule_name(schedule.building_id, schedule.door_id),
        mode=int(schedule.mode),  # type: ignore[arg-type]
        weekly_schedule=schedule_proto(schedule.schedule, zone),
        etag=schedule.etag,
        update_time=timestamp(schedule.update_time),
        updated_by=actor_proto(actor_from_json(schedule.updated_by or None)),
    )


# --- grants, visitors, emergencies -----------------------------------------------------------


def grant_proto(grant: Grant, now: datetime, zone: str) -> access_pb2.Grant:
    validity = common_pb2.TimeRange(
        start_time=timestamp(grant.valid_from), end_time=timestamp(grant.valid_until)
    )
    return access_pb2.Grant(
        name=names.grant_name(grant.building_id, grant.id),
        holder=grant.holder,
        display_name=grant.display_name,
        doors=[names.door_name(grant.building_id, door) for door in grant.doors],
        validity=validity,
        schedule=None if grant.schedule is None else schedule_proto(grant.schedule, zone),
        max_uses=grant.max_uses,
        use_count=grant.use_count,
        state=int(grant.state(now)),  # type: ignore[arg-type]
        create_time=timestamp(grant.create_time),
        issued_by=actor_proto(grant.issued_by),
        last_use_time=timestamp(grant.last_use_time),
        revoke_time=timestamp(grant.revoke_time),
        revoked_by=actor_proto(grant.revoked_by),
        revoke_reason=grant.revoke_reason,
    )


def visitor_proto(visitor: Visitor, now: datetime) -> access_pb2.Visitor:
    return access_pb2.Visitor(
        name=names.visitor_name(visitor.building_id, visitor.id),
        display_name=visitor.display_name,
        company=visitor.company,
        host=visitor.host,
        expected_arrival_time=timestamp(visitor.expected_arrival_time),
        expected_departure_time=timestamp(visitor.expected_departure_time),
        doors=[names.door_name(visitor.building_id, door) for door in visitor.doors],
        note=visitor.note,
        state=int(visitor.state(now)),  # type: ignore[arg-type]
        invitation_expire_time=timestamp(visitor.invitation_expire_time),
        grant=names.grant_name(visitor.building_id, visitor.grant_id) if visitor.grant_id else "",
        check_in_time=timestamp(visitor.check_in_time),
        check_out_time=timestamp(visitor.check_out_time),
        create_time=timestamp(visitor.create_time),
        registered_by=actor_proto(visitor.registered_by),
    )


def emergency_proto(emergency: Emergency | None, building_id: str) -> access_pb2.Emergency:
    if emergency is None:
        return access_pb2.Emergency(name=names.emergency_name(building_id))
    return access_pb2.Emergency(
        name=names.emergency_name(building_id),
        active=emergency.active,
        mode=int(emergency.mode),  # type: ignore[arg-type]
        reason=emergency.reason,
        triggered_by=actor_proto(emergency.triggered_by),
        trigger_time=timestamp(emergency.trigger_time),
        source_alert=emergency.source_alert,
        cleared_by=actor_proto(emergency.cleared_by),
        clear_time=timestamp(emergency.clear_time),
        clear_reason=emergency.clear_reason,
    )


# --- the access log --------------------------------------------------------------------------


def entry_proto(entry: LogEntry) -> access_pb2.AccessLogEntry:
    building = entry.building_id
    return access_pb2.AccessLogEntry(
        name=names.log_entry_name(building, entry.id),
        sequence_number=entry.sequence,
        kind=int(entry.kind),  # type: ignore[arg-type]
        time=timestamp(entry.time),
        door=names.door_name(building, entry.door_id) if entry.door_id else "",
        decision=int(entry.decision),  # type: ignore[arg-type]
        deny_reason=int(entry.deny_reason) if entry.deny_reason else 0,  # type: ignore[arg-type]
        grant=names.grant_name(building, entry.grant_id) if entry.grant_id else "",
        holder=entry.holder,
        actor=actor_proto(entry.actor),
        reason=entry.reason,
        emergency_mode=entry.emergency_mode,  # type: ignore[arg-type]
        event_id=entry.event_id,
        previous_hash=entry.previous_hash,
        entry_hash=entry.entry_hash,
    )


def entry_hash(entry: LogEntry) -> bytes:
    """The contract's hash: SHA-256 of the deterministic serialization, `entry_hash` empty."""
    message = entry_proto(replace(entry, entry_hash=b""))
    return hashlib.sha256(message.SerializeToString(deterministic=True)).digest()
