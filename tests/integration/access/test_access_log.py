"""The hash-chained access log: listing, a tampered row found by VerifyAuditLog, and
WatchAccessLog resuming after a disconnect without gap or duplicate."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import grpc
import pytest
from sqlalchemy import text

from gatehouse.access.v1 import access_pb2, access_pb2_grpc
from tests.integration.access.harness import AccessHarness
from tests.support.grpc_calls import error_info, rich_status


async def some_entries(access: AccessHarness, count: int) -> list[access_pb2.AccessLogEntry]:
    issued = await access.issue()
    for _ in range(count):
        await access.validate("main", issued.pin)
    return await access.entries()


async def test_each_entry_hashes_its_content_and_links_to_the_one_before(
    access: AccessHarness,
) -> None:
    entries = await some_entries(access, 3)
    previous = bytes(32)
    for entry in entries:
        assert entry.previous_hash == previous
        blank = access_pb2.AccessLogEntry()
        blank.CopyFrom(entry)
        blank.entry_hash = b""
        assert (
            entry.entry_hash == hashlib.sha256(blank.SerializeToString(deterministic=True)).digest()
        )
        previous = entry.entry_hash
    stub = await access.operator()
    newest = await stub.ListAccessLogs(access_pb2.ListAccessLogsRequest(parent="buildings/b1"))
    assert [e.sequence_number for e in newest.access_logs] == [3, 2, 1]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ListAccessLogs(
            access_pb2.ListAccessLogsRequest(parent="buildings/b1", order_by="time")
        )
    assert error_info(rich_status(raised.value)).reason == "INVALID_ORDER_BY"


async def test_a_tampered_row_is_the_first_broken_link(access: AccessHarness) -> None:
    entries = await some_entries(access, 4)
    stub = await access.operator("access.logs.verify")
    intact = await stub.VerifyAuditLog(access_pb2.VerifyAuditLogRequest(parent="buildings/b1"))
    assert (intact.ok, intact.entries_checked, intact.head.sequence_number) == (True, 4, 4)
    assert intact.head.entry_hash == entries[-1].entry_hash
    async with access.app.database.database.sessionmaker() as session:
        await session.execute(
            text("UPDATE access_log_entries SET holder = 'users/mallory' WHERE sequence = 2")
        )
        await session.commit()
    broken = await stub.VerifyAuditLog(access_pb2.VerifyAuditLogRequest(parent="buildings/b1"))
    assert not broken.ok
    assert broken.first_break.kind == access_pb2.CHAIN_BREAK_KIND_ENTRY_HASH_MISMATCH
    assert broken.first_break.sequence_number == 2
    assert broken.first_break.entry == entries[1].name
    assert broken.first_break.expected_hash == entries[1].entry_hash
    # Entries after the break still check out on their own, anchored on the stored hash.
    tail = await stub.VerifyAuditLog(
        access_pb2.VerifyAuditLogRequest(parent="buildings/b1", start_sequence_number=3)
    )
    assert (tail.ok, tail.entries_checked) == (True, 2)


async def test_deleted_rows_and_checkpoints(access: AccessHarness) -> None:
    entries = await some_entries(access, 4)
    stub = await access.operator()
    checkpoint = access_pb2.AuditLogCheckpoint(sequence_number=4, entry_hash=entries[3].entry_hash)
    async with access.app.database.database.sessionmaker() as session:
        await session.execute(text("DELETE FROM access_log_entries WHERE sequence = 3"))
        await session.commit()
    gap = await stub.VerifyAuditLog(access_pb2.VerifyAuditLogRequest(parent="buildings/b1"))
    assert (gap.first_break.kind, gap.first_break.sequence_number) == (
        access_pb2.CHAIN_BREAK_KIND_SEQUENCE_GAP,
        3,
    )
    async with access.app.database.database.sessionmaker() as session:
        await session.execute(text("DELETE FROM access_log_entries WHERE sequence >= 3"))
        await session.execute(text("UPDATE access_log_heads SET sequence = 2"))
        await session.commit()
    truncated = await stub.VerifyAuditLog(
        access_pb2.VerifyAuditLogRequest(parent="buildings/b1", checkpoint=checkpoint)
    )
    assert (truncated.ok, truncated.first_break.kind) == (
        False,
        access_pb2.CHAIN_BREAK_KIND_TRUNCATED,
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.VerifyAuditLog(
            access_pb2.VerifyAuditLogRequest(
                parent="buildings/b1", start_sequence_number=3, end_sequence_number=2
            )
        )
    assert error_info(rich_status(raised.value)).reason == "INVALID_SEQUENCE_RANGE"


async def _take(call: Any, count: int) -> list[access_pb2.WatchAccessLogResponse]:
    taken: list[access_pb2.WatchAccessLogResponse] = []
    async with asyncio.timeout(15):
        async for response in call:
            if response.HasField("entry"):
                taken.append(response)
                if len(taken) == count:
                    return taken
    return taken


async def test_watch_resumes_after_a_disconnect_without_gap_or_duplicate(
    access: AccessHarness,
) -> None:
    issued = await access.issue()
    stub = access_pb2_grpc.AccessServiceStub(await access.channel())
    metadata = access.issuer.bearer(permissions=["access.logs.read"])
    first = stub.WatchAccessLog(
        access_pb2.WatchAccessLogRequest(parent="buildings/b1"), metadata=metadata
    )
    await first.initial_metadata()
    for _ in range(2):
        await access.validate("main", issued.pin)
    seen = await _take(first, 2)
    first.cancel()
    assert [r.entry.sequence_number for r in seen] == [1, 2]
    # While away: two more entries, one of them at another door.
    await access.validate("main", issued.pin)
    await access.validate("side", issued.pin)
    resumed = stub.WatchAccessLog(
        access_pb2.WatchAccessLogRequest(
            parent="buildings/b1", resume_after=seen[-1].entry.event_id
        ),
        metadata=metadata,
    )
    await resumed.initial_metadata()
    await access.validate("main", issued.pin)
    rest = await _take(resumed, 3)
    resumed.cancel()
    assert [r.entry.sequence_number for r in rest] == [3, 4, 5]
    filtered = stub.WatchAccessLog(
        access_pb2.WatchAccessLogRequest(
            parent="buildings/b1",
            resume_after=seen[0].entry.event_id,
            doors=["buildings/b1/doors/side"],
        ),
        metadata=metadata,
    )
    only_side = await _take(filtered, 1)
    filtered.cancel()
    assert [r.entry.sequence_number for r in only_side] == [4]


async def test_watch_refuses_an_unknown_resume_point(access: AccessHarness) -> None:
    stub = access_pb2_grpc.AccessServiceStub(await access.channel())
    call = stub.WatchAccessLog(
        access_pb2.WatchAccessLogRequest(parent="buildings/b1", resume_after="01NOTANEVENT"),
        metadata=access.issuer.bearer(permissions=["access.logs.read"]),
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await _take(call, 1)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(rich_status(raised.value)).reason == "UNKNOWN_RESUME_POINT"


async def test_heartbeats_move_the_resume_point_past_skipped_entries(
    access: AccessHarness,
) -> None:
    issued = await access.issue()
    stub = access_pb2_grpc.AccessServiceStub(await access.channel())
    call = stub.WatchAccessLog(
        access_pb2.WatchAccessLogRequest(
            parent="buildings/b1", decision=access_pb2.ACCESS_DECISION_DENIED
        ),
        metadata=access.issuer.bearer(permissions=["access.logs.read"]),
    )
    await call.initial_metadata()
    granted = await access.validate("main", issued.pin)
    event_id = (await access.entries())[0].event_id
    assert granted.decision == access_pb2.ACCESS_DECISION_GRANTED
    async with asyncio.timeout(15):
        async for response in call:
            assert not response.HasField("entry")
            if response.heartbeat.last_event_id == event_id:
                break
    call.cancel()


async def _drain(call: Any) -> None:
    async with asyncio.timeout(15):
        async for _ in call:
            pass


async def test_a_draining_server_ends_the_watch_with_its_resume_point(
    access: AccessHarness,
) -> None:
    issued = await access.issue()
    stub = access_pb2_grpc.AccessServiceStub(await access.channel())
    call = stub.WatchAccessLog(
        access_pb2.WatchAccessLogRequest(parent="buildings/b1"),
        metadata=access.issuer.bearer(permissions=["access.logs.read"]),
    )
    await call.initial_metadata()
    await access.validate("main", issued.pin)
    seen = await _take(call, 1)
    access.app.context.lifecycle.stopping.set()
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await _drain(call)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    info = error_info(rich_status(raised.value))
    assert info.reason == "SHUTTING_DOWN"
    assert info.metadata["last_event_id"] == seen[0].entry.event_id


async def test_list_filters_and_pages(access: AccessHarness) -> None:
    issued = await access.issue()
    for _ in range(3):
        await access.validate("main", issued.pin)
    await access.validate("side", issued.pin)
    stub = await access.operator()
    page = await stub.ListAccessLogs(
        access_pb2.ListAccessLogsRequest(parent="buildings/b1", page_size=2)
    )
    assert [e.sequence_number for e in page.access_logs] == [4, 3]
    rest = await stub.ListAccessLogs(
        access_pb2.ListAccessLogsRequest(
            parent="buildings/b1", page_size=2, page_token=page.next_page_token
        )
    )
    assert [e.sequence_number for e in rest.access_logs] == [2, 1]
    assert rest.next_page_token == ""
    denied = await stub.ListAccessLogs(
        access_pb2.ListAccessLogsRequest(
            parent="buildings/b1", decision=access_pb2.ACCESS_DECISION_DENIED
        )
    )
    assert [(e.door, e.deny_reason) for e in denied.access_logs] == [
        ("buildings/b1/doors/side", access_pb2.DENY_REASON_WRONG_DOOR)
    ]
    by_holder = await stub.ListAccessLogs(
        access_pb2.ListAccessLogsRequest(
            parent="buildings/b1", holder="users/ana", door="buildings/b1/doors/main"
        )
    )
    assert len(by_holder.access_logs) == 3
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ListAccessLogs(
            access_pb2.ListAccessLogsRequest(
                parent="buildings/b1",
                page_token=page.next_page_token,
                decision=access_pb2.ACCESS_DECISION_GRANTED,
            )
        )
    assert error_info(rich_status(raised.value)).reason == "INVALID_PAGE_TOKEN"
