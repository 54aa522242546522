"""Sensor readings: which ones of a batch are stored, and why the others are not."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from gatehouse.monitoring.domain.enums import ReadingRejectionReason

MAX_READINGS_PER_BATCH = 1000
MAX_BATCH_ID = 128
MAX_FUTURE = timedelta(minutes=5)
MAX_AGE = timedelta(days=7)
METRIC = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*")
MAX_METRIC = 63


@dataclass(frozen=True, slots=True)
class Reading:
    metric: str
    value: float
    # None when the device sent no time.
    time: datetime | None


@dataclass(frozen=True, slots=True)
class Rejection:
    index: int
    reason: ReadingRejectionReason


@dataclass(frozen=True, slots=True)
class Screened:
    """A batch split into what may be stored and what is rejected, in batch order."""

    accepted: tuple[tuple[int, Reading], ...]
    rejected: tuple[Rejection, ...]


def reading_problem(reading: Reading, now: datetime) -> ReadingRejectionReason | None:
    """Why a reading cannot be stored on its own merits (duplicates are checked later)."""
    if len(reading.metric) > MAX_METRIC or METRIC.fullmatch(reading.metric) is None:
        return ReadingRejectionReason.INVALID_METRIC
    if not math.isfinite(reading.value):
        return ReadingRejectionReason.VALUE_NOT_FINITE
    if reading.time is None or reading.time < now - MAX_AGE:
        return ReadingRejectionReason.TIME_TOO_OLD
    if reading.time > now + MAX_FUTURE:
        return ReadingRejectionReason.TIME_IN_FUTURE
    return None


def screen(
    readings: Sequence[Reading],
    now: datetime,
    stored: Iterable[tuple[str, datetime]] = (),
) -> Screened:
    """Validate a batch: invalid readings and duplicates (the same metric and time earlier in
    the batch, or in `stored`) are rejected; out-of-order times are fine."""
    seen = set(stored)
    accepted: list[tuple[int, Reading]] = []
    rejected: list[Rejection] = []
    for index, reading in enumerate(readings):
        problem = reading_problem(reading, now)
        if problem is None:
            assert reading.time is not None
            key = (reading.metric, reading.time)
            if key in seen:
                problem = ReadingRejectionReason.DUPLICATE
            else:
                seen.add(key)
        if problem is None:
            accepted.append((index, reading))
        else:
            rejected.append(Rejection(index, problem))
    return Screened(tuple(accepted), tuple(rejected))


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    duplicate: bool
    accepted: int
    rejections: tuple[Rejection, ...]
    earliest: datetime | None = None
    latest: datetime | None = None


MAX_REPORTED_REJECTIONS = 100


@dataclass
class UploadSummary:
    batch_count: int = 0
    duplicate_batch_count: int = 0
    accepted_count: int = 0
    rejected_count: int = 0
    # (batch id, rejection), the first MAX_REPORTED_REJECTIONS of them.
    rejections: list[tuple[str, Rejection]] = field(default_factory=list)
    earliest: datetime | None = None
    latest: datetime | None = None

    def add(self, batch_id: str, outcome: BatchOutcome) -> None:
        self.batch_count += 1
        if outcome.duplicate:
            self.duplicate_batch_count += 1
            return
        self.accepted_count += outcome.accepted
        self.rejected_count += len(outcome.rejections)
        room = MAX_REPORTED_REJECTIONS - len(self.rejections)
        self.rejections.extend((batch_id, rejection) for rejection in outcome.rejections[:room])
        if outcome.earliest is not None:
            self.earliest = min(self.earliest or outcome.earliest, outcome.earliest)
        if outcome.latest is not None:
            self.latest = max(self.latest or outcome.latest, outcome.latest)
