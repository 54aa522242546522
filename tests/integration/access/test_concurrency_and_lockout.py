"""The one-use PIN race (exactly one of many concurrent validations is granted) and the keypad
lockout with its expiry."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from gatehouse.access.v1 import access_pb2
from gatehouse.access.v1 import events_pb2 as events
from tests.integration.access.harness import AccessHarness, door, request_id

GRANTED = access_pb2.ACCESS_DECISION_GRANTED


async def test_many_concurrent_validations_of_a_one_use_pin_grant_exactly_once(
    access: AccessHarness,
) -> None:
    issued = await access.issue(max_uses=1)
    controller = await access.controller("main")
    attempts = 12
    results = await asyncio.gather(
        *(
            controller.ValidatePin(
                access_pb2.ValidatePinRequest(
                    door=door("main"), pin=issued.pin, request_id=request_id()
                )
            )
            for _ in range(attempts)
        )
    )
    decisions = [result.decision for result in results]
    assert decisions.count(GRANTED) == 1
    assert sorted(result.deny_reason for result in results if result.decision != GRANTED) == [
        access_pb2.DENY_REASON_USES_EXHAUSTED
    ] * (attempts - 1)
    entries = await access.entries()
    assert [entry.sequence_number for entry in entries] == list(range(1, attempts + 1))
    stub = await access.operator()
    grant = (await stub.ListGrants(access_pb2.ListGrantsRequest(parent="buildings/b1"))).grants[0]
    assert (grant.use_count, grant.state) == (1, access_pb2.GRANT_STATE_EXHAUSTED)
    verified = await stub.VerifyAuditLog(access_pb2.VerifyAuditLogRequest(parent="buildings/b1"))
    assert verified.ok
    assert verified.entries_checked == attempts


async def test_wrong_pins_lock_the_keypad_out_until_the_lockout_ends(
    access: AccessHarness,
) -> None:
    issued = await access.issue()
    wrong = next(f"{n:06d}" for n in range(1_000_000) if f"{n:06d}" != issued.pin)
    # FAST: 3 unknown PINs within a minute lock the keypad for 5 minutes.
    first = await access.validate("main", wrong)
    second = await access.validate("main", wrong)
    assert first.deny_reason == second.deny_reason == access_pb2.DENY_REASON_UNKNOWN_PIN
    assert not first.HasField("lockout_end_time")
    third = await access.validate("main", wrong)
    assert third.deny_reason == access_pb2.DENY_REASON_UNKNOWN_PIN
    assert third.HasField("lockout_end_time")
    # Locked out: even the right PIN is refused, and other doors are not affected.
    locked = await access.validate("main", issued.pin)
    assert locked.deny_reason == access_pb2.DENY_REASON_LOCKED_OUT
    assert locked.lockout_end_time == third.lockout_end_time
    side_pin = await access.issue(doors=[door("side")])
    assert (await access.validate("side", side_pin.pin)).decision == GRANTED
    kinds = [entry.kind for entry in await access.entries(door=door("main"))]
    assert kinds == [
        access_pb2.ACCESS_LOG_ENTRY_KIND_PIN_ATTEMPT,
        access_pb2.ACCESS_LOG_ENTRY_KIND_PIN_ATTEMPT,
        access_pb2.ACCESS_LOG_ENTRY_KIND_PIN_ATTEMPT,
        access_pb2.ACCESS_LOG_ENTRY_KIND_KEYPAD_LOCKED_OUT,
        access_pb2.ACCESS_LOG_ENTRY_KIND_PIN_ATTEMPT,
    ]
    lockouts = await access.events("events.keypad", wait_for=1)
    payload = events.KeypadLockedOut()
    assert lockouts[0].data.Unpack(payload)
    assert (payload.failed_attempts, payload.door) == (3, door("main"))
    assert payload.window.ToTimedelta() == timedelta(minutes=1)
    # The lockout ends by time.
    access.clock.advance(timedelta(minutes=5, seconds=1))
    assert (await access.validate("main", issued.pin)).decision == GRANTED


async def test_failures_outside_the_window_do_not_add_up(access: AccessHarness) -> None:
    issued = await access.issue()
    wrong = "000000" if issued.pin != "000000" else "000001"
    for _ in range(2):
        await access.validate("main", wrong)
    access.clock.advance(timedelta(minutes=2))
    result = await access.validate("main", wrong)
    assert result.deny_reason == access_pb2.DENY_REASON_UNKNOWN_PIN
    assert not result.HasField("lockout_end_time")
    denied = await access.events("events.access", wait_for=3)
    payload = events.AccessDenied()
    assert denied[-1].data.Unpack(payload)
    assert payload.failed_attempts == 1
