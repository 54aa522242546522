"""Visitors: RegisterVisitor, CheckInVisitor (one-day PIN), CheckOutVisitor, ListVisitors."""

from __future__ import annotations

from datetime import datetime, timedelta

from gatehouse.access import mapping
from gatehouse.access.domain import names
from gatehouse.access.domain.grants import Actor, Grant
from gatehouse.access.domain.pins import generate_invitation_code, normalize_invitation_code
from gatehouse.access.domain.visitors import (
    CheckInMethod,
    Visitor,
    VisitorState,
    end_of_local_day,
)
from gatehouse.access.handlers.common import (
    SOURCE,
    AccessDeps,
    PageTokens,
    Reply,
    building_or_404,
    check_doors,
    idempotency_key,
    in_transaction,
    page_size,
    principal_of,
    zone_of,
)
from gatehouse.access.handlers.pins import free_pin, pin_revoked_event
from gatehouse.access.handlers.ports import AccessUnitOfWork, UnitOfWorkFactory, VisitorFilter
from gatehouse.access.v1 import access_pb2
from gatehouse.access.v1 import events_pb2 as events
from gatehouse.events.v1.envelope_pb2 import Event
from gatehouse.runtime.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
from gatehouse.runtime.events import new_event
from gatehouse.runtime.identity import Caller

MAX_NAME_CHARS = 200
MAX_NOTE_CHARS = 1000
CHECKED_OUT_REASON = "visitor checked out"
# Clock skew between reception's machine and ours: an arrival this far back is still "now".
_ARRIVAL_GRACE = timedelta(minutes=5)
_ATTEMPT_WINDOW = timedelta(hours=1)
_VISITOR_STATES = frozenset(int(state) for state in VisitorState)


# --- RegisterVisitor -------------------------------------------------------------------------


async def register_visitor(
    request: access_pb2.RegisterVisitorRequest,
    caller: Caller,
    uow_factory: UnitOfWorkFactory,
    deps: AccessDeps,
) -> access_pb2.RegisterVisitorResponse:
    key = idempotency_key("RegisterVisitor", caller, request)
    building_id = names.building_id(request.parent) or ""
    building = await building_or_404(deps, building_id)
    zone = zone_of(building)
    given = request.visitor
    problems = mapping.Problems()
    now = deps.clock()
    if not given.display_name.strip():
        problems.add("visitor.display_name", "is required")
    for field_name in ("display_name", "company"):
        if len(getattr(given, field_name)) > MAX_NAME_CHARS:
            problems.add(f"visitor.{field_name}", f"must be at most {MAX_NAME_CHARS} characters")
    if len(given.note) > MAX_NOTE_CHARS:
        problems.add("visitor.note", f"must be at most {MAX_NOTE_CHARS} characters")
    if not names.is_user(given.host):
        problems.add("visitor.host", "is required: 'users/{user}'")
    elif not await deps.people.exists(given.host):
        problems.add("visitor.host", "is not a user known to auth", "UNKNOWN_HOST")
    arrival = departure = None
    if not given.HasField("expected_arrival_time"):
        problems.add("visitor.expected_arrival_time", "is required")
    else:
        arrival = mapping.from_timestamp(given.expected_arrival_time)
        if arrival < now - _ARRIVAL_GRACE:
            problems.add("visitor.expected_arrival_time", "is in the past", "INVALID_VISIT_WINDOW")
    if given.HasField("expected_departure_time"):
        departure = mapping.from_timestamp(given.expected_departure_time)
        if arrival is not None and departure <= arrival:
            problems.add(
                "visitor.expected_departure_time",
                "must be after the expected arrival",
                "INVALID_VISIT_WINDOW",
            )
    door_ids, door_problems, reason = await check_doors(
        deps, building_id, list(given.doors), "visitor.doors"
    )
    problems.extend(door_problems, reason or "INVALID_FIELD")
    problems.raise_if_any()
    assert arrival is not None  # refused above otherwise
    expires = end_of_local_day(departure or arrival, zone)

    async def work(uow: AccessUnitOfWork) -> Reply:
        code = generate_invitation_code(deps.random_below)
        visitor = Visitor(
            id=deps.new_id(),
            building_id=building_id,
            display_name=given.display_name,
            host=given.host,
            expected_arrival_time=arrival,
            invitation_expire_time=expires,
            code_digest=deps.pins.code_digest(building_id, code),
            create_time=now,
            registered_by=mapping.actor_of(caller),
            company=given.company,
            expected_departure_time=departure,
            doors=tuple(door_ids),
            note=given.note,
        )
        # A code colliding with another visitor's raises DuplicateKeyError: the transaction
        # runs again with a new code.
        await uow.visitors.add(visitor)
        shown = mapping.visitor_proto(visitor, now)
        return Reply(
            access_pb2.RegisterVisitorResponse(visitor=shown, invitation_code=code),
            access_pb2.RegisterVisitorResponse(visitor=shown),
        )

    return await in_transaction(
        uow_factory, deps, key, access_pb2.RegisterVisitorResponse.FromString, work
    )


# --- CheckInVisitor --------------------------------------------------------------------------


def _reference_required(problem: str) -> InvalidArgument:
    return InvalidArgument([FieldViolation("name", problem)], reason="VISITOR_REFERENCE_REQUIRED")


def _reference(
    request: access_pb2.CheckInVisitorRequest,
) -> tuple[str, str, CheckInMethod, str]:
    """(building, visitor id or "", method, normalized invitation code or "")."""
    if bool(request.name) == bool(request.invitation_code):
        raise _reference_required("set exactly one of name and invitation_code")
    if request.name:
        ids = names.visitor_ids(request.name)
        if ids is None:
            raise InvalidArgument(
                [FieldViolation("name", "must look like 'buildings/*/visitors/*'")]
            )
        return ids[0], ids[1], CheckInMethod.RECEPTION, ""
    building_id = names.building_id(request.parent) or ""
    if not building_id:
        raise _reference_required("parent is required with invitation_code")
    code = normalize_invitation_code(request.invitation_code)
    if code is None:
        raise InvalidArgument(
            [FieldViolation("invitation_code", "must be 8 Crockford base32 characters")],
            reason="INVALID_INVITATION_CODE_FORMAT",
        )
    return building_id, "", CheckInMethod.INVITATION_CODE, code


async def check_in_visitor(
    request: access_pb2.CheckInVisitorRequest,
    caller: Caller,
    uow_factory: UnitOfWorkFactory,
    deps: AccessDeps,
) -> access_pb2.CheckInVisitorResponse:
    building_id, visitor_id, method, code = _reference(request)
    attempts_key = f"access:invitation-failures:{principal_of(caller)}"
    if code and deps.kv is not None:
        failures = await deps.kv.get(attempts_key)
        if failures is not None and int(failures) >= deps.max_invitation_failures:
            raise ResourceExhausted(
                "too many wrong invitation codes; try again later or check in at reception",
                reason="TOO_MANY_ATTEMPTS",
                retry_after=_ATTEMPT_WINDOW,
            )
    key = idempotency_key("CheckInVisitor", caller, request)
    building = await building_or_404(deps, building_id)
    zone = zone_of(building)
    actor = mapping.actor_of(caller)

    async def work(uow: AccessUnitOfWork) -> Reply:
        now = deps.clock()
        if code:
            visitor = await uow.visitors.with_code(
                building_id, deps.pins.code_digest(building_id, code)
            )
            if visitor is None:
                raise NotFound(request.parent + "/visitors", reason="INVITATION_NOT_FOUND")
        else:
            visitor = await uow.visitors.get(building_id, visitor_id)
            if visitor is None:
                raise NotFound(request.name, reason="VISITOR_NOT_FOUND")
        state = visitor.state(now)
        if state is VisitorState.CHECKED_IN:
            raise FailedPrecondition(
                "the visitor is already in", reason="VISITOR_ALREADY_CHECKED_IN"
            )
        if state is VisitorState.CHECKED_OUT:
            raise FailedPrecondition(
                "the visit is over; register the visitor again", reason="VISITOR_CHECKED_OUT"
            )
        if code and state is VisitorState.EXPIRED:
            raise FailedPrecondition("the invitation has expired", reason="INVITATION_EXPIRED")
        emergency = await uow.emergencies.get(building_id)
        if emergency is not None and emergency.lockdown:
            raise FailedPrecondition("the building is in lockdown", reason="EMERGENCY_ACTIVE")
        pin = ""
        grant: Grant | None = None
        visitor_name = names.visitor_name(building_id, visitor.id)
        if visitor.doors:
            pin, digest = await free_pin(
                uow, deps, building_id, deps.pin_policy.default_length, now
            )
            grant = Grant(
                id=deps.new_id(),
                building_id=building_id,
                holder=visitor_name,
                doors=visitor.doors,
                pin_digest=digest,
                valid_from=now,
                valid_until=end_of_local_day(now, zone),
                create_time=now,
                issued_by=actor,
                display_name=f"Visitor {visitor.display_name}"[:MAX_NAME_CHARS],
                visitor_id=visitor.id,
            )
            await uow.grants.add(grant)
        inside = visitor.checked_in(now, method, grant.id if grant is not None else "")
        await uow.visitors.update(inside)
        await uow.outbox.add(_checked_in_event(inside, grant, actor, method))
        shown = mapping.visitor_proto(inside, now)
        shown_grant = (
            mapping.grant_proto(grant, now, building.time_zone) if grant is not None else None
        )
        return Reply(
            access_pb2.CheckInVisitorResponse(visitor=shown, grant=shown_grant, pin=pin),
            access_pb2.CheckInVisitorResponse(visitor=shown, grant=shown_grant),
        )

    try:
        return await in_transaction(
            uow_factory, deps, key, access_pb2.CheckInVisitorResponse.FromString, work
        )
    except NotFound as missing:
        if code and deps.kv is not None and missing.reason == "INVITATION_NOT_FOUND":
            await deps.kv.increment(attempts_key, ttl_on_create=_ATTEMPT_WINDOW)
        raise


def _checked_in_event(
    visitor: Visitor, grant: Grant | None, actor: Actor, method: CheckInMethod
) -> Event:
    name = names.visitor_name(visitor.building_id, visitor.id)
    return new_event(
        "visitor.checked_in",
        source=SOURCE,
        subject=name,
        time=visitor.check_in_time,
        data=events.VisitorCheckedIn(
            visitor=name,
            display_name=visitor.display_name,
            company=visitor.company,
            host=visitor.host,
            method=int(method),  # type: ignore[arg-type]
            grant=names.grant_name(visitor.building_id, grant.id) if grant is not None else "",
            doors=[names.door_name(visitor.building_id, door) for door in visitor.doors],
            actor=mapping.actor_proto(actor),
            building=names.building_name(visitor.building_id),
        ),
    )


# --- CheckOutVisitor -------------------------------------------------------------------------


async def check_out_visitor(
    request: access_pb2.CheckOutVisitorRequest,
    caller: Caller,
    uow_factory: UnitOfWorkFactory,
    deps: AccessDeps,
) -> access_pb2.CheckOutVisitorResponse:
    key = idempotency_key("CheckOutVisitor", caller, request)
    building_id, visitor_id = names.visitor_ids(request.name) or ("", "")
    await building_or_404(deps, building_id)
    actor = mapping.actor_of(caller)

    async def work(uow: AccessUnitOfWork) -> Reply:
        now = deps.clock()
        visitor = await uow.visitors.get(building_id, visitor_id)
        if visitor is None:
            raise NotFound(request.name, reason="VISITOR_NOT_FOUND")
        if visitor.state(now) is not VisitorState.CHECKED_IN:
            raise FailedPrecondition(
                "the visitor is not checked in", reason="VISITOR_NOT_CHECKED_IN"
            )
        for grant in await uow.grants.open_of_visitor(building_id, visitor_id, now):
            revoked = grant.revoked(now, actor, CHECKED_OUT_REASON)
            if await uow.grants.revoke(revoked):
                await uow.outbox.add(pin_revoked_event(revoked, CHECKED_OUT_REASON))
        out = visitor.checked_out(now)
        await uow.visitors.update(out)
        name = names.visitor_name(building_id, visitor_id)
        await uow.outbox.add(
            new_event(
                "visitor.checked_out",
                source=SOURCE,
                subject=name,
                time=now,
                data=events.VisitorCheckedOut(
                    visitor=name,
                    display_name=out.display_name,
                    host=out.host,
                    check_in_time=mapping.timestamp(out.check_in_time),
                    actor=mapping.actor_proto(actor),
                    building=names.building_name(building_id),
                ),
            )
        )
        return Reply(access_pb2.CheckOutVisitorResponse(visitor=mapping.visitor_proto(out, now)))

    return await in_transaction(
        uow_factory, deps, key, access_pb2.CheckOutVisitorResponse.FromString, work
    )


# --- ListVisitors ----------------------------------------------------------------------------


async def list_visitors(
    request: access_pb2.ListVisitorsRequest, uow_factory: UnitOfWorkFactory, deps: AccessDeps
) -> access_pb2.ListVisitorsResponse:
    building_id = names.building_id(request.parent) or ""
    problems = mapping.Problems()
    if request.host and not names.is_user(request.host):
        problems.add("host", "must look like 'users/*'")
    if any(state not in _VISITOR_STATES for state in request.states):
        problems.add("states", "holds an unknown state")
    arrival_from = arrival_until = None
    if request.expected_arrival.HasField("start_time"):
        arrival_from = mapping.from_timestamp(request.expected_arrival.start_time)
    if request.expected_arrival.HasField("end_time"):
        arrival_until = mapping.from_timestamp(request.expected_arrival.end_time)
    if arrival_from and arrival_until and arrival_until < arrival_from:
        problems.add("expected_arrival.end_time", "must not be before the start")
    problems.raise_if_any()
    await building_or_404(deps, building_id)
    states = frozenset(VisitorState(state) for state in request.states)
    filters = VisitorFilter(request.host, states, arrival_from, arrival_until)
    tokens = PageTokens(deps.secret_key, "visitors")
    fingerprint = f"{building_id}|{filters}"
    now = deps.clock()
    position = tokens.read(request.page_token, fingerprint, now)
    after = (datetime.fromisoformat(position[0]), position[1]) if position else None
    limit = page_size(request.page_size)
    async with uow_factory() as uow:
        found = await uow.visitors.page(building_id, filters, after, limit + 1, now)
    page = found[:limit]
    token = ""
    if len(found) > limit:
        last = page[-1]
        token = tokens.make([last.expected_arrival_time.isoformat(), last.id], fingerprint, now)
    return access_pb2.ListVisitorsResponse(
        visitors=[mapping.visitor_proto(visitor, now) for visitor in page],
        next_page_token=token,
    )
