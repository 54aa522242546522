"""Feed presentation and filters, ListDevices filters, page tokens."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gatehouse.access.v1 import events_pb2 as access_events
from gatehouse.common.v1 import common_pb2
from gatehouse.monitoring.domain.enums import Severity
from gatehouse.monitoring.handlers.common import PageTokens
from gatehouse.monitoring.handlers.devices import parse_filter
from gatehouse.monitoring.handlers.feed import (
    FeedItemCache,
    StreamCounter,
    building_of_payload,
    feed_item,
    parse_event_types,
)
from gatehouse.monitoring.handlers.ports import LabelCondition
from gatehouse.monitoring.v1 import events_pb2, monitoring_pb2
from gatehouse.notifications.v1 import events_pb2 as notification_events
from gatehouse.runtime.errors import InvalidArgument, ResourceExhausted
from gatehouse.runtime.events import new_event
from gatehouse.runtime.secrets import KeyedSecretBox

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def test_event_type_filters() -> None:
    types = parse_event_types(["alert.triggered", "door.*"])
    assert types.matches("alert.triggered")
    assert types.matches("door.opened")
    assert not types.matches("alert.resolved")
    assert parse_event_types([]).matches("anything.at_all")
    for bad in (["alert"], ["*"], ["Alert.triggered"], ["alert..x"], ["alert.*.x"]):
        with pytest.raises(InvalidArgument) as raised:
            parse_event_types(bad)
        assert raised.value.reason == "INVALID_EVENT_TYPE"


def test_feed_items_carry_severity_and_summary() -> None:
    denied = new_event(
        "access.denied",
        source="access",
        subject="buildings/b1/doors/main",
        data=access_events.AccessDenied(door="buildings/b1/doors/main", building="buildings/b1"),
    )
    item = feed_item(denied)
    assert (item.id, item.type, item.source, item.subject) == (
        denied.id,
        "access.denied",
        "access",
        "buildings/b1/doors/main",
    )
    assert item.severity == int(Severity.LOW)
    assert item.summary == "Access denied at main"
    assert item.data == denied.data
    offline = new_event(
        "camera.offline",
        source="monitoring",
        subject="buildings/b1/devices/c",
        data=events_pb2.CameraOffline(device="buildings/b1/devices/c", display_name="Lobby 2"),
    )
    assert feed_item(offline).summary == "Camera 'Lobby 2' went offline"
    assert feed_item(offline).severity == int(Severity.MEDIUM)


def test_the_building_an_event_concerns() -> None:
    denied = new_event(
        "access.denied",
        source="access",
        subject="buildings/b1/doors/main",
        data=access_events.AccessDenied(building="buildings/b1"),
    )
    assert building_of_payload(denied, access_events.AccessDenied(building="buildings/b1")) == "b1"
    failed = notification_events.NotificationFailed(related_resource="buildings/b7/alerts/a")
    envelope = new_event("notification.failed", source="n", subject="notifications/1", data=failed)
    assert building_of_payload(envelope, failed) == "b7"
    unrelated = notification_events.NotificationFailed(related_resource="payments/p1")
    assert building_of_payload(envelope, unrelated) is None


def test_feed_items_are_built_once_per_event() -> None:
    cache = FeedItemCache(size=2)
    events = [
        new_event(
            "alert.resolved",
            source="monitoring",
            subject=f"buildings/b/alerts/{i}",
            data=events_pb2.AlertResolved(severity=common_pb2.SEVERITY_MEDIUM),
        )
        for i in range(3)
    ]
    first = cache.response(events[0])
    assert cache.response(events[0]) is first
    cache.response(events[1])
    cache.response(events[2])
    assert cache.response(events[0]) is not first  # evicted, rebuilt
    assert isinstance(first, monitoring_pb2.StreamEventsResponse)


def test_stream_counter() -> None:
    counter = StreamCounter(limit=1)
    with counter.hold("users/a"):
        with pytest.raises(ResourceExhausted) as raised, counter.hold("users/a"):
            pass
        assert raised.value.reason == "TOO_MANY_STREAMS"
        with counter.hold("users/b"):
            pass
    with counter.hold("users/a"):
        pass


def test_device_filters() -> None:
    assert parse_filter("") == ()
    assert parse_filter('labels.zone = "lobby" AND firmware_version != 2.4.1') == (
        LabelCondition("labels.zone", True, "lobby"),
        LabelCondition("firmware_version", False, "2.4.1"),
    )
    assert parse_filter(r'labels.note = "say \"hi\""') == (
        LabelCondition("labels.note", True, 'say "hi"'),
    )
    for bad in (
        "zone = x",
        "labels.zone > 3",
        'labels.zone = "a" OR labels.zone = "b"',
        "x" * 2000,
    ):
        with pytest.raises(InvalidArgument) as raised:
            parse_filter(bad)
        assert raised.value.reason == "INVALID_FILTER"


def test_page_tokens_are_bound_and_tamper_proof() -> None:
    tokens = PageTokens(KeyedSecretBox(b"k" * 32), "devices")
    token = tokens.make(["Lobby", "01ABC"], "filters-1", NOW)
    assert tokens.read(token, "filters-1", NOW) == ["Lobby", "01ABC"]
    assert tokens.read("", "filters-1", NOW) is None
    for bad_token, filters, when in (
        (token, "filters-2", NOW),
        (token[:-1] + ("0" if token[-1] != "0" else "1"), "filters-1", NOW),
        (token, "filters-1", NOW + timedelta(days=2)),
        ("garbage", "filters-1", NOW),
    ):
        with pytest.raises(InvalidArgument) as raised:
            tokens.read(bad_token, filters, when)
        assert raised.value.reason == "INVALID_PAGE_TOKEN"
    other = PageTokens(KeyedSecretBox(b"x" * 32), "devices")
    with pytest.raises(InvalidArgument):
        other.read(token, "filters-1", NOW)
