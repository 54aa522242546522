"""Sessions: Login (password, then the second factor), RefreshToken (rotation, reuse
detection) and Logout."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import NoReturn

from gatehouse.auth import mapping
from gatehouse.auth.domain.security_events import MAX_USER_AGENT, Outcome, SecurityEventType
from gatehouse.auth.domain.sessions import (
    LoginChallenge,
    RefreshVerdict,
    RevokeReason,
    SecondFactor,
    Session,
    judge_refresh,
)
from gatehouse.auth.domain.users import User
from gatehouse.auth.handlers.common import (
    AuthDependencies,
    IssuedTokens,
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
    issue_tokens,
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
    email_as_entered,
    refuse_if_locked,
)
from gatehouse.auth.v1 import events_pb2
from gatehouse.runtime.errors import FieldViolation, InvalidArgument, Unauthenticated
from gatehouse.runtime.ids import new_ulid

MAX_EMAIL_INPUT = 254
MAX_PASSWORD_INPUT = 1024
MAX_OPAQUE_TOKEN = 256
MAX_CODE_INPUT = 32


# --- Login -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Login:
    origin: Origin
    email: str = ""
    password: str = ""
    challenge_token: str = ""
    totp_code: str | None = None
    recovery_code: str | None = None
    identity: RequestIdentity | None = None


@dataclass(frozen=True, slots=True)
class Challenge:
    """The password was right; the second step needs this token and a code."""

    token: str
    expires_at: datetime
    methods: tuple[SecondFactor, ...] = (SecondFactor.TOTP, SecondFactor.RECOVERY_CODE)


LoginResult = IssuedTokens | Challenge


def _required_and_bounded(field: str, value: str | None, limit: int) -> list[FieldViolation]:
    if not value:
        return [FieldViolation(field, "is required")]
    if len(value) > limit:
        return [FieldViolation(field, f"must be at most {limit} characters")]
    return []


def _check_login_shape(command: Login) -> None:
    first = bool(command.email or command.password)
    second = bool(command.challenge_token or command.totp_code or command.recovery_code)
    if first and second:
        raise InvalidArgument(
            [FieldViolation("challenge_token", "send either email and password, or a challenge")]
        )
    if not first and not second:
        raise InvalidArgument(
            [
                FieldViolation("email", "is required (or send challenge_token and a code)"),
                FieldViolation("password", "is required"),
            ]
        )
    if first:
        violations = _required_and_bounded("email", command.email, MAX_EMAIL_INPUT)
        violations += _required_and_bounded("password", command.password, MAX_PASSWORD_INPUT)
    else:
        violations = _required_and_bounded(
            "challenge_token", command.challenge_token, MAX_OPAQUE_TOKEN
        )
        for field, value in (
            ("totp_code", command.totp_code),
            ("recovery_code", command.recovery_code),
        ):
            if value is not None and len(value) > MAX_CODE_INPUT:
                violations.append(FieldViolation(field, "is too long"))
    if violations:
        raise InvalidArgument(violations)
    if second and not (command.totp_code or command.recovery_code):
        raise InvalidArgument(
            [FieldViolation("totp_code", "send totp_code or recovery_code with the challenge")],
            reason="TOTP_REQUIRED",
        )


async def login(
    command: Login, uow: AuthUnitOfWork, deps: AuthDependencies, reply: Reply[LoginResult, M]
) -> M:
    _check_login_shape(command)
    if command.challenge_token:
        return await _second_step(command, uow, deps, reply)
    return await _first_step(command, uow, deps, reply)


async def _first_step(
    command: Login, uow: AuthUnitOfWork, deps: AuthDependencies, reply: Reply[LoginResult, M]
) -> M:
    origin = command.origin
    email = email_as_entered(command.email)
    key = idempotency_key(
        deps, "Login", "email:" + deps.box.digest("email", email), command.identity, secret=True
    )
    async with kept_on_refusal(uow) as refusal:
        async with uow.reader() as reader:
            if (found := await replay(reader, deps, key, reply)) is not None:
                return found
            user = await reader.users.get_by_email(email)
        await refuse_if_locked(deps, origin, email, refusal, subject=user.name if user else "")
        # The same argon2 work whether or not the account exists (a dummy hash otherwise).
        check = await deps.hasher.verify(user.password_hash if user else None, command.password)
        if user is None or not check.ok:
            locked = await count_failure(deps, origin, email, user, refusal)
            refusal.steps.append(
                audit_step(
                    deps,
                    origin,
                    SecurityEventType.LOGIN_FAILED,
                    Outcome.FAILURE,
                    subject=user.name if user else "",
                    actor_user="",
                    reason="INVALID_CREDENTIALS",
                    details={"email": email},
                )
            )
            if locked is not None:
                raise locked
            raise Unauthenticated("wrong email or password", reason="INVALID_CREDENTIALS")
        new_hash = await deps.hasher.hash(command.password) if check.needs_rehash else None
        try:
            async with uow:
                if (found := await replay(uow, deps, key, reply)) is not None:
                    return found
                fresh = await uow.users.get(user.id)
                if fresh is None or fresh.is_deleted or fresh.password_hash != user.password_hash:
                    # Deleted or password changed while we hashed: as if it were wrong.
                    raise Unauthenticated("wrong email or password", reason="INVALID_CREDENTIALS")
                if new_hash is not None:
                    # Same password, current argon2 parameters.
                    fresh.password_hash = new_hash
                    await uow.users.update(fresh)
                result: LoginResult
                if fresh.totp.enabled:
                    result = await _open_challenge(uow, deps, fresh)
                else:
                    result = await _complete_sign_in(uow, deps, origin, fresh, SecondFactor.NONE)
                response = reply.present(result)
                await remember(uow, deps, key, response)
                await uow.commit()
        except LostIdempotencyRaceError:
            return await replay_committed(uow, deps, key, reply)
    if isinstance(result, IssuedTokens):
        await clear_lockout(deps, account_key(deps, email))
    return response


async def _open_challenge(uow: AuthUnitOfWork, deps: AuthDependencies, user: User) -> Challenge:
    now = deps.clock()
    token = new_opaque_token()
    challenge = LoginChallenge(
        token_hash=deps.box.digest("challenge", token),
        user_id=user.id,
        created_at=now,
        expires_at=now + deps.settings.challenge_ttl,
    )
    await uow.challenges.add(challenge)
    return Challenge(token=token, expires_at=challenge.expires_at)


async def _second_step(
    command: Login, uow: AuthUnitOfWork, deps: AuthDependencies, reply: Reply[LoginResult, M]
) -> M:
    origin = command.origin
    challenge_hash = deps.box.digest("challenge", command.challenge_token)
    key = idempotency_key(
        deps, "Login", "challenge:" + challenge_hash, command.identity, secret=True
    )
    used = SecondFactor.TOTP if command.totp_code else SecondFactor.RECOVERY_CODE
    async with kept_on_refusal(uow) as refusal:
        try:
            async with uow:
                if (found := await replay(uow, deps, key, reply)) is not None:
                    return found
                now = deps.clock()
                challenge = await uow.challenges.get(challenge_hash)
                user = await uow.users.get(challenge.user_id) if challenge else None
                if (
                    challenge is None
                    or not challenge.usable(now, deps.settings.challenge_max_attempts)
                    or user is None
                    or user.is_deleted
                    or user.email is None
                    or not user.totp.enabled
                ):
                    refusal.steps.append(
                        audit_step(
                            deps,
                            origin,
                            SecurityEventType.LOGIN_FAILED,
                            Outcome.FAILURE,
                            subject=user.name if user else "",
                            actor_user="",
                            reason="CHALLENGE_INVALID",
                            details={"second_factor": used.value},
                        )
                    )
                    raise Unauthenticated(
                        "the sign-in challenge is unknown, expired or used up; sign in again",
                        reason="CHALLENGE_INVALID",
                    )
                await refuse_if_locked(deps, origin, user.email, refusal, subject=user.name)
                factor = await check_second_factor(
                    uow,
                    deps,
                    user,
                    totp_code=command.totp_code,
                    recovery_code=command.recovery_code,
                )
                if factor is None or not await uow.challenges.consume(challenge_hash, now):
                    await _second_factor_failed(deps, origin, user, challenge_hash, used, refusal)
                tokens = await _complete_sign_in(uow, deps, origin, user, factor)
                if factor is SecondFactor.RECOVERY_CODE:
                    await audit(
                        uow,
                        deps,
                        origin,
                        SecurityEventType.RECOVERY_CODE_USED,
                        Outcome.SUCCESS,
                        subject=user.name,
                        actor_user=user.name,
                        details={"session": tokens.session_id},
                    )
                response = reply.present(tokens)
                await remember(uow, deps, key, response)
                await uow.commit()
        except LostIdempotencyRaceError:
            return await replay_committed(uow, deps, key, reply)
    await clear_lockout(deps, account_key(deps, user.email))
    return response


async def _second_factor_failed(
    deps: AuthDependencies,
    origin: Origin,
    user: User,
    challenge_hash: str,
    used: SecondFactor,
    refusal: Refusal,
) -> NoReturn:
    async def count_attempt(uow: AuthUnitOfWork) -> None:
        await uow.challenges.record_attempt(challenge_hash)

    refusal.steps.append(count_attempt)
    assert user.email is not None
    locked = await count_failure(deps, origin, user.email, user, refusal)
    refusal.steps.append(
        audit_step(
            deps,
            origin,
            SecurityEventType.LOGIN_FAILED,
            Outcome.FAILURE,
            subject=user.name,
            actor_user="",
            reason="TOTP_INVALID",
            details={"second_factor": used.value},
        )
    )
    if locked is not None:
        raise locked
    raise Unauthenticated("the code is wrong, expired or already used", reason="TOTP_INVALID")


async def _complete_sign_in(
    uow: AuthUnitOfWork,
    deps: AuthDependencies,
    origin: Origin,
    user: User,
    factor: SecondFactor,
) -> IssuedTokens:
    """Open a session, issue its first tokens, record the sign-in (inside `uow`)."""
    now = deps.clock()
    session = Session(
        id=new_ulid(),
        user_id=user.id,
        created_at=now,
        expires_at=now + deps.settings.refresh_token_ttl,
        client_address=origin.client_address[:64],
        user_agent=origin.user_agent[:MAX_USER_AGENT],
        second_factor=factor,
    )
    await uow.sessions.add(session)
    tokens = await issue_tokens(uow, deps, user, session)
    user.last_login_at = now
    user.locked_until = None
    await uow.users.update(user)
    await publish(
        uow,
        deps,
        origin,
        "user.login",
        user.name,
        events_pb2.UserLoggedIn(
            user=user.name,
            client_address=origin.client_address,
            user_agent=origin.user_agent[:MAX_USER_AGENT],
            second_factor=mapping.second_factor(factor),
            session_id=session.id,
        ),
    )
    details = {"session": session.id}
    if factor is not SecondFactor.NONE:
        details["second_factor"] = factor.value
    await audit(
        uow,
        deps,
        origin,
        SecurityEventType.LOGIN_SUCCEEDED,
        Outcome.SUCCESS,
        subject=user.name,
        actor_user=user.name,
        details=details,
    )
    return tokens


# --- RefreshToken ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RefreshTokens:
    refresh_token: str
    origin: Origin
    identity: RequestIdentity | None = None


def check_refresh_token_field(token: str, field: str = "refresh_token") -> None:
    if not token:
        raise InvalidArgument([FieldViolation(field, "is required")])
    if len(token) > MAX_OPAQUE_TOKEN:
        raise InvalidArgument(
            [FieldViolation(field, f"must be at most {MAX_OPAQUE_TOKEN} characters")]
        )


async def refresh_tokens(
    command: RefreshTokens,
    uow: AuthUnitOfWork,
    deps: AuthDependencies,
    reply: Reply[IssuedTokens, M],
) -> M:
    check_refresh_token_field(command.refresh_token)
    origin = command.origin
    token_hash = deps.box.digest("refresh-token", command.refresh_token)
    key = idempotency_key(
        deps, "RefreshToken", "refresh:" + token_hash, command.identity, secret=True
    )
    async with kept_on_refusal(uow) as refusal:
        try:
            async with uow:
                if (found := await replay(uow, deps, key, reply)) is not None:
                    return found
                now = deps.clock()
                token = await uow.refresh_tokens.get(token_hash)
                session = await uow.sessions.get(token.session_id) if token else None
                if token is None or session is None:
                    raise Unauthenticated(
                        "unknown refresh token; sign in again", reason="REFRESH_TOKEN_INVALID"
                    )
                verdict = judge_refresh(token, session, now)
                if verdict is RefreshVerdict.OK and not await uow.refresh_tokens.spend(
                    token_hash, now
                ):
                    # Spent by a concurrent request. Its twin (same request_id) committed a
                    # reply to replay; anything else is a second holder of the token.
                    if (found := await replay(uow, deps, key, reply)) is not None:
                        return found
                    verdict = RefreshVerdict.REUSED
                if verdict is RefreshVerdict.REUSED:
                    _revoke_family(deps, origin, session, refusal)
                    raise Unauthenticated(
                        "this refresh token was already used; the session is revoked, sign in "
                        "again",
                        reason="REFRESH_TOKEN_REUSED",
                    )
                if verdict is RefreshVerdict.EXPIRED:
                    raise Unauthenticated(
                        "the refresh token has expired; sign in again",
                        reason="REFRESH_TOKEN_EXPIRED",
                    )
                user = await uow.users.get(session.user_id)
                if verdict is RefreshVerdict.INVALID or user is None or user.is_deleted:
                    raise Unauthenticated(
                        "the session has ended; sign in again", reason="REFRESH_TOKEN_INVALID"
                    )
                # Roles are read now, so role changes reach the new access token.
                tokens = await issue_tokens(uow, deps, user, session)
                response = reply.present(tokens)
                await remember(uow, deps, key, response)
                await uow.commit()
        except LostIdempotencyRaceError:
            return await replay_committed(uow, deps, key, reply)
    return response


def _revoke_family(
    deps: AuthDependencies, origin: Origin, session: Session, refusal: Refusal
) -> None:
    """Reuse means theft: end the session (whoever holds it) and record it."""
    revoked: list[tuple[str, datetime]] = []

    async def revoke(uow: AuthUnitOfWork) -> None:
        live = await uow.sessions.get(session.id)
        if live is None:
            return
        _, tokens = await end_sessions(uow, deps, [live], RevokeReason.REFRESH_TOKEN_REUSED)
        revoked.extend(tokens)
        await audit(
            uow,
            deps,
            origin,
            SecurityEventType.REFRESH_TOKEN_REUSED,
            Outcome.DENIED,
            subject=f"users/{session.user_id}",
            actor_user="",
            reason="REFRESH_TOKEN_REUSED",
            details={"session": session.id},
        )

    async def put_on_revocation_list() -> None:
        await revoke_access_tokens(deps, revoked)

    refusal.steps.append(revoke)
    refusal.after_commit.append(put_on_revocation_list)


# --- Logout ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Logout:
    origin: Origin
    refresh_token: str = ""
    all_sessions: bool = False
    identity: RequestIdentity | None = None


async def logout(
    command: Logout, uow: AuthUnitOfWork, deps: AuthDependencies, reply: Reply[int, M]
) -> M:
    origin = command.origin
    if origin.user_id is None and not command.refresh_token:
        raise Unauthenticated(
            "send the access token, or the session's refresh_token", reason="TOKEN_MISSING"
        )
    if command.refresh_token and origin.user_id is None:
        check_refresh_token_field(command.refresh_token)
    revoked: list[tuple[str, datetime]] = []
    principal = origin.user or "refresh:" + deps.box.digest("refresh-token", command.refresh_token)
    key = idempotency_key(deps, "Logout", principal, command.identity)
    try:
        async with uow:
            if (found := await replay(uow, deps, key, reply)) is not None:
                return found
            now = deps.clock()
            if origin.user_id is not None:
                user_id = origin.user_id
                session_id = origin.session_id
            else:
                token = await uow.refresh_tokens.get(
                    deps.box.digest("refresh-token", command.refresh_token)
                )
                session = await uow.sessions.get(token.session_id) if token else None
                if session is None:
                    raise Unauthenticated("unknown refresh token", reason="REFRESH_TOKEN_INVALID")
                user_id, session_id = session.user_id, session.id
            if command.all_sessions:
                sessions = await uow.sessions.active_for_user(user_id, now)
            else:
                current = await uow.sessions.get(session_id) if session_id else None
                sessions = [current] if current is not None and current.user_id == user_id else []
            ended, revoked = await end_sessions(uow, deps, sessions, RevokeReason.LOGOUT)
            if ended:
                await audit(
                    uow,
                    deps,
                    origin,
                    SecurityEventType.LOGOUT,
                    Outcome.SUCCESS,
                    subject=f"users/{user_id}",
                    actor_user=f"users/{user_id}",
                    details={"session": session_id or ""},
                )
            response = reply.present(ended)
            await remember(uow, deps, key, response)
            await uow.commit()
    except LostIdempotencyRaceError:
        return await replay_committed(uow, deps, key, reply)
    if origin.token_id is not None and origin.token_expires_at is not None:
        # The calling token itself, even if its session row was already gone.
        revoked.append((origin.token_id, origin.token_expires_at))
    await revoke_access_tokens(deps, revoked)
    return response
