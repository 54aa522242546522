"""Reading validation and the token bucket that paces device streams."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from gatehouse.monitoring.domain.enums import ReadingRejectionReason as Why
from gatehouse.monitoring.domain.readings import Reading, screen
from gatehouse.monitoring.domain.throttle import TokenBucket

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def test_screen_accepts_good_readings_in_any_order() -> None:
    readings = [
        Reading("temperature_celsius", 20.0, NOW - timedelta(minutes=1)),
        Reading("temperature_celsius", 19.0, NOW - timedelta(minutes=5)),
        Reading("door_open", 1.0, NOW - timedelta(days=6, hours=23)),
    ]
    screened = screen(readings, NOW)
    assert [index for index, _ in screened.accepted] == [0, 1, 2]
    assert screened.rejected == ()


def test_screen_rejects_with_reasons() -> None:
    readings = [
        Reading("temperature_celsius", 20.0, NOW),
        Reading("temperature_celsius", 21.0, NOW),  # same metric and time
        Reading("temperature_celsius", 1.0, NOW + timedelta(minutes=6)),
        Reading("temperature_celsius", 1.0, NOW - timedelta(days=8)),
        Reading("temperature_celsius", 1.0, None),
        Reading("temperature_celsius", math.nan, NOW),
        Reading("temperature_celsius", -math.inf, NOW),
        Reading("Temperature", 1.0, NOW),
        Reading("a" * 64, 1.0, NOW),
        Reading("with space", 1.0, NOW),
        Reading("humidity_percent", 1.0, NOW - timedelta(seconds=1)),  # already stored
    ]
    stored = {("humidity_percent", NOW - timedelta(seconds=1))}
    screened = screen(readings, NOW, stored)
    assert [index for index, _ in screened.accepted] == [0]
    assert [(r.index, r.reason) for r in screened.rejected] == [
        (1, Why.DUPLICATE),
        (2, Why.TIME_IN_FUTURE),
        (3, Why.TIME_TOO_OLD),
        (4, Why.TIME_TOO_OLD),
        (5, Why.VALUE_NOT_FINITE),
        (6, Why.VALUE_NOT_FINITE),
        (7, Why.INVALID_METRIC),
        (8, Why.INVALID_METRIC),
        (9, Why.INVALID_METRIC),
        (10, Why.DUPLICATE),
    ]


def test_bucket_lets_a_burst_through_then_paces() -> None:
    bucket = TokenBucket(rate=10.0, burst=3.0, now=0.0)
    assert [bucket.take(1, 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(1, 0.0) == 0.1
    assert bucket.throttled_for == 0.1


def test_bucket_measures_sustained_pressure() -> None:
    bucket = TokenBucket(rate=10.0, burst=1.0, now=0.0)
    now = 0.0
    for _ in range(50):
        now += bucket.take(1, now)  # the caller waits as told, and comes right back
    assert bucket.throttled_for > 4.0
    # A pause long enough to refill ends the streak.
    assert bucket.take(1, now + 1.0) == 0.0
    assert bucket.throttled_for == 0.0
