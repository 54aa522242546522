"""IssuePin, ValidatePin and RevokePin end to end: every deny reason, the log and its events."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import grpc
import pytest
from google.protobuf import timestamp_pb2
from google.rpc import error_details_pb2

from gatehouse.access.v1 import access_pb2
from gatehouse.access.v1 import events_pb2 as events
from gatehouse.common.v1 import common_pb2
from tests.integration.access.harness import AccessHarness, door, request_id
from tests.support.grpc_calls import detail, error_info, rich_status

GRANTED = access_pb2.ACCESS_DECISION_GRANTED
DENIED = access_pb2.ACCESS_DECISION_DENIED


def stamp(harness: AccessHarness, delta: timedelta) -> timestamp_pb2.Timestamp:
    value = timestamp_pb2.Timestamp()
    value.FromDatetime(harness.clock() + delta)
    return value


async def test_an_issued_pin_opens_its_door_once_logged_and_published(
    access: AccessHarness,
) -> None:
    issued = await access.issue(max_uses=0)
    assert len(issued.pin) == 6
    assert issued.pin.isdigit()
    assert issued.grant.state == access_pb2.GRANT_STATE_ACTIVE
    decision = await access.validate("main", issued.pin)
    assert (decision.decision, decision.deny_reason) == (GRANTED, 0)
    entries = await access.entries()
    assert [entry.name for entry in entries] == [decision.access_log_entry]
    entry = entries[0]
    assert (entry.sequence_number, entry.kind, entry.decision) == (
        1,
        access_pb2.ACCESS_LOG_ENTRY_KIND_PIN_ATTEMPT,
        GRANTED,
    )
    assert entry.grant == issued.grant.name
    assert entry.holder == "users/ana"
    assert entry.previous_hash == bytes(32)
    published = await access.events("events.access", wait_for=1)
    assert [event.type for event in published] == ["access.granted"]
    assert published[0].id == entry.event_id
    payload = events.AccessGranted()
    assert published[0].data.Unpack(payload)
    assert (payload.grant, payload.use_count, payload.access_log_entry) == (
        issued.grant.name,
        1,
        entry.name,
    )
    assert issued.pin not in published[0].SerializeToString().decode("latin-1")


async def test_every_deny_reason(access: AccessHarness) -> None:
    stub = await access.operator()
    # WRONG_DOOR
    main_only = await access.issue()
    assert (await access.validate("side", main_only.pin)).deny_reason == (
        access_pb2.DENY_REASON_WRONG_DOOR
    )
    # NOT_YET_VALID
    later = await access.issue(
        validity=common_pb2.TimeRange(start_time=stamp(access, timedelta(hours=1)))
    )
    assert later.grant.state == access_pb2.GRANT_STATE_PENDING
    assert (await access.validate("main", later.pin)).deny_reason == (
        access_pb2.DENY_REASON_NOT_YET_VALID
    )
    # USES_EXHAUSTED
    once = await access.issue(max_uses=1)
    assert (await access.validate("main", once.pin)).decision == GRANTED
    assert (await access.validate("main", once.pin)).deny_reason == (
        access_pb2.DENY_REASON_USES_EXHAUSTED
    )
    # REVOKED, at once
    revoked = await access.issue()
    await stub.RevokePin(
        access_pb2.RevokePinRequest(
            name=revoked.grant.name, reason="moved out", request_id=request_id()
        )
    )
    assert (await access.validate("main", revoked.pin)).deny_reason == (
        access_pb2.DENY_REASON_REVOKED
    )
    # EXPIRED
    short = await access.issue(
        validity=common_pb2.TimeRange(end_time=stamp(access, timedelta(minutes=10)))
    )
    access.clock.advance(timedelta(minutes=11))
    assert (await access.validate("main", short.pin)).deny_reason == (
        access_pb2.DENY_REASON_EXPIRED
    )
    # UNKNOWN_PIN: a PIN no grant of the building has.
    taken = {main_only.pin, later.pin, once.pin, revoked.pin, short.pin}
    unknown = next(f"{n:06d}" for n in range(1_000_000) if f"{n:06d}" not in taken)
    assert (await access.validate("main", unknown)).deny_reason == (
        access_pb2.DENY_REASON_UNKNOWN_PIN
    )
    denied = await access.events("events.access", wait_for=7)
    reasons = []
    for event in denied:
        if event.type == "access.denied":
            payload = events.AccessDenied()
            assert event.data.Unpack(payload)
            reasons.append(payload.deny_reason)
    assert reasons == [
        access_pb2.DENY_REASON_WRONG_DOOR,
        access_pb2.DENY_REASON_NOT_YET_VALID,
        access_pb2.DENY_REASON_USES_EXHAUSTED,
        access_pb2.DENY_REASON_REVOKED,
        access_pb2.DENY_REASON_EXPIRED,
        access_pb2.DENY_REASON_UNKNOWN_PIN,
    ]


async def test_revoking_twice_returns_the_grant_unchanged_with_one_event(
    access: AccessHarness,
) -> None:
    issued = await access.issue()
    stub = await access.operator()
    first = await stub.RevokePin(
        access_pb2.RevokePinRequest(name=issued.grant.name, reason="lost", request_id=request_id())
    )
    second = await stub.RevokePin(
        access_pb2.RevokePinRequest(name=issued.grant.name, reason="again", request_id=request_id())
    )
    assert first.grant.state == second.grant.state == access_pb2.GRANT_STATE_REVOKED
    assert second.grant.revoke_reason == "lost"
    revoked = await access.events("events.pin", wait_for=1)
    assert [event.type for event in revoked] == ["pin.revoked"]


async def test_a_retried_validation_is_not_counted_twice(access: AccessHarness) -> None:
    once = await access.issue(max_uses=1)
    rid = request_id()
    first = await access.validate("main", once.pin, rid=rid)
    again = await access.validate("main", once.pin, rid=rid)
    assert first == again
    assert first.decision == GRANTED
    assert len(await access.entries()) == 1


async def test_issue_pin_replay_returns_the_grant_but_not_the_pin(access: AccessHarness) -> None:
    stub = await access.operator()
    request = access_pb2.IssuePinRequest(
        parent="buildings/b1",
        grant=access_pb2.Grant(holder="users/ana", doors=[door("main")]),
        pin_length=8,
        request_id=request_id(),
    )
    first = await stub.IssuePin(request)
    replay = await stub.IssuePin(request)
    assert len(first.pin) == 8
    assert replay.pin == ""
    assert replay.grant == first.grant
    other = access_pb2.IssuePinRequest()
    other.CopyFrom(request)
    other.grant.display_name = "something else"
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.IssuePin(other)
    assert raised.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert error_info(rich_status(raised.value)).reason == "REQUEST_ID_REUSED"


async def test_list_grants_newest_first_with_filters_and_pages(access: AccessHarness) -> None:
    made = [await access.issue(holder=f"users/u{n}") for n in range(5)]
    side = await access.issue(doors=[door("side")], holder="users/u9")
    stub = await access.operator()
    first = await stub.ListGrants(access_pb2.ListGrantsRequest(parent="buildings/b1", page_size=4))
    assert [g.name for g in first.grants] == [
        side.grant.name,
        *[m.grant.name for m in reversed(made)][:3],
    ]
    rest = await stub.ListGrants(
        access_pb2.ListGrantsRequest(
            parent="buildings/b1", page_size=4, page_token=first.next_page_token
        )
    )
    assert [g.name for g in rest.grants] == [made[1].grant.name, made[0].grant.name]
    assert rest.next_page_token == ""
    by_door = await stub.ListGrants(
        access_pb2.ListGrantsRequest(parent="buildings/b1", door=door("side"))
    )
    assert [g.name for g in by_door.grants] == [side.grant.name]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ListGrants(
            access_pb2.ListGrantsRequest(
                parent="buildings/b1", page_token=first.next_page_token, holder="users/u1"
            )
        )
    assert error_info(rich_status(raised.value)).reason == "INVALID_PAGE_TOKEN"


async def test_a_pin_is_unique_among_open_grants_and_free_again_once_ended(
    access: AccessHarness,
) -> None:
    # Every PIN drawn is 000000: the second grant finds no free PIN until the first ends.
    access.app._deps = replace(access.app.deps, random_below=lambda bound: 0)
    first = await access.issue()
    assert first.pin == "000000"
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await access.issue()
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    status = rich_status(raised.value)
    assert error_info(status).reason == "PIN_SPACE_EXHAUSTED"
    assert detail(status, error_details_pb2.RetryInfo).retry_delay.seconds > 0
    stub = await access.operator()
    await stub.RevokePin(
        access_pb2.RevokePinRequest(name=first.grant.name, request_id=request_id())
    )
    second = await access.issue()
    assert second.pin == "000000"
    # The PIN is judged by the open grant, not the revoked one.
    assert (await access.validate("main", "000000")).decision == GRANTED
