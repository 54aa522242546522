"""Passwords: change one's own, request a reset link, set a new one with it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from gatehouse.auth import mapping
from gatehouse.auth.domain.security_events import Outcome, SecurityEventType
from gatehouse.auth.domain.sessions import PasswordResetToken, RevokeReason
from gatehouse.auth.domain.users import User
from gatehouse.auth.handlers.accounts import check_new_password, valid_email
from gatehouse.auth.handlers.common import (
    AuthDependencies,
    LostIdempotencyRaceError,
    M,
    Origin,
    Refusal,
    Reply,
    RequestIdentity,
    audit,
    audit_step,
    end_sessions,
    idempotency_key,
    kept_on_refusal,
    new_opaque_token,
    publish,
    remember,
    replay,
    replay_committed,
    revoke_access_tokens,
)
from gatehouse.auth.handlers.ports import AuthUnitOfWork
from gatehouse.auth.handlers.verification import (
    account_key,
    check_second_factor,
    clear_lockout,
    count_failure,
    refuse_if_locked,
)
from gatehouse.auth.v1 import events_pb2
from gatehouse.runtime.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
)

MAX_PASSWORD_INPUT = 1024
MAX_OPAQUE_TOKEN = 256


def require_field(field: str, value: str, limit: int) -> None:
    if not value:
        raise InvalidArgument([FieldViolation(field, "is required")])
    if len(value) > limit:
        raise InvalidArgument([FieldViolation(field, f"must be at most {limit} characters")])


async def signed_in_user(uow: AuthUnitOfWork, origin: Origin) -> User:
    """The caller's own account (inside `uow`)."""
    if origin.user_id is None:
        raise Unauthenticated("this RPC needs an access token", reason="TOKEN_MISSING")
    user = await uow.users.get(origin.user_id)
    if user is None or user.is_deleted or user.email is None:
        raise Unauthenticated("the token's user no longer exists", reason="TOKEN_REVOKED")
    return user


async def reverify_password(
    deps: AuthDependencies,
    origin: Origin,
    user: User,
    password: str,
    refusal: Refusal,
    *,
    method: str,
) -> None:
    """An authenticated call asking for the password again. Failures count toward the
    account's lockout like failed sign-ins, so a stolen access token cannot be used to
    guess the password at leisure."""
    assert user.email is not None
    await refuse_if_locked(
        deps,
        origin,
        user.email,
        refusal,
        subject=user.name,
        audit_as=SecurityEventType.PERMISSION_DENIED,
    )
    check = await deps.hasher.verify(user.password_hash, password)
    if check.ok:
        return
    locked = await count_failure(deps, origin, user.email, user, refusal)
    refusal.steps.append(
        audit_step(
            deps,
            origin,
            SecurityEventType.PERMISSION_DENIED,
            Outcome.DENIED,
            subject=user.name,
            reason="INVALID_CREDENTIALS",
            details={"method": method},
        )
    )
    if locked is not None:
        raise locked
    raise PermissionDenied("the password is wrong", reason="INVALID_CREDENTIALS")


async def reverify_second_factor(
    uow: AuthUnitOfWork,
    deps: AuthDependencies,
    origin: Origin,
    user: User,
    refusal: Refusal,
    *,
    totp_code: str | None,
    recovery_code: str | None = None,
    method: str,
) -> None:
    """Inside `uow`: a TOTP code (or recovery code) proving the second factor again."""
    factor = await check_second_factor(
        uow, deps, user, totp_code=totp_code, recovery_code=recovery_code
    )
    if factor is not None:
        if recovery_code is not None:
            await audit(
                uow,
                deps,
                origin,
                SecurityEventType.RECOVERY_CODE_USED,
                Outcome.SUCCESS,
                subject=user.name,
                details={"method": method},
            )
        return
    assert user.email is not None
    locked = await count_failure(deps, origin, user.email, user, refusal)
    refusal.steps.append(
        audit_step(
            deps,
            origin,
            SecurityEventType.PERMISSION_DENIED,
            Outcome.DENIED,
            subject=user.name,
            reason="TOTP_INVALID",
            details={"method": method},
        )
    )
    if locked is not None:
        raise locked
    raise PermissionDenied("the code is wrong or was already used", reason="TOTP_INVALID")


# --- ChangePassword --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChangePassword:
    current_password: str
    new_password: str
    origin: Origin
    totp_code: str = ""
    identity: RequestIdentity | None = None


async def change_password(
    command: ChangePassword, uow: AuthUnitOfWork, deps: AuthDependencies, reply: Reply[int, M]
) -> M:
    origin = command.origin
    require_field("current_password", command.current_password, MAX_PASSWORD_INPUT)
    require_field("new_password", command.new_password, MAX_PASSWORD_INPUT)
    key = idempotency_key(deps, "ChangePassword", origin.user, command.identity)
    async with uow.reader() as reader:
        if (found := await replay(reader, deps, key, reply)) is not None:
            return found
        user = await signed_in_user(reader, origin)
    check_new_password(deps, command.new_password, user.email, "new_password")
    if user.totp.enabled and not command.totp_code:
        raise FailedPrecondition(
            "TOTP is enabled: send a current totp_code too", reason="TOTP_REQUIRED"
        )
    revoked: list[tuple[str, datetime]] = []
    async with kept_on_refusal(uow) as refusal:
        await reverify_password(
            deps, origin, user, command.current_password, refusal, method="ChangePassword"
        )
        if command.new_password == command.current_password:
            raise InvalidArgument(
                [FieldViolation("new_password", "must differ from the current password")],
                reason="WEAK_PASSWORD",
            )
        new_hash = await deps.hasher.hash(command.new_password)
        try:
            async with uow:
                if (found := await replay(uow, deps, key, reply)) is not None:
                    return found
                fresh = await signed_in_user(uow, origin)
                if fresh.password_hash != user.password_hash:
                    raise PermissionDenied(
                        "the password was changed meanwhile", reason="INVALID_CREDENTIALS"
                    )
                if fresh.totp.enabled:
                    await reverify_second_factor(
                        uow,
                        deps,
                        origin,
                        fresh,
                        refusal,
                        totp_code=command.totp_code,
                        method="ChangePassword",
                    )
                now = deps.clock()
                fresh.set_password_hash(new_hash, now)
                await uow.users.update(fresh)
                others = [
                    session
                    for session in await uow.sessions.active_for_user(fresh.id, now)
                    if session.id != origin.session_id
                ]
                ended, revoked = await end_sessions(
                    uow, deps, others, RevokeReason.PASSWORD_CHANGED
                )
                await _password_changed(
                    uow, deps, origin, fresh, events_pb2.PASSWORD_CHANGE_METHOD_CHANGE
                )
                await audit(
                    uow,
                    deps,
                    origin,
                    SecurityEventType.PASSWORD_CHANGED,
                    Outcome.SUCCESS,
                    subject=fresh.name,
                    details={"session": origin.session_id or ""},
                )
                response = reply.present(ended)
                await remember(uow, deps, key, response)
                await uow.commit()
        except LostIdempotencyRaceError:
            return await replay_committed(uow, deps, key, reply)
    await revoke_access_tokens(deps, revoked)
    return response


async def _password_changed(
    uow: AuthUnitOfWork,
    deps: AuthDependencies,
    origin: Origin,
    user: User,
    method: events_pb2.PasswordChangeMethod.ValueType,
) -> None:
    await publish(
        uow,
        deps,
        origin,
        "user.password_changed",
        user.name,
        events_pb2.UserPasswordChanged(
            user=user.name,
            email=user.email or "",
            display_name=user.display_name,
            method=method,
            client_address=origin.client_address,
        ),
    )


# --- RequestPasswordReset --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RequestPasswordReset:
    email: str
    origin: Origin
    identity: RequestIdentity | None = None


async def request_password_reset(
    command: RequestPasswordReset,
    uow: AuthUnitOfWork,
    deps: AuthDependencies,
    reply: Reply[None, M],
) -> M:
    """The reply is the same whether or not the account exists."""
    email = valid_email(command.email)
    origin = command.origin
    email_digest = deps.box.digest("email", email)
    key = idempotency_key(deps, "RequestPasswordReset", "email:" + email_digest, command.identity)
    async with uow.reader() as reader:
        if (found := await replay(reader, deps, key, reply)) is not None:
            return found
    limits = [(f"reset:email:{email_digest}", deps.settings.reset_per_email)]
    if origin.client_address:
        limits.append((f"reset:address:{origin.client_address}", deps.settings.reset_per_address))
    for limit_key, limit in limits:
        retry = await deps.limiter.hit(limit_key, limit, deps.settings.rate_window)
        if retry is not None:
            raise ResourceExhausted(
                "too many password reset requests; try again later",
                retry_after=retry,
                reason="TOO_MANY_ATTEMPTS",
            )
    try:
        async with uow:
            if (found := await replay(uow, deps, key, reply)) is not None:
                return found
            user = await uow.users.get_by_email(email)
            if user is not None and not user.is_deleted:
                await _issue_reset_token(uow, deps, origin, user)
            response = reply.present(None)
            await remember(uow, deps, key, response)
            await uow.commit()
    except LostIdempotencyRaceError:
        return await replay_committed(uow, deps, key, reply)
    return response


async def _issue_reset_token(
    uow: AuthUnitOfWork, deps: AuthDependencies, origin: Origin, user: User
) -> None:
    now = deps.clock()
    token = new_opaque_token()
    expires_at = now + deps.settings.reset_token_ttl
    # Only the newest link works: an older one sitting in a mailbox is dead.
    await uow.reset_tokens.invalidate_unused(user.id, now)
    await uow.reset_tokens.add(
        PasswordResetToken(
            token_hash=deps.box.digest("reset-token", token),
            user_id=user.id,
            created_at=now,
            expires_at=expires_at,
        )
    )
    await publish(
        uow,
        deps,
        origin,
        "password_reset.requested",
        user.name,
        events_pb2.PasswordResetRequested(
            user=user.name,
            email=user.email or "",
            display_name=user.display_name,
            reset_token=token,
            expire_time=mapping.timestamp(expires_at),
            client_address=origin.client_address,
        ),
    )
    await audit(
        uow,
        deps,
        origin,
        SecurityEventType.PASSWORD_RESET_REQUESTED,
        Outcome.SUCCESS,
        subject=user.name,
        actor_user="",
    )


# --- ResetPassword ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResetPassword:
    reset_token: str
    new_password: str
    origin: Origin
    identity: RequestIdentity | None = None


async def reset_password(
    command: ResetPassword, uow: AuthUnitOfWork, deps: AuthDependencies, reply: Reply[User, M]
) -> M:
    require_field("reset_token", command.reset_token, MAX_OPAQUE_TOKEN)
    require_field("new_password", command.new_password, MAX_PASSWORD_INPUT)
    origin = command.origin
    token_hash = deps.box.digest("reset-token", command.reset_token)
    key = idempotency_key(deps, "ResetPassword", "reset:" + token_hash, command.identity)
    async with uow.reader() as reader:
        if (found := await replay(reader, deps, key, reply)) is not None:
            return found
        user = await _user_of_reset_token(reader, deps, token_hash)
    check_new_password(deps, command.new_password, user.email, "new_password")
    new_hash = await deps.hasher.hash(command.new_password)
    revoked: list[tuple[str, datetime]] = []
    try:
        async with uow:
            if (found := await replay(uow, deps, key, reply)) is not None:
                return found
            fresh = await _user_of_reset_token(uow, deps, token_hash)
            now = deps.clock()
            if not await uow.reset_tokens.spend(token_hash, now):
                raise _reset_token_invalid()
            fresh.set_password_hash(new_hash, now)
            fresh.locked_until = None
            await uow.users.update(fresh)
            sessions = await uow.sessions.active_for_user(fresh.id, now)
            _, revoked = await end_sessions(uow, deps, sessions, RevokeReason.PASSWORD_RESET)
            await _password_changed(
                uow, deps, origin, fresh, events_pb2.PASSWORD_CHANGE_METHOD_RESET
            )
            await audit(
                uow,
                deps,
                origin,
                SecurityEventType.PASSWORD_RESET_COMPLETED,
                Outcome.SUCCESS,
                subject=fresh.name,
                actor_user=fresh.name,
            )
            response = reply.present(fresh)
            await remember(uow, deps, key, response)
            await uow.commit()
    except LostIdempotencyRaceError:
        return await replay_committed(uow, deps, key, reply)
    await revoke_access_tokens(deps, revoked)
    if fresh.email is not None:
        await clear_lockout(deps, account_key(deps, fresh.email))
    return response


def _reset_token_invalid() -> Unauthenticated:
    return Unauthenticated(
        "unknown or already used reset token; request a new one", reason="RESET_TOKEN_INVALID"
    )


async def _user_of_reset_token(
    uow: AuthUnitOfWork, deps: AuthDependencies, token_hash: str
) -> User:
    record = await uow.reset_tokens.get(token_hash)
    if record is None or record.spent:
        raise _reset_token_invalid()
    if deps.clock() >= record.expires_at:
        raise Unauthenticated(
            "the reset token has expired; request a new one", reason="RESET_TOKEN_EXPIRED"
        )
    user = await uow.users.get(record.user_id)
    if user is None or user.is_deleted:
        raise _reset_token_invalid()
    return user
