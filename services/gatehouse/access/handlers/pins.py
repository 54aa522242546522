"""Grants: IssuePin, RevokePin, ListGrants, and ValidatePin, the door controllers' hot path."""

from __future__ import annotations

from datetime import datetime, timedelta

from google.protobuf import duration_pb2
from google.protobuf.message import Message

from gatehouse.access import mapping
from gatehouse.access.domain import names
from gatehouse.access.domain.chain import Decision as LoggedDecision
from gatehouse.access.domain.chain import EntryKind, LogEntry
from gatehouse.access.domain.grants import Actor, Decision, Grant, GrantState, decide
from gatehouse.access.domain.lockout import record_failure
from gatehouse.access.domain.pins import MAX_PIN_LENGTH, MIN_PIN_LENGTH, PinPolicy, generate_pin
from gatehouse.access.domain.schedules import schedule_problems
from gatehouse.access.domain.visitors import VisitorState
from gatehouse.access.handlers.common import (
    SOURCE,
    AccessDeps,
    PageTokens,
    Reply,
    append_entry,
    building_or_404,
    check_doors,
    door_or_404,
    idempotency_key,
    in_transaction,
    page_size,
    zone_of,
)
from gatehouse.access.handlers.ports import AccessUnitOfWork, GrantFilter, UnitOfWorkFactory
from gatehouse.access.v1 import access_pb2
from gatehouse.access.v1 import events_pb2 as events
from gatehouse.events.v1.envelope_pb2 import Event
from gatehouse.runtime.errors import (
    AccessRefused,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
from gatehouse.runtime.events import new_event
from gatehouse.runtime.identity import Caller

MAX_NAME_CHARS = 200
MAX_REASON_CHARS = 500
# Random PINs tried before the building's PIN space counts as full for that length.
_PIN_TRIES = 64
# Re-decisions of one entry after a concurrent revocation or use changed its grant.
_DECIDE_TRIES = 3


# --- IssuePin --------------------------------------------------------------------------------


async def issue_pin(
    request: access_pb2.IssuePinRequest,
    caller: Caller,
    uow_factory: UnitOfWorkFactory,
    deps: AccessDeps,
) -> access_pb2.IssuePinResponse:
    key = idempotency_key("IssuePin", caller, request)
    building_id = names.building_id(request.parent) or ""
    building = await building_or_404(deps, building_id)
    problems = mapping.Problems()
    now = deps.clock()
    grant = request.grant

    visitor_id = ""
    if names.is_user(grant.holder):
        if not await deps.people.exists(grant.holder):
            problems.add("grant.holder", "is not a user known to auth", "UNKNOWN_HOLDER")
    elif (visitor := names.visitor_ids(grant.holder)) is not None:
        if visitor[0] != building_id:
            problems.add("grant.holder", "is not a visitor of this building", "UNKNOWN_HOLDER")
        visitor_id = visitor[1]
    else:
        problems.add(
            "grant.holder",
            "is required: 'users/{user}' or 'buildings/{building}/visitors/{visitor}'",
        )
    if not grant.doors:
        problems.add("grant.doors", "at least one door is required")
    door_ids, door_problems, reason = await check_doors(
        deps, building_id, list(grant.doors), "grant.doors"
    )
    problems.extend(door_problems, reason or "INVALID_FIELD")
    valid_from = (
        mapping.from_timestamp(grant.validity.start_time)
        if grant.validity.HasField("start_time")
        else now
    )
    valid_until = (
        mapping.from_timestamp(grant.validity.end_time)
        if grant.validity.HasField("end_time")
        else None
    )
    if valid_until is not None and valid_until <= valid_from:
        problems.add(
            "grant.validity.end_time", "must be after the start", "INVALID_VALIDITY_WINDOW"
        )
    elif valid_until is not None and valid_until <= now:
        problems.add("grant.validity.end_time", "has already passed", "INVALID_VALIDITY_WINDOW")
    schedule = None
    if grant.HasField("schedule"):
        schedule = mapping.parse_schedule(grant.schedule, "grant.schedule", problems)
        problems.extend(schedule_problems(schedule, "grant.schedule"), "INVALID_SCHEDULE")
    length = deps.pin_policy.length_for(request.pin_length)
    if length is None:
        problems.add(
            "pin_length",
            f"must be 0 (the default) or {MIN_PIN_LENGTH} to {MAX_PIN_LENGTH}",
            "INVALID_PIN_LENGTH",
        )
    if grant.max_uses < 0:
        problems.add("grant.max_uses", "must not be negative (0 means unlimited)")
    if len(grant.display_name) > MAX_NAME_CHARS:
        problems.add("grant.display_name", f"must be at most {MAX_NAME_CHARS} characters")
    problems.raise_if_any()
    assert length is not None  # the problems above refuse an invalid length

    async def work(uow: AccessUnitOfWork) -> Reply:
        if visitor_id:
            visitor = await uow.visitors.get(building_id, visitor_id)
            if visitor is None:
                raise InvalidArgument(
                    [FieldViolation("grant.holder", "is not a visitor of this building")],
                    reason="UNKNOWN_HOLDER",
                )
            if visitor.state(now) is VisitorState.CHECKED_OUT:
                raise FailedPrecondition(
                    f"{grant.holder} has already checked out", reason="VISITOR_CHECKED_OUT"
                )
        pin, digest = await free_pin(uow, deps, building_id, length, now)
        created = Grant(
            id=deps.new_id(),
            building_id=building_id,
            holder=grant.holder,
            doors=tuple(door_ids),
            pin_digest=digest,
            valid_from=valid_from,
            valid_until=valid_until,
            create_time=now,
            issued_by=mapping.actor_of(caller),
            display_name=grant.display_name,
            schedule=schedule,
            max_uses=grant.max_uses,
            visitor_id=visitor_id,
        )
        await uow.grants.add(created)
        shown = mapping.grant_proto(created, now, building.time_zone)
        return Reply(
            access_pb2.IssuePinResponse(pin=pin, grant=shown),
            access_pb2.IssuePinResponse(grant=shown),
        )

    return await in_transaction(
        uow_factory, deps, key, access_pb2.IssuePinResponse.FromString, work
    )


async def free_pin(
    uow: AccessUnitOfWork, deps: AccessDeps, building_id: str, length: int, now: datetime
) -> tuple[str, str]:
    for _ in range(_PIN_TRIES):
        pin = generate_pin(length, deps.random_below)
        digest = deps.pins.digest(building_id, pin)
        if not await uow.grants.digest_taken(building_id, digest, now):
            return pin, digest
    raise ResourceExhausted(
        f"no unused {length}-digit PIN is left in this building; use a longer pin_length",
        reason="PIN_SPACE_EXHAUSTED",
        # PINs come free as grants end; a longer pin_length works at once.
        retry_after=timedelta(minutes=5),
    )


# --- RevokePin -------------------------------------------------------------------------------


async def revoke_pin(
    request: access_pb2.RevokePinRequest,
    caller: Caller,
    uow_factory: UnitOfWorkFactory,
    deps: AccessDeps,
) -> access_pb2.RevokePinResponse:
    key = idempotency_key("RevokePin", caller, request)
    building_id, grant_id = names.grant_ids(request.name) or ("", "")
    if len(request.reason) > MAX_REASON_CHARS:
        raise InvalidArgument(
            [FieldViolation("reason", f"must be at most {MAX_REASON_CHARS} characters")]
        )
    building = await building_or_404(deps, building_id)

    async def work(uow: AccessUnitOfWork) -> Reply:
        now = deps.clock()
        grant = await uow.grants.get(building_id, grant_id)
        if grant is None:
            raise NotFound(request.name, reason="GRANT_NOT_FOUND")
        if grant.revoke_time is None:
            revoked = grant.revoked(now, mapping.actor_of(caller), request.reason)
            if await uow.grants.revoke(revoked):
                await uow.outbox.add(pin_revoked_event(revoked, request.reason))
                grant = revoked
            else:
                grant = await uow.grants.get(building_id, grant_id) or grant
        return Reply(
            access_pb2.RevokePinResponse(grant=mapping.grant_proto(grant, now, building.time_zone))
        )

    return await in_transaction(
        uow_factory, deps, key, access_pb2.RevokePinResponse.FromString, work
    )


def pin_revoked_event(grant: Grant, reason: str) -> Event:
    name = names.grant_name(grant.building_id, grant.id)
    return new_event(
        "pin.revoked",
        source=SOURCE,
        subject=name,
        time=grant.revoke_time,
        data=events.PinRevoked(
            grant=name,
            holder=grant.holder,
            actor=mapping.actor_proto(grant.revoked_by),
            reason=reason,
            building=names.building_name(grant.building_id),
        ),
    )


# --- ValidatePin -----------------------------------------------------------------------------


def _not_bound(door: str) -> AccessRefused:
    # Audited by the runtime like the contract's own refusals (a probing device shows there).
    return AccessRefused(
        f"the caller is not the door controller of {door}", reason="DEVICE_NOT_BOUND_TO_DOOR"
    )


async def validate_pin(
    request: access_pb2.ValidatePinRequest,
    caller: Caller,
    uow_factory: UnitOfWorkFactory,
    deps: AccessDeps,
) -> access_pb2.ValidatePinResponse:
    building_id, door_id = names.door_ids(request.door) or ("", "")
    if not PinPolicy.well_formed(request.pin):
        # Never echo the PIN: the message says what is wrong, not what was sent.
        raise InvalidArgument(
            [
                FieldViolation(
                    "pin", f"must be {MIN_PIN_LENGTH} to {MAX_PIN_LENGTH} digits and nothing else"
                )
            ],
            reason="INVALID_PIN_FORMAT",
        )
    digest = deps.pins.digest(building_id, request.pin)
    # The stored fingerprint must not let anyone brute-force the PIN back out of it.
    keyed = access_pb2.ValidatePinRequest()
    keyed.CopyFrom(request)
    keyed.pin = digest
    key = idempotency_key("ValidatePin", caller, keyed)
    device = names.device_of_spiffe_id(caller.device_spiffe_id)
    if device is None or device[0] != building_id:
        # A device of another building learns nothing about this one's doors.
        raise _not_bound(request.door)
    door = await door_or_404(deps, building_id, door_id)
    if door.controller != f"buildings/{device[0]}/devices/{device[1]}":
        raise _not_bound(request.door)
    building = await building_or_404(deps, building_id)
    zone = zone_of(building)
    actor = Actor(
        service=caller.device_spiffe_id or caller.peer_spiffe_id or "",
        client_address=caller.client_address or "",
    )

    async def work(uow: AccessUnitOfWork) -> Reply:
        # Every decision of the building waits here for the one before it to commit: use
        # counts, keypad counts and the chain see one decision at a time.
        await uow.log.lock_head(building_id)
        now = deps.clock()
        emergency = await uow.emergencies.get(building_id)
        keypad = await uow.keypads.get(building_id, door_id)
        schedule = await uow.schedules.get(building_id, door_id)
        lockdown = emergency is not None and emergency.lockdown
        decision: Decision | None = None
        for _ in range(_DECIDE_TRIES):
            candidates = (
                []
                if lockdown or keypad.locked(now)
                else await uow.grants.with_digest(building_id, digest)
            )
            decision = decide(
                door_id=door_id,
                now=now,
                zone=zone,
                lockdown=lockdown,
                locked_out=keypad.locked(now),
                candidates=candidates,
                door=schedule,
            )
            if not decision.granted or decision.grant is None:
                break
            if await uow.grants.count_use(decision.grant, now):
                break
            # Revoked or used up by a concurrent call since it was read: decide again.
            decision = None
        if decision is None:
            raise RuntimeError("a grant kept changing under ValidatePin")
        failed_attempts = 0
        lockout_end = keypad.locked_until if keypad.locked(now) else None
        lockout_started = False
        if decision.counts_as_failure:
            outcome = record_failure(keypad, now, deps.lockout)
            await uow.keypads.put(outcome.state)
            failed_attempts = outcome.failed_attempts
            if outcome.lockout_started:
                lockout_started = True
                lockout_end = outcome.state.locked_until
        entry = await _log_attempt(
            uow, deps, building_id, door_id, decision, actor, now, failed_attempts
        )
        if lockout_started and lockout_end is not None:
            await _log_lockout(
                uow, deps, building_id, door_id, actor, now, failed_attempts, lockout_end
            )
        response = access_pb2.ValidatePinResponse(
            decision=access_pb2.ACCESS_DECISION_GRANTED
            if decision.granted
            else access_pb2.ACCESS_DECISION_DENIED,
            deny_reason=int(decision.reason or 0),  # type: ignore[arg-type]
            access_log_entry=names.log_entry_name(building_id, entry.id),
            lockout_end_time=mapping.timestamp(lockout_end),
        )
        return Reply(response)

    return await in_transaction(
        uow_factory, deps, key, access_pb2.ValidatePinResponse.FromString, work
    )


async def _log_attempt(
    uow: AccessUnitOfWork,
    deps: AccessDeps,
    building_id: str,
    door_id: str,
    decision: Decision,
    actor: Actor,
    now: datetime,
    failed_attempts: int,
) -> LogEntry:
    grant = decision.grant
    door = names.door_name(building_id, door_id)
    grant_name = names.grant_name(building_id, grant.id) if grant is not None else ""
    entry = LogEntry(
        id=deps.new_id(),
        building_id=building_id,
        sequence=0,
        kind=EntryKind.PIN_ATTEMPT,
        time=now,
        event_id="",
        door_id=door_id,
        decision=LoggedDecision.GRANTED if decision.granted else LoggedDecision.DENIED,
        deny_reason=decision.reason,
        grant_id=grant.id if grant is not None else "",
        holder=decision.holder,
        actor=actor,
    )

    def payload(entry_name: str) -> Message:
        if decision.granted and grant is not None:
            return events.AccessGranted(
                door=door,
                grant=grant_name,
                holder=grant.holder,
                use_count=grant.use_count,
                max_uses=grant.max_uses,
                access_log_entry=entry_name,
                actor=mapping.actor_proto(actor),
                building=names.building_name(building_id),
            )
        return events.AccessDenied(
            door=door,
            deny_reason=int(decision.reason or 0),  # type: ignore[arg-type]
            grant=grant_name,
            holder=decision.holder,
            failed_attempts=failed_attempts,
            access_log_entry=entry_name,
            actor=mapping.actor_proto(actor),
            building=names.building_name(building_id),
        )

    event_type = "access.granted" if decision.granted else "access.denied"
    placed, _ = await append_entry(uow, entry, event_type, door, payload)
    return placed


async def _log_lockout(
    uow: AccessUnitOfWork,
    deps: AccessDeps,
    building_id: str,
    door_id: str,
    actor: Actor,
    now: datetime,
    failed_attempts: int,
    lockout_end: datetime,
) -> LogEntry:
    door = names.door_name(building_id, door_id)
    entry = LogEntry(
        id=deps.new_id(),
        building_id=building_id,
        sequence=0,
        kind=EntryKind.KEYPAD_LOCKED_OUT,
        time=now,
        event_id="",
        door_id=door_id,
        actor=actor,
    )
    window = duration_pb2.Duration()
    window.FromTimedelta(deps.lockout.window)

    def payload(entry_name: str) -> Message:
        return events.KeypadLockedOut(
            door=door,
            failed_attempts=failed_attempts,
            window=window,
            lockout_end_time=mapping.timestamp(lockout_end),
            actor=mapping.actor_proto(actor),
            access_log_entry=entry_name,
            building=names.building_name(building_id),
        )

    placed, _ = await append_entry(uow, entry, "keypad.locked_out", door, payload)
    return placed


# --- ListGrants ------------------------------------------------------------------------------


async def list_grants(
    request: access_pb2.ListGrantsRequest,
    uow_factory: UnitOfWorkFactory,
    deps: AccessDeps,
) -> access_pb2.ListGrantsResponse:
    building_id = names.building_id(request.parent) or ""
    problems = mapping.Problems()
    if request.holder and not (names.is_user(request.holder) or names.visitor_ids(request.holder)):
        problems.add("holder", "must look like 'users/*' or 'buildings/*/visitors/*'")
    door_id = ""
    if request.door:
        parsed = names.door_ids(request.door)
        if parsed is None or parsed[0] != building_id:
            problems.add("door", "must be a door of this building, 'buildings/*/doors/*'")
        else:
            door_id = parsed[1]
    states = frozenset(GrantState(state) for state in request.states if state in _GRANT_STATES)
    if any(state not in _GRANT_STATES for state in request.states):
        problems.add("states", "holds an unknown state")
    problems.raise_if_any()
    building = await building_or_404(deps, building_id)
    tokens = PageTokens(deps.secret_key, "grants")
    filters = f"{building_id}|{request.holder}|{door_id}|{sorted(states)}"
    now = deps.clock()
    position = tokens.read(request.page_token, filters, now)
    after = (datetime.fromisoformat(position[0]), position[1]) if position else None
    limit = page_size(request.page_size)
    async with uow_factory() as uow:
        found = await uow.grants.page(
            building_id, GrantFilter(request.holder, door_id, states), after, limit + 1, now
        )
    page = found[:limit]
    token = ""
    if len(found) > limit:
        last = page[-1]
        token = tokens.make([last.create_time.isoformat(), last.id], filters, now)
    return access_pb2.ListGrantsResponse(
        grants=[mapping.grant_proto(grant, now, building.time_zone) for grant in page],
        next_page_token=token,
    )


_GRANT_STATES = frozenset(int(state) for state in GrantState)
