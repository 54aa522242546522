"""Keypad lockout and its expiry; the hash chain and its breaks; visitors' days."""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from gatehouse.access.domain.chain import (
    GENESIS_HASH,
    BreakKind,
    ChainHead,
    Checkpoint,
    EntryKind,
    LogEntry,
    sealed,
    verify,
)
from gatehouse.access.domain.grants import Actor
from gatehouse.access.domain.lockout import KeypadState, LockoutPolicy, record_failure
from gatehouse.access.domain.visitors import CheckInMethod, Visitor, VisitorState, end_of_local_day

NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
MADRID = ZoneInfo("Europe/Madrid")


# --- lockout ---------------------------------------------------------------------------------


def test_n_failures_within_the_window_lock_the_keypad_until_the_duration_passes() -> None:
    policy = LockoutPolicy(
        max_failures=3, window=timedelta(minutes=1), duration=timedelta(minutes=5)
    )
    state = KeypadState("b1", "main")
    outcomes = []
    for second in (0, 10, 20):
        outcome = record_failure(state, NOW + timedelta(seconds=second), policy)
        state = outcome.state
        outcomes.append((outcome.failed_attempts, outcome.lockout_started))
    assert outcomes == [(1, False), (2, False), (3, True)]
    assert state.locked(NOW + timedelta(seconds=20))
    assert state.locked(NOW + timedelta(minutes=5, seconds=19))
    assert not state.locked(NOW + timedelta(minutes=5, seconds=20))
    # After the lockout the count starts again.
    after = record_failure(state, NOW + timedelta(minutes=6), policy)
    assert (after.failed_attempts, after.lockout_started) == (1, False)


def test_failures_older_than_the_window_do_not_count() -> None:
    policy = LockoutPolicy(max_failures=2, window=timedelta(seconds=30))
    first = record_failure(KeypadState("b1", "main"), NOW, policy)
    later = record_failure(first.state, NOW + timedelta(seconds=30), policy)
    assert (later.failed_attempts, later.lockout_started) == (1, False)
    assert not later.state.locked(NOW + timedelta(seconds=30))


def test_policy_validation() -> None:
    with pytest.raises(ValueError, match="max_failures"):
        LockoutPolicy(max_failures=0)
    with pytest.raises(ValueError, match="positive"):
        LockoutPolicy(window=timedelta(0))


# --- the chain -------------------------------------------------------------------------------


def hasher(entry: LogEntry) -> bytes:
    return hashlib.sha256(repr(replace(entry, entry_hash=b"")).encode()).digest()


def chain(length: int) -> list[LogEntry]:
    head = ChainHead("b1")
    entries = []
    for number in range(length):
        entry, head = sealed(
            LogEntry(
                id=f"e{number + 1}",
                building_id="b1",
                sequence=0,
                kind=EntryKind.PIN_ATTEMPT,
                time=NOW + timedelta(seconds=number),
                event_id=f"ev{number + 1}",
                door_id="main",
                actor=Actor(service="spiffe://gatehouse/buildings/b1/devices/d1"),
            ),
            head,
            hasher,
        )
        entries.append(entry)
    return entries


def check(entries: list[LogEntry], *, start: int = 1, end: int | None = None, **kw: object):  # type: ignore[no-untyped-def]
    anchor = GENESIS_HASH if start == 1 else entries_by_seq(entries)[start - 1].entry_hash
    return verify(
        [entry for entry in entries if entry.sequence >= start],
        start=start,
        end=end if end is not None else max(entry.sequence for entry in entries),
        anchor=anchor,
        hasher=hasher,
        **kw,  # type: ignore[arg-type]
    )


def entries_by_seq(entries: list[LogEntry]) -> dict[int, LogEntry]:
    return {entry.sequence: entry for entry in entries}


def test_an_intact_chain_links_each_entry_to_the_one_before() -> None:
    entries = chain(5)
    assert [entry.sequence for entry in entries] == [1, 2, 3, 4, 5]
    assert entries[0].previous_hash == GENESIS_HASH
    assert all(b.previous_hash == a.entry_hash for a, b in itertools.pairwise(entries))
    report = check(entries)
    assert report.ok
    assert report.checked == 5
    assert report.head == Checkpoint(5, entries[-1].entry_hash)


def test_a_changed_entry_is_the_first_break() -> None:
    entries = chain(5)
    entries[2] = replace(entries[2], holder="users/mallory")
    report = check(entries)
    assert not report.ok
    assert report.first_break is not None
    assert (report.first_break.kind, report.first_break.sequence, report.first_break.entry_id) == (
        BreakKind.ENTRY_HASH_MISMATCH,
        3,
        "e3",
    )
    assert report.checked == 3


def test_a_rehashed_forgery_breaks_the_next_link() -> None:
    entries = chain(4)
    forged = replace(entries[1], holder="users/mallory", entry_hash=b"")
    entries[1] = replace(forged, entry_hash=hasher(forged))
    report = check(entries)
    assert report.first_break is not None
    assert (report.first_break.kind, report.first_break.sequence) == (
        BreakKind.PREVIOUS_HASH_MISMATCH,
        3,
    )


def test_a_deleted_entry_is_a_gap_and_a_cut_tail_is_truncation_against_a_checkpoint() -> None:
    entries = chain(5)
    report = check([entry for entry in entries if entry.sequence != 3], end=5)
    assert report.first_break is not None
    assert (report.first_break.kind, report.first_break.sequence) == (BreakKind.SEQUENCE_GAP, 3)
    cut = entries[:3]
    truncated = check(cut, end=5, checkpoint=Checkpoint(5, entries[4].entry_hash))
    assert truncated.first_break is not None
    assert (truncated.first_break.kind, truncated.first_break.sequence) == (
        BreakKind.TRUNCATED,
        4,
    )


def test_a_checkpoint_that_differs_and_a_range_anchored_in_the_middle() -> None:
    entries = chain(5)
    mismatch = check(entries, checkpoint=Checkpoint(2, b"x" * 32))
    assert mismatch.first_break is not None
    assert mismatch.first_break.kind is BreakKind.CHECKPOINT_MISMATCH
    middle = check(entries, start=3, end=4)
    assert middle.ok
    assert middle.checked == 2
    assert middle.head == Checkpoint(4, entries[3].entry_hash)


# --- visitors --------------------------------------------------------------------------------


def test_the_local_day_ends_at_local_midnight_even_on_a_dst_day() -> None:
    # 2026-10-25 has 25 hours in Madrid.
    arrival = datetime(2026, 10, 25, 8, 0, tzinfo=UTC)
    end = end_of_local_day(arrival, MADRID)
    assert end == datetime(2026, 10, 25, 23, 0, tzinfo=UTC)  # 00:00 CET on the 26th
    assert end_of_local_day(datetime(2026, 11, 30, 23, 30, tzinfo=UTC), MADRID) == datetime(
        2026, 12, 1, 23, 0, tzinfo=UTC
    )


def test_a_visitors_states_through_the_day() -> None:
    visitor = Visitor(
        id="v1",
        building_id="b1",
        display_name="Dora",
        host="users/ana",
        expected_arrival_time=NOW,
        invitation_expire_time=NOW + timedelta(hours=12),
        code_digest="c",
        create_time=NOW - timedelta(days=1),
        registered_by=Actor(user="users/ana"),
    )
    assert visitor.state(NOW) is VisitorState.EXPECTED
    assert visitor.state(NOW + timedelta(hours=12)) is VisitorState.EXPIRED
    inside = visitor.checked_in(NOW, CheckInMethod.RECEPTION, "g1")
    assert inside.state(NOW + timedelta(hours=20)) is VisitorState.CHECKED_IN
    assert inside.checked_out(NOW + timedelta(hours=3)).state(NOW) is VisitorState.CHECKED_OUT
