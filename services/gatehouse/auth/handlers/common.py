"""What the auth use cases share: who is asking, their dependencies, idempotent replies,
audit records that survive a refused call, tokens and revocation."""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Generic, TypeVar

from google.protobuf.message import Message

from gatehouse.auth import mapping
from gatehouse.auth.domain.passwords import PasswordPolicy
from gatehouse.auth.domain.roles import (
    PermissionCatalogue,
    Role,
    effective_permissions,
    role_name,
)
from gatehouse.auth.domain.security_events import (
    DEFAULT_SEVERITY,
    MAX_USER_AGENT,
    Actor,
    Outcome,
    SecurityEvent,
    SecurityEventType,
)
from gatehouse.auth.domain.sessions import RefreshToken, RevokeReason, Session
from gatehouse.auth.domain.tokens import AccessTokenGrant
from gatehouse.auth.domain.users import User
from gatehouse.auth.handlers.ports import (
    AuthUnitOfWork,
    Clock,
    KeyRing,
    Lockout,
    PasswordHasher,
    RateLimiter,
    Revocations,
    SecretBox,
)
from gatehouse.auth.settings import AuthSettings
from gatehouse.auth.v1 import events_pb2
from gatehouse.runtime.db import DuplicateKeyError
from gatehouse.runtime.errors import AlreadyExists, DomainError
from gatehouse.runtime.events import new_event
from gatehouse.runtime.idempotency import IdempotencyRecord
from gatehouse.runtime.ids import new_ulid

log = logging.getLogger("gatehouse.auth")

SOURCE = "auth"
SERVICE_PATH = "gatehouse.auth.v1.AuthService"

R = TypeVar("R")
M = TypeVar("M", bound=Message)


@dataclass(frozen=True, slots=True)
class Origin:
    """Who is asking, as the interceptors established it (never from the request body)."""

    user_id: str | None = None
    session_id: str | None = None
    token_id: str | None = None
    token_expires_at: datetime | None = None
    permissions: tuple[str, ...] = ()
    service: str = ""  # the mTLS peer's SPIFFE id
    client_address: str = ""
    user_agent: str = ""
    correlation_id: str = ""

    @property
    def user(self) -> str:
        return f"users/{self.user_id}" if self.user_id else ""

    def actor(self, user: str | None = None) -> Actor:
        return Actor(
            user=self.user if user is None else user,
            service=self.service,
            client_address=self.client_address,
        )


class RoleDefinitions:
    """Role definitions by id, remembered once read.

    Safe because a role's permissions never change after it is created: the contract has no
    UpdateRole or DeleteRole, and built-in roles are synced at start-up only (a release that
    changes them reaches each replica when it restarts with it). Who holds which role is
    never cached: it is read live, as IntrospectToken promises.
    """

    def __init__(self) -> None:
        self._known: dict[str, Role] = {}

    async def get_many(self, uow: AuthUnitOfWork, role_ids: Sequence[str]) -> list[Role]:
        missing = [role_id for role_id in role_ids if role_id not in self._known]
        if missing:
            for role in await uow.roles.get_many(missing):
                self._known[role.id] = role
        return [self._known[role_id] for role_id in role_ids if role_id in self._known]


@dataclass(frozen=True)
class AuthDependencies:
    """Everything a handler needs besides its unit of work; built by the composition root."""

    settings: AuthSettings
    issuer: str
    audience: str
    clock: Clock
    hasher: PasswordHasher
    box: SecretBox
    keys: KeyRing
    lockout: Lockout
    limiter: RateLimiter
    revocations: Revocations
    catalogue: PermissionCatalogue
    password_policy: PasswordPolicy = field(default_factory=PasswordPolicy)
    roles: RoleDefinitions = field(default_factory=RoleDefinitions)


# --- idempotent replies ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RequestIdentity:
    """A mutating request's `request_id` and its bytes without it (what makes a retry the
    same request)."""

    request_id: str
    body: bytes


@dataclass(frozen=True)
class Reply(Generic[R, M]):
    """How a handler's result becomes the RPC's response and back from stored bytes, so a
    retry gets the first response from the same transaction that made the change."""

    present: Callable[[R], M]
    parse: Callable[[bytes], M]


@dataclass(frozen=True, slots=True)
class IdempotencyKey:
    scope: str
    request_id: str
    fingerprint: bytes
    # Replies carrying tokens or codes are stored sealed and kept only briefly.
    secret: bool


class LostIdempotencyRaceError(Exception):
    """A concurrent twin of this request committed first: replay its reply instead."""


def idempotency_key(
    deps: AuthDependencies,
    method: str,
    principal: str,
    identity: RequestIdentity | None,
    *,
    secret: bool = False,
) -> IdempotencyKey | None:
    """Scoped to the RPC and the principal (the user, or for public RPCs a digest of the
    credential presented), so callers choosing the same id never meet."""
    if identity is None or not identity.request_id:
        return None
    scope = f"{SERVICE_PATH}/{method}|{principal}"
    fingerprint = deps.box.digest("request-fingerprint", scope.encode() + b"\0" + identity.body)
    return IdempotencyKey(scope, identity.request_id, bytes.fromhex(fingerprint), secret)


async def replay(
    uow: AuthUnitOfWork, deps: AuthDependencies, key: IdempotencyKey | None, reply: Reply[R, M]
) -> M | None:
    """The stored reply of an earlier identical request, if any (inside `uow`)."""
    if key is None:
        return None
    record = await uow.idempotency.get(key.scope, key.request_id)
    if record is None:
        return None
    if record.is_expired(deps.clock()):
        return None  # past its window the id is free again (`remember` clears the way)
    if record.request_fingerprint != key.fingerprint:
        raise AlreadyExists(
            "request_id was already used for a different request", reason="REQUEST_ID_REUSED"
        )
    body = record.response
    if key.secret:
        body = deps.box.open("idempotent-reply", body, _associated(key))
    return reply.parse(body)


async def remember(
    uow: AuthUnitOfWork, deps: AuthDependencies, key: IdempotencyKey | None, response: Message
) -> None:
    if key is None:
        return
    now = deps.clock()
    body = response.SerializeToString(deterministic=True)
    if key.secret:
        body = deps.box.seal("idempotent-reply", body, _associated(key))
    ttl = deps.settings.secret_idempotency_ttl if key.secret else deps.settings.idempotency_ttl
    record = IdempotencyRecord(
        scope=key.scope,
        request_id=key.request_id,
        request_fingerprint=key.fingerprint,
        response=body,
        response_type=response.DESCRIPTOR.full_name,
        created_at=now,
        expires_at=now + ttl,
    )
    try:
        await uow.idempotency.add(record)
    except DuplicateKeyError:
        existing = await uow.idempotency.get(key.scope, key.request_id)
        if existing is None or not existing.is_expired(now):
            raise LostIdempotencyRaceError from None
        # An expired record of an earlier use of this id: swept now, ours takes its place.
        await uow.idempotency.delete_expired(now)
        await uow.idempotency.add(record)


async def replay_committed(
    uow: AuthUnitOfWork, deps: AuthDependencies, key: IdempotencyKey | None, reply: Reply[R, M]
) -> M:
    async with uow.reader():
        found = await replay(uow, deps, key, reply)
    if found is None:
        raise RuntimeError("the concurrent request's reply vanished")
    return found


def _associated(key: IdempotencyKey) -> bytes:
    return f"{key.scope}\0{key.request_id}".encode()


# --- audit and what must persist when a call is refused --------------------------------------

Step = Callable[[AuthUnitOfWork], Awaitable[None]]
AfterCommit = Callable[[], Awaitable[None]]


@dataclass
class Refusal:
    """What a refused call must still leave behind (see `kept_on_refusal`)."""

    steps: list[Step] = field(default_factory=list)
    after_commit: list[AfterCommit] = field(default_factory=list)


@asynccontextmanager
async def kept_on_refusal(uow: AuthUnitOfWork) -> AsyncIterator[Refusal]:
    """Steps added here are committed in a transaction of their own if the block raises a
    domain error: the refused call itself writes nothing, but its audit record, a failed
    attempt on a challenge, a lockout's `user.locked` event or the revocation of a family
    whose token was reused must survive it. `after_commit` actions (the shared revocation
    list) run once that transaction committed."""
    refusal = Refusal()
    try:
        yield refusal
    except DomainError:
        if refusal.steps:
            try:
                async with uow:
                    for step in refusal.steps:
                        await step(uow)
                    await uow.commit()
                for action in refusal.after_commit:
                    await action()
            except Exception:
                # The caller's refusal is what matters; the record is best effort.
                log.exception("could not record what a refused call leaves behind")
        raise


async def audit(
    uow: AuthUnitOfWork,
    deps: AuthDependencies,
    origin: Origin,
    kind: SecurityEventType,
    outcome: Outcome,
    *,
    subject: str = "",
    reason: str = "",
    actor_user: str | None = None,
    details: Mapping[str, str] | None = None,
) -> SecurityEvent:
    """Store a security event and publish it (`security_event.recorded`) in `uow`."""
    event = SecurityEvent(
        id=new_ulid(),
        type=kind,
        severity=DEFAULT_SEVERITY[kind],
        outcome=outcome,
        actor=origin.actor(actor_user),
        subject=subject,
        time=deps.clock(),
        reason=reason,
        user_agent=origin.user_agent[:MAX_USER_AGENT],
        correlation_id=origin.correlation_id[:64],
        details=dict(details or {}),
    )
    await uow.security_events.add(event)
    await uow.outbox.add(
        new_event(
            "security_event.recorded",
            source=SOURCE,
            subject=event.name,
            data=events_pb2.SecurityEventRecorded(
                security_event=mapping.security_event_to_proto(event)
            ),
            correlation_id=origin.correlation_id or None,
            time=event.time,
        )
    )
    return event


def audit_step(
    deps: AuthDependencies,
    origin: Origin,
    kind: SecurityEventType,
    outcome: Outcome,
    *,
    subject: str = "",
    reason: str = "",
    actor_user: str | None = None,
    details: Mapping[str, str] | None = None,
) -> Step:
    """`audit` as a step for `kept_on_refusal`."""

    async def step(uow: AuthUnitOfWork) -> None:
        await audit(
            uow,
            deps,
            origin,
            kind,
            outcome,
            subject=subject,
            reason=reason,
            actor_user=actor_user,
            details=details,
        )

    return step


async def publish(
    uow: AuthUnitOfWork,
    deps: AuthDependencies,
    origin: Origin,
    kind: str,
    subject: str,
    data: Message,
) -> None:
    await uow.outbox.add(
        new_event(
            kind,
            source=SOURCE,
            subject=subject,
            data=data,
            correlation_id=origin.correlation_id or None,
            time=deps.clock(),
        )
    )


# --- tokens ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IssuedTokens:
    access_token: str
    refresh_token: str
    expires_in: timedelta
    expires_at: datetime
    refresh_expires_at: datetime
    session_id: str
    user: str


def new_opaque_token() -> str:
    """256 random bits, URL-safe: refresh, reset and challenge tokens."""
    return secrets.token_urlsafe(32)


async def permissions_of(
    uow: AuthUnitOfWork, deps: AuthDependencies, user: User
) -> tuple[str, ...]:
    return effective_permissions(await deps.roles.get_many(uow, list(user.roles)))


async def issue_tokens(
    uow: AuthUnitOfWork, deps: AuthDependencies, user: User, session: Session
) -> IssuedTokens:
    """A new access token and the session's next refresh token (same absolute expiry)."""
    now = deps.clock().replace(microsecond=0)  # JWT times are whole seconds
    refresh = new_opaque_token()
    await uow.refresh_tokens.add(
        RefreshToken(
            token_hash=deps.box.digest("refresh-token", refresh),
            session_id=session.id,
            created_at=now,
            expires_at=session.expires_at,
        )
    )
    ttl = deps.settings.access_token_ttl
    grant = AccessTokenGrant(
        token_id=new_ulid(),
        subject=user.name,
        session_id=session.id,
        issuer=deps.issuer,
        audience=deps.audience,
        issued_at=now,
        expires_at=now + ttl,
        roles=[role_name(role_id) for role_id in user.roles],
        permissions=await permissions_of(uow, deps, user),
    )
    await uow.access_tokens.add(grant.token_id, session.id, grant.expires_at)
    return IssuedTokens(
        access_token=deps.keys.sign(grant.claims()),
        refresh_token=refresh,
        expires_in=ttl,
        expires_at=grant.expires_at,
        refresh_expires_at=session.expires_at,
        session_id=session.id,
        user=user.name,
    )


async def end_sessions(
    uow: AuthUnitOfWork,
    deps: AuthDependencies,
    sessions: Sequence[Session],
    reason: RevokeReason,
) -> tuple[int, list[tuple[str, datetime]]]:
    """Revoke `sessions` in `uow`; returns how many were live and the access tokens to put
    on the revocation list once the transaction has committed."""
    ids = [session.id for session in sessions]
    ended = await uow.sessions.revoke(ids, reason, deps.clock())
    live = await uow.access_tokens.live(ids, deps.clock())
    return ended, live


async def revoke_access_tokens(
    deps: AuthDependencies, tokens: Iterable[tuple[str, datetime]]
) -> None:
    """After commit: every service refuses these until they would have expired anyway.

    Best effort by nature (the store is another system): a failure is logged, and
    IntrospectToken still sees the revoked session in the database.
    """
    for token_id, expires_at in tokens:
        try:
            await deps.revocations.revoke(token_id, expires_at)
        except Exception:
            log.exception("could not put access token %s on the revocation list", token_id)
