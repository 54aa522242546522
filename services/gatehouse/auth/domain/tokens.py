"""Access-token claims and the reasons a token is not (or no longer) acceptable."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

ALGORITHM = "EdDSA"
# Clock skew tolerated between replicas and services when checking `exp`/`iat`.
LEEWAY = timedelta(seconds=30)


class InactiveReason(enum.Enum):
    MALFORMED = "malformed"
    INVALID_SIGNATURE = "invalid_signature"
    UNKNOWN_KEY = "unknown_key"
    EXPIRED = "expired"
    REVOKED = "revoked"
    WRONG_AUDIENCE = "wrong_audience"
    USER_INACTIVE = "user_inactive"


class TokenRejectedError(Exception):
    def __init__(self, reason: InactiveReason) -> None:
        super().__init__(reason.value)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class AccessTokenGrant:
    """What one access token says; `claims()` is the JWT payload."""

    token_id: str
    subject: str  # users/{user}
    session_id: str
    issuer: str
    audience: str
    issued_at: datetime
    expires_at: datetime
    roles: Sequence[str]  # roles/{role}
    permissions: Sequence[str]

    def claims(self) -> dict[str, Any]:
        return {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": self.subject,
            "iat": int(self.issued_at.timestamp()),
            "exp": int(self.expires_at.timestamp()),
            "jti": self.token_id,
            "sid": self.session_id,
            "roles": list(self.roles),
            "permissions": list(self.permissions),
        }
