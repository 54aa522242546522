"""Proving who you are again: lockout checks, password and second-factor verification, and
what a failure leaves behind (counters, audit, `user.locked`). Shared by Login and by the
authenticated calls that re-verify (ChangePassword, EnrollTotp, DisableTotp)."""

from __future__ import annotations

import logging
import math
from datetime import timedelta

from gatehouse.auth import mapping
from gatehouse.auth.domain.emails import InvalidEmailError, normalise_email
from gatehouse.auth.domain.lockout import Lock, LockScope
from gatehouse.auth.domain.security_events import Outcome, SecurityEventType
from gatehouse.auth.domain.sessions import SecondFactor
from gatehouse.auth.domain.totp import matching_step, normalise_recovery_code
from gatehouse.auth.domain.users import User
from gatehouse.auth.handlers.common import (
    AuthDependencies,
    Origin,
    Refusal,
    audit,
    audit_step,
    publish,
)
from gatehouse.auth.handlers.ports import AuthUnitOfWork
from gatehouse.auth.v1 import events_pb2
from gatehouse.runtime.errors import ResourceExhausted, Unavailable

log = logging.getLogger("gatehouse.auth")

TOTP_SECRET_PURPOSE = "totp-secret"  # noqa: S105 - a purpose label, not a secret


def email_as_entered(raw: str) -> str:
    """The account key of a sign-in attempt: the normalised email, or (not an email at all)
    the trimmed lower-cased text, so junk is counted and locked like any other name."""
    try:
        return normalise_email(raw)
    except InvalidEmailError:
        return raw.strip().lower()[:254]


def account_key(deps: AuthDependencies, email: str) -> str:
    # Keyed: the shared store never holds email addresses in clear.
    return deps.box.digest("lockout-account", email)


async def clear_lockout(deps: AuthDependencies, key: str) -> None:
    """After a committed success: forget the failures. Best effort, since the caller's
    sign-in already happened; a store hiccup here must not turn it into an error."""
    try:
        await deps.lockout.clear(key)
    except Unavailable:
        log.warning("could not clear an account's failure count; it expires by itself")


def lock_error(lock: Lock) -> ResourceExhausted:
    # Whole seconds, rounded up: retrying at the advertised time must succeed.
    retry = timedelta(seconds=max(1, math.ceil(lock.retry_after.total_seconds())))
    if lock.scope is LockScope.ACCOUNT:
        return ResourceExhausted(
            "too many failed attempts: the account is locked for now",
            retry_after=retry,
            reason="ACCOUNT_LOCKED",
        )
    return ResourceExhausted(
        "too many failed attempts from this address", retry_after=retry, reason="TOO_MANY_ATTEMPTS"
    )


async def refuse_if_locked(
    deps: AuthDependencies,
    origin: Origin,
    email: str,
    refusal: Refusal,
    *,
    subject: str = "",
    audit_as: SecurityEventType = SecurityEventType.LOGIN_FAILED,
) -> None:
    lock = await deps.lockout.current(account_key(deps, email), origin.client_address)
    if lock is None:
        return
    error = lock_error(lock)
    refusal.steps.append(
        audit_step(
            deps,
            origin,
            audit_as,
            Outcome.DENIED,
            subject=subject,
            reason=error.reason,
            details={"email": email, "scope": lock.scope.value},
        )
    )
    raise error


async def count_failure(
    deps: AuthDependencies,
    origin: Origin,
    email: str,
    user: User | None,
    refusal: Refusal,
) -> ResourceExhausted | None:
    """Count a failed verification; if it locks the account or the address, arrange the
    audit record (and `user.locked` for an existing account) and return the error to raise
    instead of the plain failure."""
    lock = await deps.lockout.record_failure(account_key(deps, email), origin.client_address)
    if lock is None:
        return None
    now = deps.clock()
    until = now + lock.retry_after
    subject = user.name if user is not None else ""
    user_id = user.id if user is not None else None

    async def record_lock(uow: AuthUnitOfWork) -> None:
        await audit(
            uow,
            deps,
            origin,
            SecurityEventType.LOCKED,
            Outcome.DENIED,
            subject=subject,
            actor_user="",
            reason=lock_error(lock).reason,
            details={
                "scope": lock.scope.value,
                "lock_seconds": str(int(lock.retry_after.total_seconds())),
                "email": email,
            },
        )
        if lock.scope is not LockScope.ACCOUNT or user_id is None:
            return
        locked = await uow.users.get(user_id)
        if locked is None or locked.is_deleted or locked.email is None:
            return
        locked.locked_until = until
        await uow.users.update(locked)
        await publish(
            uow,
            deps,
            origin,
            "user.locked",
            locked.name,
            events_pb2.UserLocked(
                user=locked.name,
                email=locked.email,
                display_name=locked.display_name,
                failed_attempts=lock.failures,
                lock_duration=mapping.duration(lock.retry_after),
                lock_expire_time=mapping.timestamp(until),
                client_address=origin.client_address,
            ),
        )

    refusal.steps.append(record_lock)
    return lock_error(lock)


async def check_second_factor(
    uow: AuthUnitOfWork,
    deps: AuthDependencies,
    user: User,
    *,
    totp_code: str | None,
    recovery_code: str | None,
) -> SecondFactor | None:
    """Verify and *use* a TOTP code (its step becomes the last accepted one) or a recovery
    code (spent), inside `uow`; None when neither is valid."""
    if totp_code is not None:
        return SecondFactor.TOTP if await _use_totp_code(uow, deps, user, totp_code) else None
    if recovery_code is not None:
        used = await _use_recovery_code(uow, deps, user, recovery_code)
        return SecondFactor.RECOVERY_CODE if used else None
    return None


async def _use_totp_code(
    uow: AuthUnitOfWork, deps: AuthDependencies, user: User, code: str
) -> bool:
    if user.totp.sealed_secret is None:
        return False
    secret = deps.box.open(TOTP_SECRET_PURPOSE, user.totp.sealed_secret, user.id.encode())
    step = matching_step(secret.decode(), code, deps.clock().timestamp(), user.totp.last_used_step)
    # The conditional update, not the read above, decides a race between two requests
    # carrying the same code: one of them wins.
    if step is None or not await uow.users.advance_totp_step(user.id, step):
        return False
    user.totp.last_used_step = step
    return True


async def _use_recovery_code(
    uow: AuthUnitOfWork, deps: AuthDependencies, user: User, code: str
) -> bool:
    normalised = normalise_recovery_code(code)
    if normalised is None:
        return False
    code_hash = recovery_code_hash(deps, user.id, normalised)
    return await uow.recovery_codes.spend(user.id, code_hash, deps.clock())


def recovery_code_hash(deps: AuthDependencies, user_id: str, normalised_code: str) -> str:
    return deps.box.digest("recovery-code", f"{user_id}:{normalised_code}")
