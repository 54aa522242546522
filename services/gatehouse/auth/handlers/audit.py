"""The security audit trail: listing it, and recording the denials the runtime's
authorization interceptor makes in front of the auth service."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from gatehouse.auth.domain.security_events import (
    Outcome,
    SecurityEvent,
    SecurityEventFilter,
    SecurityEventType,
    Severity,
)
from gatehouse.auth.domain.users import parse_user_name
from gatehouse.auth.handlers.common import AuthDependencies, Origin, audit
from gatehouse.auth.handlers.pagination import PageTokens, page_size
from gatehouse.auth.handlers.ports import AuthUnitOfWork
from gatehouse.runtime.errors import FieldViolation, InvalidArgument

ORDERINGS = {"": True, "time desc": True, "time": False}


@dataclass(frozen=True, slots=True)
class ListSecurityEvents:
    page_size: int = 0
    page_token: str = ""
    user: str = ""
    types: frozenset[SecurityEventType] = frozenset()
    outcome: Outcome | None = None
    min_severity: Severity | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    client_address: str = ""
    order_by: str = ""


@dataclass(frozen=True, slots=True)
class SecurityEventPage:
    events: list[SecurityEvent]
    next_page_token: str


async def list_security_events(
    query: ListSecurityEvents, uow: AuthUnitOfWork, deps: AuthDependencies
) -> SecurityEventPage:
    violations: list[FieldViolation] = []
    if query.user and parse_user_name(query.user) is None:
        violations.append(FieldViolation("user", "must be users/{user}"))
    if query.start_time and query.end_time and query.end_time < query.start_time:
        violations.append(FieldViolation("time_range", "end_time is before start_time"))
    if len(query.client_address) > 64:
        violations.append(FieldViolation("client_address", "must be at most 64 characters"))
    normalised_order = " ".join(query.order_by.split())
    if normalised_order not in ORDERINGS:
        violations.append(FieldViolation("order_by", "must be 'time desc' or 'time'"))
    if violations:
        raise InvalidArgument(violations)
    where = SecurityEventFilter(
        user=query.user,
        types=query.types,
        outcome=query.outcome,
        min_severity=query.min_severity,
        start_time=query.start_time,
        end_time=query.end_time,
        client_address=query.client_address,
        newest_first=ORDERINGS[normalised_order],
    )
    filters = json.dumps(
        [
            where.user,
            sorted(kind.value for kind in where.types),
            where.outcome.value if where.outcome else None,
            int(where.min_severity) if where.min_severity else None,
            where.start_time.isoformat() if where.start_time else None,
            where.end_time.isoformat() if where.end_time else None,
            where.client_address,
            where.newest_first,
        ]
    )
    limit = page_size(query.page_size, 100, 1000)
    now = deps.clock()
    tokens = PageTokens(deps.box, "security-events")
    position = tokens.read(query.page_token, filters, now)
    async with uow.reader() as reader:
        events = await reader.security_events.search(
            where, position[0] if position else None, limit + 1
        )
    next_token = ""
    if len(events) > limit:
        events = events[:limit]
        next_token = tokens.make([events[-1].id], filters, now)
    return SecurityEventPage(events, next_token)


async def record_denial(
    origin: Origin,
    method: str,
    reason: str,
    permission: str,
    uow: AuthUnitOfWork,
    deps: AuthDependencies,
) -> None:
    """A PERMISSION_DENIED made by the authorization interceptor (ARCHITECTURE §6)."""
    async with uow:
        await store_denial(origin, method, reason, permission, uow, deps)
        await uow.commit()


async def store_denial(
    origin: Origin,
    method: str,
    reason: str,
    permission: str,
    uow: AuthUnitOfWork,
    deps: AuthDependencies,
) -> None:
    """Record a denial inside the caller's open unit of work (the event consumer's, whose
    runner commits it together with the processed-event marker)."""
    details = {"method": method}
    if permission:
        details["permission"] = permission
    await audit(
        uow,
        deps,
        origin,
        SecurityEventType.PERMISSION_DENIED,
        Outcome.DENIED,
        reason=reason,
        details=details,
    )
