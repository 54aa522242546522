"""The access log: append-only entries, hash-chained per building, and checking the chain.

Entry n carries the hash of entry n-1 (`previous_hash`; 32 zero bytes for entry 1) and its own
hash over its content (`entry_hash`, SHA-256 of the contract's deterministic protobuf
serialization, computed by a `Hasher` the mapping layer provides). Changing, removing,
inserting or reordering an entry therefore breaks the chain from that point on.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime

from gatehouse.access.domain.grants import Actor, DenyReason

GENESIS_HASH = bytes(32)


class EntryKind(enum.IntEnum):
    """Numbered like the contract's AccessLogEntryKind."""

    PIN_ATTEMPT = 1
    REMOTE_OPEN = 2
    KEYPAD_LOCKED_OUT = 3
    EMERGENCY_TRIGGERED = 4
    EMERGENCY_CLEARED = 5


class Decision(enum.IntEnum):
    UNSPECIFIED = 0
    GRANTED = 1
    DENIED = 2


@dataclass(frozen=True, slots=True)
class LogEntry:
    id: str
    building_id: str
    sequence: int
    kind: EntryKind
    time: datetime
    event_id: str
    door_id: str = ""
    decision: Decision = Decision.UNSPECIFIED
    deny_reason: DenyReason | None = None
    grant_id: str = ""
    holder: str = ""
    actor: Actor = field(default_factory=Actor)
    reason: str = ""
    emergency_mode: int = 0
    previous_hash: bytes = GENESIS_HASH
    entry_hash: bytes = b""


Hasher = Callable[[LogEntry], bytes]
"""SHA-256 of an entry with `entry_hash` left empty."""


@dataclass(frozen=True, slots=True)
class ChainHead:
    building_id: str
    sequence: int = 0
    entry_hash: bytes = GENESIS_HASH


def sealed(entry: LogEntry, head: ChainHead, hasher: Hasher) -> tuple[LogEntry, ChainHead]:
    """`entry` placed after `head`: its sequence number, previous hash and own hash set."""
    placed = replace(
        entry, sequence=head.sequence + 1, previous_hash=head.entry_hash, entry_hash=b""
    )
    digest = hasher(placed)
    return replace(placed, entry_hash=digest), ChainHead(head.building_id, placed.sequence, digest)


class BreakKind(enum.IntEnum):
    """Numbered like the contract's ChainBreakKind."""

    ENTRY_HASH_MISMATCH = 1
    PREVIOUS_HASH_MISMATCH = 2
    SEQUENCE_GAP = 3
    CHECKPOINT_MISMATCH = 4
    TRUNCATED = 5


@dataclass(frozen=True, slots=True)
class ChainBreak:
    kind: BreakKind
    sequence: int
    entry_id: str  # empty when the entry is missing
    expected_hash: bytes
    actual_hash: bytes


@dataclass(frozen=True, slots=True)
class Checkpoint:
    sequence: int
    entry_hash: bytes


@dataclass(frozen=True, slots=True)
class ChainReport:
    checked: int
    head: Checkpoint | None
    first_break: ChainBreak | None

    @property
    def ok(self) -> bool:
        return self.first_break is None


def verify(
    entries: Iterable[LogEntry],
    *,
    start: int,
    end: int,
    anchor: bytes,
    hasher: Hasher,
    checkpoint: Checkpoint | None = None,
) -> ChainReport:
    """Check entries `start..end` (ascending by sequence) against each other and `anchor`
    (the hash entry `start - 1` is trusted to have). Stops at the first break."""
    expected_sequence = start
    previous = anchor
    checked = 0
    head: Checkpoint | None = None

    def report(found: ChainBreak | None) -> ChainReport:
        return ChainReport(checked, head, found)

    for entry in entries:
        if entry.sequence > end:
            break
        if entry.sequence != expected_sequence:
            return report(ChainBreak(BreakKind.SEQUENCE_GAP, expected_sequence, "", previous, b""))
        checked += 1
        if entry.previous_hash != previous:
            return report(
                ChainBreak(
                    BreakKind.PREVIOUS_HASH_MISMATCH,
                    entry.sequence,
                    entry.id,
                    previous,
                    entry.previous_hash,
                )
            )
        recomputed = hasher(replace(entry, entry_hash=b""))
        if recomputed != entry.entry_hash:
            return report(
                ChainBreak(
                    BreakKind.ENTRY_HASH_MISMATCH,
                    entry.sequence,
                    entry.id,
                    entry.entry_hash,
                    recomputed,
                )
            )
        if (
            checkpoint is not None
            and checkpoint.sequence == entry.sequence
            and checkpoint.entry_hash != entry.entry_hash
        ):
            return report(
                ChainBreak(
                    BreakKind.CHECKPOINT_MISMATCH,
                    entry.sequence,
                    entry.id,
                    checkpoint.entry_hash,
                    entry.entry_hash,
                )
            )
        head = Checkpoint(entry.sequence, entry.entry_hash)
        previous = entry.entry_hash
        expected_sequence += 1
    if expected_sequence <= end:
        # The chain ends before the range does, though the head says it reaches `end`.
        kind = (
            BreakKind.TRUNCATED
            if checkpoint is not None and checkpoint.sequence >= expected_sequence
            else BreakKind.SEQUENCE_GAP
        )
        return report(ChainBreak(kind, expected_sequence, "", previous, b""))
    return report(None)
