"""The TOTP second factor: enroll (pending), confirm (active, recovery codes), disable."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from gatehouse.auth.domain import totp
from gatehouse.auth.domain.security_events import Outcome, SecurityEventType
from gatehouse.auth.domain.users import TotpSettings, User, parse_totp_name
from gatehouse.auth.handlers.accounts import existing_user
from gatehouse.auth.handlers.common import (
    AuthDependencies,
    LostIdempotencyRaceError,
    M,
    Origin,
    Reply,
    RequestIdentity,
    audit,
    audit_step,
    idempotency_key,
    kept_on_refusal,
    remember,
    replay,
    replay_committed,
)
from gatehouse.auth.handlers.passwords import (
    MAX_PASSWORD_INPUT,
    require_field,
    reverify_password,
    reverify_second_factor,
    signed_in_user,
)
from gatehouse.auth.handlers.ports import AuthUnitOfWork
from gatehouse.auth.handlers.verification import TOTP_SECRET_PURPOSE, recovery_code_hash
from gatehouse.runtime.authorization import grants
from gatehouse.runtime.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    PermissionDenied,
)

MANAGE_USERS = "auth.users.manage"
MAX_CODE_INPUT = 32


def _already_enabled() -> FailedPrecondition:
    return FailedPrecondition(
        "TOTP is already enabled; disable it first", reason="TOTP_ALREADY_ENABLED"
    )


# --- EnrollTotp ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EnrollTotp:
    password: str
    origin: Origin
    identity: RequestIdentity | None = None


@dataclass(frozen=True, slots=True)
class Enrollment:
    otpauth_uri: str
    secret: str
    expires_at: datetime


async def enroll_totp(
    command: EnrollTotp, uow: AuthUnitOfWork, deps: AuthDependencies, reply: Reply[Enrollment, M]
) -> M:
    origin = command.origin
    require_field("password", command.password, MAX_PASSWORD_INPUT)
    key = idempotency_key(deps, "EnrollTotp", origin.user, command.identity, secret=True)
    async with uow.reader() as reader:
        if (found := await replay(reader, deps, key, reply)) is not None:
            return found
        user = await signed_in_user(reader, origin)
    if user.totp.enabled:
        raise _already_enabled()
    async with kept_on_refusal(uow) as refusal:
        await reverify_password(deps, origin, user, command.password, refusal, method="EnrollTotp")
    try:
        async with uow:
            if (found := await replay(uow, deps, key, reply)) is not None:
                return found
            fresh = await signed_in_user(uow, origin)
            if fresh.totp.enabled:
                raise _already_enabled()
            now = deps.clock()
            secret = totp.new_secret()
            fresh.totp.pending_sealed_secret = deps.box.seal(
                TOTP_SECRET_PURPOSE, secret.encode(), fresh.id.encode()
            )
            fresh.totp.pending_expires_at = now + deps.settings.totp_enrollment_ttl
            fresh.touch(now)
            await uow.users.update(fresh)
            assert fresh.email is not None
            response = reply.present(
                Enrollment(
                    otpauth_uri=totp.provisioning_uri(secret, fresh.email),
                    secret=secret,
                    expires_at=fresh.totp.pending_expires_at,
                )
            )
            await remember(uow, deps, key, response)
            await uow.commit()
    except LostIdempotencyRaceError:
        return await replay_committed(uow, deps, key, reply)
    return response


# --- ConfirmTotp -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConfirmTotp:
    totp_code: str
    origin: Origin
    identity: RequestIdentity | None = None


@dataclass(frozen=True, slots=True)
class Confirmation:
    recovery_codes: list[str]
    user: User


def check_totp_code_field(code: str, field: str = "totp_code") -> None:
    if totp.TOTP_CODE_PATTERN.fullmatch(code) is None:
        raise InvalidArgument([FieldViolation(field, "must be 6 digits")])


async def confirm_totp(
    command: ConfirmTotp,
    uow: AuthUnitOfWork,
    deps: AuthDependencies,
    reply: Reply[Confirmation, M],
) -> M:
    check_totp_code_field(command.totp_code)
    origin = command.origin
    key = idempotency_key(deps, "ConfirmTotp", origin.user, command.identity, secret=True)
    async with kept_on_refusal(uow) as refusal:
        try:
            async with uow:
                if (found := await replay(uow, deps, key, reply)) is not None:
                    return found
                user = await signed_in_user(uow, origin)
                if user.totp.enabled:
                    raise _already_enabled()
                now = deps.clock()
                pending = user.totp.pending_at(now)
                if pending is None:
                    raise FailedPrecondition(
                        "no pending TOTP enrollment (never started or expired): call EnrollTotp",
                        reason="TOTP_NOT_ENROLLED",
                    )
                secret = deps.box.open(TOTP_SECRET_PURPOSE, pending, user.id.encode()).decode()
                step = totp.matching_step(
                    secret, command.totp_code, now.timestamp(), user.totp.last_used_step
                )
                if step is None:
                    refusal.steps.append(
                        audit_step(
                            deps,
                            origin,
                            SecurityEventType.PERMISSION_DENIED,
                            Outcome.DENIED,
                            subject=user.name,
                            reason="TOTP_INVALID",
                            details={"method": "ConfirmTotp"},
                        )
                    )
                    raise PermissionDenied(
                        "the code does not match the new authenticator", reason="TOTP_INVALID"
                    )
                user.totp = TotpSettings(enabled=True, sealed_secret=pending, last_used_step=step)
                user.touch(now)
                await uow.users.update(user)
                codes = [totp.new_recovery_code() for _ in range(deps.settings.recovery_code_count)]
                await uow.recovery_codes.replace(
                    user.id,
                    [recovery_code_hash(deps, user.id, code.replace("-", "")) for code in codes],
                    now,
                )
                await audit(
                    uow,
                    deps,
                    origin,
                    SecurityEventType.TOTP_ENABLED,
                    Outcome.SUCCESS,
                    subject=user.name,
                )
                response = reply.present(Confirmation(codes, user))
                await remember(uow, deps, key, response)
                await uow.commit()
        except LostIdempotencyRaceError:
            return await replay_committed(uow, deps, key, reply)
    return response


# --- DisableTotp -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DisableTotp:
    name: str
    origin: Origin
    password: str = ""
    totp_code: str | None = None
    recovery_code: str | None = None
    identity: RequestIdentity | None = None


async def disable_totp(
    command: DisableTotp, uow: AuthUnitOfWork, deps: AuthDependencies, reply: Reply[User, M]
) -> M:
    origin = command.origin
    target_id = parse_totp_name(command.name, origin.user_id)
    if target_id is None:
        raise InvalidArgument(
            [FieldViolation("name", "must be users/{user}/totp or users/me/totp")],
            reason="INVALID_NAME",
        )
    own = target_id == origin.user_id
    key = idempotency_key(deps, "DisableTotp", origin.user or origin.service, command.identity)
    async with kept_on_refusal(uow) as refusal:
        if not own and not grants(origin.permissions, MANAGE_USERS):
            # Checked before looking the user up: whether it exists is not the caller's
            # business without the permission.
            refusal.steps.append(
                audit_step(
                    deps,
                    origin,
                    SecurityEventType.PERMISSION_DENIED,
                    Outcome.DENIED,
                    subject=f"users/{target_id}",
                    reason="PERMISSION_MISSING",
                    details={"method": "DisableTotp", "permission": MANAGE_USERS},
                )
            )
            raise PermissionDenied(
                f"missing permission {MANAGE_USERS}",
                reason="PERMISSION_MISSING",
                metadata={"permission": MANAGE_USERS},
            )
        async with uow.reader() as reader:
            if (found := await replay(reader, deps, key, reply)) is not None:
                return found
            user = await existing_user(reader, target_id)
        if not user.totp.enabled:
            raise FailedPrecondition("TOTP is not enabled", reason="TOTP_NOT_ENABLED")
        if own:
            require_field("password", command.password, MAX_PASSWORD_INPUT)
            codes = [code for code in (command.totp_code, command.recovery_code) if code]
            if not codes:
                raise FailedPrecondition(
                    "send a current totp_code or an unused recovery_code", reason="TOTP_REQUIRED"
                )
            if len(codes[0]) > MAX_CODE_INPUT:
                raise InvalidArgument([FieldViolation("totp_code", "is too long")])
            await reverify_password(
                deps, origin, user, command.password, refusal, method="DisableTotp"
            )
        try:
            async with uow:
                if (found := await replay(uow, deps, key, reply)) is not None:
                    return found
                fresh = await existing_user(uow, target_id)
                if not fresh.totp.enabled:
                    raise FailedPrecondition("TOTP is not enabled", reason="TOTP_NOT_ENABLED")
                if own:
                    await reverify_second_factor(
                        uow,
                        deps,
                        origin,
                        fresh,
                        refusal,
                        totp_code=command.totp_code or None,
                        recovery_code=command.recovery_code or None,
                        method="DisableTotp",
                    )
                now = deps.clock()
                fresh.totp = TotpSettings()
                fresh.touch(now)
                await uow.users.update(fresh)
                await uow.recovery_codes.delete_for_user(fresh.id)
                await audit(
                    uow,
                    deps,
                    origin,
                    SecurityEventType.TOTP_DISABLED,
                    Outcome.SUCCESS,
                    subject=fresh.name,
                )
                response = reply.present(fresh)
                await remember(uow, deps, key, response)
                await uow.commit()
        except LostIdempotencyRaceError:
            return await replay_committed(uow, deps, key, reply)
    return response
