"""Tokens as other parties see them: the published keys and introspection."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from gatehouse.auth.domain.roles import role_name
from gatehouse.auth.domain.security_events import Outcome, SecurityEventType
from gatehouse.auth.domain.tokens import InactiveReason, TokenRejectedError
from gatehouse.auth.domain.users import parse_user_name
from gatehouse.auth.handlers.common import AuthDependencies, Origin, audit, permissions_of
from gatehouse.auth.handlers.ports import AuthUnitOfWork
from gatehouse.runtime.errors import FieldViolation, InvalidArgument, PermissionDenied

MAX_TOKEN_INPUT = 8192
# Rejections worth an audit record: someone holds a token we never issued in that form.
_SUSPICIOUS = {
    InactiveReason.MALFORMED,
    InactiveReason.INVALID_SIGNATURE,
    InactiveReason.UNKNOWN_KEY,
}


def get_jwks(deps: AuthDependencies) -> list[dict[str, str]]:
    return deps.keys.public_keys()


@dataclass(frozen=True, slots=True)
class Introspection:
    active: bool
    inactive_reason: InactiveReason | None = None
    subject: str = ""
    roles: tuple[str, ...] = ()
    permissions: tuple[str, ...] = ()
    issued_at: datetime | None = None
    expires_at: datetime | None = None
    token_id: str = ""
    session_id: str = ""


async def introspect_token(
    token: str, origin: Origin, uow: AuthUnitOfWork, deps: AuthDependencies
) -> Introspection:
    if origin.service not in deps.settings.introspect_callers:
        raise PermissionDenied(
            "only allowed mesh identities may introspect tokens", reason="CALLER_NOT_ALLOWED"
        )
    if not token:
        raise InvalidArgument([FieldViolation("token", "is required")])
    if len(token) > MAX_TOKEN_INPUT:
        raise InvalidArgument(
            [FieldViolation("token", f"must be at most {MAX_TOKEN_INPUT} characters")]
        )
    try:
        verified = deps.keys.verify(token.removeprefix("Bearer ").strip())
    except TokenRejectedError as rejected:
        if rejected.reason in _SUSPICIOUS:
            async with uow:
                await audit(
                    uow,
                    deps,
                    origin,
                    SecurityEventType.TOKEN_REJECTED,
                    Outcome.FAILURE,
                    reason=rejected.reason.name,
                    details={"method": "IntrospectToken"},
                )
                await uow.commit()
        return Introspection(active=False, inactive_reason=rejected.reason)
    claims = verified.claims
    token_id, session_id = str(claims.get("jti", "")), str(claims.get("sid", ""))
    if await deps.revocations.is_revoked(token_id):
        return Introspection(active=False, inactive_reason=InactiveReason.REVOKED)
    user_id = parse_user_name(str(claims.get("sub", "")))
    async with uow.reader() as reader:
        session = await reader.sessions.get(session_id) if session_id else None
        if session is not None and session.revoked_at is not None:
            return Introspection(active=False, inactive_reason=InactiveReason.REVOKED)
        user = await reader.users.get(user_id) if user_id else None
        if user is None or user.is_deleted:
            return Introspection(active=False, inactive_reason=InactiveReason.USER_INACTIVE)
        permissions = await permissions_of(reader, deps, user)
    return Introspection(
        active=True,
        subject=user.name,
        roles=tuple(role_name(role_id) for role_id in user.roles),
        permissions=permissions,
        issued_at=datetime.fromtimestamp(int(claims["iat"]), UTC),
        expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC),
        token_id=token_id,
        session_id=session_id,
    )
