"""Sessions and their refresh-token families, login challenges and reset tokens.

A session is what one sign-in opens. Its refresh tokens form a family: each use spends the
presented token and issues the next; presenting a spent one means two parties hold the
family (theft), so the whole session is revoked. Rotation keeps the session's absolute
expiry: a stolen family cannot be kept alive forever.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime


class SecondFactor(enum.StrEnum):
    NONE = ""
    TOTP = "totp"
    RECOVERY_CODE = "recovery_code"


class RevokeReason(enum.StrEnum):
    LOGOUT = "logout"
    PASSWORD_CHANGED = "password_changed"  # noqa: S105 - a name, not a secret
    PASSWORD_RESET = "password_reset"  # noqa: S105 - a name, not a secret
    REFRESH_TOKEN_REUSED = "refresh_token_reused"  # noqa: S105 - a name, not a secret
    USER_DELETED = "user_deleted"


@dataclass(slots=True)
class Session:
    id: str
    user_id: str
    created_at: datetime
    expires_at: datetime
    client_address: str
    user_agent: str
    second_factor: SecondFactor
    revoked_at: datetime | None = None
    revoke_reason: RevokeReason | None = None

    def is_active(self, now: datetime) -> bool:
        return self.revoked_at is None and now < self.expires_at


@dataclass(slots=True)
class RefreshToken:
    """One token of a family, known only by its hash."""

    token_hash: str
    session_id: str
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None = None


class RefreshVerdict(enum.Enum):
    OK = "ok"
    INVALID = "invalid"  # the session is over (revoked, user gone)
    EXPIRED = "expired"
    REUSED = "reused"


def judge_refresh(token: RefreshToken, session: Session, now: datetime) -> RefreshVerdict:
    """What presenting `token` means. Reuse is judged before expiry and revocation: an
    attacker replaying an old token must still trip the alarm, even on an ended session
    (then it only gets recorded)."""
    if token.used_at is not None:
        return RefreshVerdict.REUSED
    if session.revoked_at is not None:
        return RefreshVerdict.INVALID
    if now >= token.expires_at:
        return RefreshVerdict.EXPIRED
    return RefreshVerdict.OK


@dataclass(slots=True)
class LoginChallenge:
    """The second sign-in step a verified password opens (TOTP accounts)."""

    token_hash: str
    user_id: str
    created_at: datetime
    expires_at: datetime
    attempts: int = 0
    used_at: datetime | None = None

    def usable(self, now: datetime, max_attempts: int) -> bool:
        return self.used_at is None and now < self.expires_at and self.attempts < max_attempts


@dataclass(slots=True)
class PasswordResetToken:
    token_hash: str
    user_id: str
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None = None
    # Set when a newer request superseded it: only the latest link works.
    invalidated_at: datetime | None = None

    @property
    def spent(self) -> bool:
        return self.used_at is not None or self.invalidated_at is not None
