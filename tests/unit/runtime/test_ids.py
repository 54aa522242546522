"""ULIDs: format, time prefix, and strict order within a process."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from gatehouse.runtime.ids import (
    CROCKFORD_ALPHABET,
    UlidGenerator,
    decode_ulid,
    encode_ulid,
    is_ulid,
    new_ulid,
    ulid_time,
)

MAX_RANDOM = (1 << 80) - 1


class ScriptedClock:
    def __init__(self, *readings: int) -> None:
        self._readings: Iterator[int] = iter(readings)

    def __call__(self) -> int:
        return next(self._readings)


def test_a_ulid_is_26_crockford_characters() -> None:
    value = new_ulid()

    assert len(value) == 26
    assert set(value) <= set(CROCKFORD_ALPHABET)
    assert is_ulid(value)


def test_the_known_encoding_of_the_spec_layout() -> None:
    # 48-bit time 1 ms, random part 1: the two numbers sit in fixed character positions.
    assert encode_ulid((1 << 80) | 1) == "00000000010000000000000001"
    assert encode_ulid(0) == "0" * 26
    assert encode_ulid((1 << 128) - 1) == "7" + "Z" * 25


def test_encode_and_decode_round_trip() -> None:
    for value in (0, 1, 12345678901234567890, (1 << 128) - 1):
        assert decode_ulid(encode_ulid(value)) == value


@pytest.mark.parametrize(
    "text",
    [
        "",
        "0" * 25,
        "0" * 27,
        "8" + "0" * 25,  # above 2^128 - 1
        "0000000000000000000000000I",  # I, L, O, U are not Crockford digits
        "0000000000000000000000000u",  # canonical form is upper case
    ],
)
def test_malformed_ulids_are_refused(text: str) -> None:
    assert not is_ulid(text)
    with pytest.raises(ValueError, match="not a ULID"):
        decode_ulid(text)


def test_values_outside_128_bits_cannot_be_encoded() -> None:
    with pytest.raises(ValueError, match="128-bit"):
        encode_ulid(1 << 128)
    with pytest.raises(ValueError, match="128-bit"):
        encode_ulid(-1)


def test_the_time_prefix_is_the_creation_millisecond() -> None:
    when = datetime(2030, 5, 17, 8, 30, 12, 345_000, tzinfo=UTC)
    millis = int(when.timestamp() * 1000)
    generator = UlidGenerator(clock_ms=lambda: millis, random_bits=lambda: 42)

    assert ulid_time(generator.new()) == when


def test_ids_of_later_milliseconds_sort_later_whatever_their_randomness() -> None:
    generator = UlidGenerator(
        clock_ms=ScriptedClock(1_000, 1_001), random_bits=iter([MAX_RANDOM, 0]).__next__
    )

    first, second = generator.new(), generator.new()

    assert first < second


def test_within_one_millisecond_the_random_part_counts_up() -> None:
    generator = UlidGenerator(clock_ms=lambda: 1_000, random_bits=lambda: 7)

    ids = [generator.new() for _ in range(3)]

    assert [decode_ulid(i) & MAX_RANDOM for i in ids] == [7, 8, 9]
    assert ids == sorted(ids)


def test_a_clock_that_steps_back_does_not_reorder_ids() -> None:
    generator = UlidGenerator(clock_ms=ScriptedClock(5_000, 4_000, 4_500), random_bits=lambda: 0)

    ids = [generator.new() for _ in range(3)]

    assert ids == sorted(ids)
    assert len(set(ids)) == 3
    assert {ulid_time(i) for i in ids} == {datetime.fromtimestamp(5, tz=UTC)}


def test_an_exhausted_random_part_moves_to_the_next_millisecond() -> None:
    generator = UlidGenerator(clock_ms=lambda: 1_000, random_bits=iter([MAX_RANDOM, 3]).__next__)

    first, second = generator.new(), generator.new()

    assert first < second
    assert decode_ulid(second) >> 80 == 1_001
    assert decode_ulid(second) & MAX_RANDOM == 3


def test_a_timestamp_beyond_48_bits_is_refused() -> None:
    generator = UlidGenerator(clock_ms=lambda: 1 << 48, random_bits=lambda: 0)

    with pytest.raises(ValueError, match="does not fit"):
        generator.new()


def test_ids_made_by_many_threads_are_unique_and_each_threads_ids_increase() -> None:
    generator = UlidGenerator()
    per_thread: list[list[str]] = [[] for _ in range(4)]

    def make(into: list[str]) -> None:
        for _ in range(2_000):
            into.append(generator.new())

    threads = [threading.Thread(target=make, args=(ids,)) for ids in per_thread]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    everything = [i for ids in per_thread for i in ids]
    assert len(set(everything)) == len(everything)
    for ids in per_thread:
        assert ids == sorted(ids)


def test_the_process_generator_is_strictly_increasing() -> None:
    ids = [new_ulid() for _ in range(5_000)]

    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
