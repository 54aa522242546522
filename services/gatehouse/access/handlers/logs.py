"""The access log: ListAccessLogs, VerifyAuditLog and WatchAccessLog.

WatchAccessLog reads the log itself (the source of truth, on any replica) and uses the live
hub only as a doorbell, as WatchPayment does: every entry also publishes an event, and each
one for the building makes the stream read the log after the last entry it saw. The
subscription is opened before the log is first read, so an entry committing in between rings
the bell rather than slipping through; heartbeats also re-read the log, so a lagging bus or a
relay in another process delays an entry by at most one heartbeat interval, never loses it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from gatehouse.access import mapping
from gatehouse.access.domain import names
from gatehouse.access.domain.chain import (
    GENESIS_HASH,
    BreakKind,
    ChainBreak,
    ChainReport,
    Checkpoint,
    Decision,
    EntryKind,
    LogEntry,
    verify,
)
from gatehouse.access.handlers.common import (
    AccessDeps,
    PageTokens,
    building_or_404,
    page_size,
)
from gatehouse.access.handlers.ports import LogFilter, UnitOfWorkFactory
from gatehouse.access.v1 import access_pb2
from gatehouse.runtime.errors import FieldViolation, InvalidArgument, ResourceExhausted, Unavailable
from gatehouse.runtime.events import stream_for
from gatehouse.runtime.live import LiveHeartbeat, LiveSource

_ORDERS = {"": True, "sequence_number desc": True, "sequence_number": False}
_KINDS = frozenset(int(kind) for kind in EntryKind)
_VERIFY_BATCH = 1000
_WATCH_BATCH = 100
LOG_STREAMS = tuple(
    stream_for(event_type)
    for event_type in ("access.granted", "door.opened", "keypad.locked_out", "emergency.triggered")
)


# --- ListAccessLogs --------------------------------------------------------------------------


def _door_filter(door: str, building_id: str, field_name: str, problems: mapping.Problems) -> str:
    parsed = names.door_ids(door)
    if parsed is None or parsed[0] != building_id:
        problems.add(field_name, "must be a door of this building, 'buildings/*/doors/*'")
        return ""
    return parsed[1]


async def list_access_logs(
    request: access_pb2.ListAccessLogsRequest, uow_factory: UnitOfWorkFactory, deps: AccessDeps
) -> access_pb2.ListAccessLogsResponse:
    building_id = names.building_id(request.parent) or ""
    problems = mapping.Problems()
    door_id = _door_filter(request.door, building_id, "door", problems) if request.door else ""
    if request.holder and not (names.is_user(request.holder) or names.visitor_ids(request.holder)):
        problems.add("holder", "must look like 'users/*' or 'buildings/*/visitors/*'")
    order = request.order_by.strip().lower()
    if order not in _ORDERS:
        problems.add(
            "order_by", "must be 'sequence_number desc' or 'sequence_number'", "INVALID_ORDER_BY"
        )
    if any(kind not in _KINDS for kind in request.kinds):
        problems.add("kinds", "holds an unknown kind")
    if request.decision not in (0, 1, 2):
        problems.add("decision", "is not a decision")
    time_from = time_until = None
    if request.time_range.HasField("start_time"):
        time_from = mapping.from_timestamp(request.time_range.start_time)
    if request.time_range.HasField("end_time"):
        time_until = mapping.from_timestamp(request.time_range.end_time)
    if time_from and time_until and time_until < time_from:
        problems.add("time_range.end_time", "must not be before the start", "INVALID_TIME_RANGE")
    problems.raise_if_any()
    await building_or_404(deps, building_id)
    descending = _ORDERS[order]
    filters = LogFilter(
        door_id=door_id,
        holder=request.holder,
        decision=Decision(request.decision) if request.decision else None,
        kinds=frozenset(EntryKind(kind) for kind in request.kinds),
        time_from=time_from,
        time_until=time_until,
    )
    tokens = PageTokens(deps.secret_key, "logs")
    fingerprint = f"{building_id}|{filters}|{descending}"
    now = deps.clock()
    position = tokens.read(request.page_token, fingerprint, now)
    limit = page_size(request.page_size)
    async with uow_factory() as uow:
        found = await uow.log.page(
            building_id,
            filters,
            int(position[0]) if position else None,
            limit + 1,
            descending=descending,
        )
    page = found[:limit]
    token = tokens.make([str(page[-1].sequence)], fingerprint, now) if len(found) > limit else ""
    return access_pb2.ListAccessLogsResponse(
        access_logs=[mapping.entry_proto(entry) for entry in page], next_page_token=token
    )


# --- VerifyAuditLog --------------------------------------------------------------------------


def _invalid_range(field_name: str, problem: str) -> InvalidArgument:
    return InvalidArgument([FieldViolation(field_name, problem)], reason="INVALID_SEQUENCE_RANGE")


async def verify_audit_log(
    request: access_pb2.VerifyAuditLogRequest, uow_factory: UnitOfWorkFactory, deps: AccessDeps
) -> access_pb2.VerifyAuditLogResponse:
    building_id = names.building_id(request.parent) or ""
    start = request.start_sequence_number or 1
    if request.start_sequence_number < 0:
        raise _invalid_range("start_sequence_number", "must not be negative")
    if request.end_sequence_number < 0:
        raise _invalid_range("end_sequence_number", "must not be negative")
    if request.end_sequence_number and request.end_sequence_number < start:
        raise _invalid_range("end_sequence_number", "must not be before the start")
    checkpoint = None
    if request.HasField("checkpoint"):
        checkpoint = Checkpoint(request.checkpoint.sequence_number, request.checkpoint.entry_hash)
        upper = request.end_sequence_number or checkpoint.sequence
        if not start <= checkpoint.sequence <= upper:
            raise _invalid_range("checkpoint.sequence_number", "must lie within the checked range")
    await building_or_404(deps, building_id)
    async with uow_factory() as uow:
        head = await uow.log.head(building_id)
    last = head.sequence if head is not None else 0
    end = min(request.end_sequence_number or last, last)
    report = await _verify(uow_factory, building_id, start, end, checkpoint)
    if report.ok and checkpoint is not None and checkpoint.sequence > end:
        report = ChainReport(
            report.checked,
            report.head,
            ChainBreak(BreakKind.TRUNCATED, end + 1, "", checkpoint.entry_hash, b""),
        )
    response = access_pb2.VerifyAuditLogResponse(ok=report.ok, entries_checked=report.checked)
    if report.head is not None:
        response.head.CopyFrom(
            access_pb2.AuditLogCheckpoint(
                sequence_number=report.head.sequence, entry_hash=report.head.entry_hash
            )
        )
    found = report.first_break
    if found is not None:
        response.first_break.CopyFrom(
            access_pb2.ChainBreak(
                kind=int(found.kind),  # type: ignore[arg-type]
                sequence_number=found.sequence,
                entry=names.log_entry_name(building_id, found.entry_id) if found.entry_id else "",
                expected_hash=found.expected_hash,
                actual_hash=found.actual_hash,
            )
        )
    return response


async def _verify(
    uow_factory: UnitOfWorkFactory,
    building_id: str,
    start: int,
    end: int,
    checkpoint: Checkpoint | None,
) -> ChainReport:
    checked = 0
    head: Checkpoint | None = None
    async with uow_factory() as uow:
        if start == 1:
            anchor = GENESIS_HASH
        else:
            before = await uow.log.at(building_id, start - 1)
            if before is None:
                return ChainReport(
                    0, None, ChainBreak(BreakKind.SEQUENCE_GAP, start - 1, "", b"", b"")
                )
            anchor = before.entry_hash
        position = start
        while position <= end:
            batch_end = min(position + _VERIFY_BATCH - 1, end)
            entries = await uow.log.range(building_id, position, batch_end, _VERIFY_BATCH)
            in_batch = (
                checkpoint
                if checkpoint is not None and position <= checkpoint.sequence <= batch_end
                else None
            )
            report = verify(
                entries,
                start=position,
                end=batch_end,
                anchor=anchor,
                hasher=mapping.entry_hash,
                checkpoint=in_batch,
            )
            checked += report.checked
            head = report.head or head
            if not report.ok:
                return ChainReport(checked, head, report.first_break)
            if report.head is not None:
                anchor = report.head.entry_hash
            position = batch_end + 1
    return ChainReport(checked, head, None)


# --- WatchAccessLog --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EntryItem:
    entry: LogEntry


@dataclass(frozen=True, slots=True)
class HeartbeatItem:
    time: datetime
    last_event_id: str


WatchItem = EntryItem | HeartbeatItem


@dataclass(frozen=True, slots=True)
class WatchQuery:
    building_id: str
    door_ids: frozenset[str]
    decision: Decision | None
    resume_after: str


def watch_query(request: access_pb2.WatchAccessLogRequest) -> WatchQuery:
    building_id = names.building_id(request.parent) or ""
    problems = mapping.Problems()
    doors = [
        _door_filter(door, building_id, f"doors[{index}]", problems)
        for index, door in enumerate(request.doors)
    ]
    if request.decision not in (0, 1, 2):
        problems.add("decision", "is not a decision")
    problems.raise_if_any()
    return WatchQuery(
        building_id,
        frozenset(doors),
        Decision(request.decision) if request.decision else None,
        request.resume_after,
    )


async def _opening(uow_factory: UnitOfWorkFactory, query: WatchQuery) -> int:
    """The sequence number the stream continues after."""
    async with uow_factory() as uow:
        if not query.resume_after:
            head = await uow.log.head(query.building_id)
            return head.sequence if head is not None else 0
        anchor = await uow.log.by_event_id(query.resume_after)
    if anchor is None or anchor.building_id != query.building_id:
        raise InvalidArgument(
            [FieldViolation("resume_after", f"is not an entry of buildings/{query.building_id}")],
            reason="UNKNOWN_RESUME_POINT",
        )
    return anchor.sequence


def _matches(entry: LogEntry, query: WatchQuery) -> bool:
    if query.door_ids and entry.door_id not in query.door_ids:
        return False
    return query.decision is None or entry.decision == query.decision


async def watch_access_log(
    query: WatchQuery,
    uow_factory: UnitOfWorkFactory,
    live: LiveSource,
    deps: AccessDeps,
    *,
    heartbeat_interval: timedelta,
    buffer_size: int,
    stopping: asyncio.Event | None = None,
    on_live: Callable[[], Awaitable[None]] | None = None,
) -> AsyncIterator[WatchItem]:
    """Raises before the first item for bad requests; afterwards RESOURCE_EXHAUSTED
    SUBSCRIBER_TOO_SLOW or UNAVAILABLE SHUTTING_DOWN, with the resume point in metadata."""
    building_id = query.building_id
    await building_or_404(deps, building_id)
    prefix = f"buildings/{building_id}/"
    subscription = await live.subscribe(
        list(LOG_STREAMS),
        filter=lambda event: event.subject.startswith(prefix),
        stopping=stopping,
        heartbeat_interval=heartbeat_interval,
        buffer_size=buffer_size,
        overflow_reason="SUBSCRIBER_TOO_SLOW",
    )
    last_event_id = query.resume_after
    try:
        sequence = await _opening(uow_factory, query)
        if on_live is not None:
            await on_live()
        while True:
            async with uow_factory() as uow:
                entries = await uow.log.range(
                    building_id, sequence + 1, sequence + _WATCH_BATCH, _WATCH_BATCH
                )
            for entry in entries:
                sequence = entry.sequence
                last_event_id = entry.event_id
                if _matches(entry, query):
                    yield EntryItem(entry)
            if len(entries) == _WATCH_BATCH:
                continue
            try:
                message = await anext(subscription)
            except StopAsyncIteration:
                break
            except ResourceExhausted as overflow:
                overflow.metadata = {"last_event_id": last_event_id}
                raise
            if isinstance(message, LiveHeartbeat):
                async with uow_factory() as uow:
                    head = await uow.log.head(building_id)
                if head is None or head.sequence <= sequence:
                    yield HeartbeatItem(datetime.now(UTC), last_event_id)
    finally:
        await subscription.aclose()
    if subscription.ended_by is not None:
        draining = Unavailable(
            "the server is shutting down; reconnect with resume_after", reason="SHUTTING_DOWN"
        )
        draining.metadata["last_event_id"] = last_event_id
        raise draining
