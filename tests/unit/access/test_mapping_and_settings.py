"""Proto <-> domain mapping (schedules, the entry hash, field problems) and the settings."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import pytest
from google.type import date_pb2, timeofday_pb2

from gatehouse.access import mapping
from gatehouse.access.domain.chain import Decision, EntryKind, LogEntry
from gatehouse.access.domain.grants import Actor, DenyReason
from gatehouse.access.domain.schedules import DayWindow, Holiday, WeeklySchedule, WeeklyWindow
from gatehouse.access.settings import load_access_settings
from gatehouse.access.v1 import access_pb2
from gatehouse.runtime.config import ConfigurationError
from gatehouse.runtime.errors import InvalidArgument

H = 3600


def test_a_schedule_survives_proto_and_json_round_trips() -> None:
    schedule = WeeklySchedule(
        "Europe/Madrid",
        (WeeklyWindow(1, 8 * H, 18 * H), WeeklyWindow(5, 22 * H, 86_400)),
        (Holiday(date(2026, 12, 25), (DayWindow(10 * H, 12 * H),), "Christmas"),),
    )
    assert mapping.schedule_from_json(mapping.schedule_json(schedule)) == schedule
    problems = mapping.Problems()
    parsed = mapping.parse_schedule(mapping.schedule_proto(schedule, "UTC"), "s", problems)
    assert problems.violations == []
    assert parsed == schedule


def test_malformed_schedule_parts_are_reported_each() -> None:
    message = access_pb2.WeeklySchedule(
        time_zone="Nowhere/Land",
        windows=[
            access_pb2.WeeklyWindow(
                day=8,
                start_time=timeofday_pb2.TimeOfDay(hours=25),
                end_time=timeofday_pb2.TimeOfDay(hours=9),
            )
        ],
        holidays=[access_pb2.HolidayException(date=date_pb2.Date(year=2026, month=2, day=30))],
    )
    problems = mapping.Problems()
    mapping.parse_schedule(message, "grant.schedule", problems)
    assert [v.field for v in problems.violations] == [
        "grant.schedule.time_zone",
        "grant.schedule.windows[0].day",
        "grant.schedule.windows[0].start_time",
        "grant.schedule.holidays[0].date",
    ]
    # The first specific reason names the error.
    assert problems.reason == "UNKNOWN_TIME_ZONE"
    with pytest.raises(InvalidArgument) as raised:
        problems.raise_if_any()
    assert raised.value.reason == "UNKNOWN_TIME_ZONE"


def test_the_entry_hash_covers_every_field_and_ignores_its_own() -> None:
    entry = LogEntry(
        id="01J0000000000000000000000A",
        building_id="b1",
        sequence=7,
        kind=EntryKind.PIN_ATTEMPT,
        time=datetime(2026, 11, 30, 9, 0, 0, 123456, tzinfo=UTC),
        event_id="01J0000000000000000000000B",
        door_id="main",
        decision=Decision.DENIED,
        deny_reason=DenyReason.WRONG_DOOR,
        grant_id="g1",
        holder="users/ana",
        actor=Actor(service="spiffe://gatehouse/buildings/b1/devices/d1"),
        previous_hash=b"p" * 32,
    )
    digest = mapping.entry_hash(entry)
    assert len(digest) == 32
    assert mapping.entry_hash(replace(entry, entry_hash=b"x" * 32)) == digest
    for changed in (
        replace(entry, holder="users/mallory"),
        replace(entry, sequence=8),
        replace(entry, time=entry.time + timedelta(microseconds=1)),
        replace(entry, previous_hash=b"q" * 32),
        replace(entry, deny_reason=DenyReason.EXPIRED),
    ):
        assert mapping.entry_hash(changed) != digest, changed
    proto = mapping.entry_proto(entry)
    assert proto.name == "buildings/b1/accessLogs/01J0000000000000000000000A"
    assert proto.door == "buildings/b1/doors/main"
    assert proto.grant == "buildings/b1/grants/g1"


def test_settings_read_plain_seconds_and_refuse_nonsense(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEHOUSE_ACCESS_LOCKOUT_WINDOW", "90")
    monkeypatch.setenv("GATEHOUSE_ACCESS_PIN_LENGTH", "8")
    settings = load_access_settings(_env_file=None)
    assert settings.lockout_window == timedelta(seconds=90)
    assert settings.pin_length == 8
    monkeypatch.setenv("GATEHOUSE_ACCESS_PIN_LENGTH", "5")
    with pytest.raises(ConfigurationError, match="GATEHOUSE_ACCESS_PIN_LENGTH"):
        load_access_settings(_env_file=None)
    monkeypatch.setenv("GATEHOUSE_ACCESS_PIN_LENGTH", "6")
    monkeypatch.setenv("GATEHOUSE_ACCESS_LOCKOUT_DURATION", "0")
    with pytest.raises(ConfigurationError, match="lockout_duration must be positive"):
        load_access_settings(_env_file=None)
