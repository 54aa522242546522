"""User accounts: lifecycle, what deletion erases, and the resource-name rules."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime

from gatehouse.runtime.ids import is_ulid

USER_PREFIX = "users/"
ME = "me"
MAX_DISPLAY_NAME = 100


class UserStatus(enum.StrEnum):
    """What is stored. LOCKED is not stored: it is ACTIVE with a lock that has not lifted."""

    ACTIVE = "active"
    DELETED = "deleted"


class UserState(enum.Enum):
    """What callers see (`User.state`)."""

    ACTIVE = "active"
    LOCKED = "locked"
    DELETED = "deleted"


@dataclass(slots=True)
class TotpSettings:
    """The second factor of one user. Secrets are sealed (encrypted) by the handlers' secret
    box before they reach the entity: the domain never holds a TOTP secret in clear."""

    enabled: bool = False
    sealed_secret: bytes | None = None
    # The last time step whose code was accepted: a code of that step or earlier is a replay.
    last_used_step: int = 0
    pending_sealed_secret: bytes | None = None
    pending_expires_at: datetime | None = None

    def pending_at(self, now: datetime) -> bytes | None:
        if self.pending_sealed_secret is None or self.pending_expires_at is None:
            return None
        return self.pending_sealed_secret if now < self.pending_expires_at else None


@dataclass(slots=True)
class User:
    id: str
    email: str | None
    display_name: str
    password_hash: str | None
    status: UserStatus
    created_at: datetime
    updated_at: datetime
    password_updated_at: datetime | None = None
    last_login_at: datetime | None = None
    deleted_at: datetime | None = None
    locked_until: datetime | None = None
    totp: TotpSettings = field(default_factory=TotpSettings)
    roles: tuple[str, ...] = ()  # role ids, sorted

    @property
    def name(self) -> str:
        return user_name(self.id)

    @property
    def is_deleted(self) -> bool:
        return self.status is UserStatus.DELETED

    def state_at(self, now: datetime) -> UserState:
        if self.is_deleted:
            return UserState.DELETED
        if self.lock_at(now) is not None:
            return UserState.LOCKED
        return UserState.ACTIVE

    def lock_at(self, now: datetime) -> datetime | None:
        """When the current lock lifts, or None when the account is not locked."""
        if self.locked_until is not None and now < self.locked_until:
            return self.locked_until
        return None

    def touch(self, now: datetime) -> None:
        self.updated_at = now

    def set_password_hash(self, password_hash: str, now: datetime) -> None:
        self.password_hash = password_hash
        self.password_updated_at = now
        self.touch(now)

    def erase(self, now: datetime) -> None:
        """Delete: keep the record (audit records still resolve), drop every credential, the
        email (released for a new registration) and the roles."""
        self.status = UserStatus.DELETED
        self.email = None
        self.password_hash = None
        self.totp = TotpSettings()
        self.roles = ()
        self.locked_until = None
        self.deleted_at = now
        self.touch(now)


def user_name(user_id: str) -> str:
    return f"{USER_PREFIX}{user_id}"


def parse_user_name(name: str) -> str | None:
    """`users/{ULID}` -> the id; None for anything else (including `users/me`)."""
    if not name.startswith(USER_PREFIX):
        return None
    user_id = name.removeprefix(USER_PREFIX)
    return user_id if is_ulid(user_id) else None


def parse_totp_name(name: str, caller_id: str | None) -> str | None:
    """`users/{user}/totp` or `users/me/totp` -> the user id; None when malformed."""
    prefix, slash, last = name.rpartition("/")
    if not slash or last != "totp":
        return None
    if prefix == f"{USER_PREFIX}{ME}":
        return caller_id
    return parse_user_name(prefix)


def check_display_name(display_name: str) -> str | None:
    """Why `display_name` is unacceptable, or None."""
    if not display_name.strip():
        return "is required"
    if len(display_name) > MAX_DISPLAY_NAME:
        return f"must be at most {MAX_DISPLAY_NAME} characters"
    if any(ord(char) < 32 or ord(char) == 127 for char in display_name):
        return "must not contain control characters"
    return None
