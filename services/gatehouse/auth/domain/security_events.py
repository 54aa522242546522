"""The security audit trail: what is recorded, how much it matters, and how it is filtered."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

SECURITY_EVENT_PREFIX = "securityEvents/"
MAX_USER_AGENT = 256


class SecurityEventType(enum.StrEnum):
    USER_REGISTERED = "user_registered"
    LOGIN_SUCCEEDED = "login_succeeded"
    LOGIN_FAILED = "login_failed"
    LOCKED = "locked"
    LOGOUT = "logout"
    REFRESH_TOKEN_REUSED = "refresh_token_reused"  # noqa: S105 - a name, not a secret
    PASSWORD_CHANGED = "password_changed"  # noqa: S105 - a name, not a secret
    PASSWORD_RESET_REQUESTED = "password_reset_requested"  # noqa: S105 - a name, not a secret
    PASSWORD_RESET_COMPLETED = "password_reset_completed"  # noqa: S105 - a name, not a secret
    TOTP_ENABLED = "totp_enabled"
    TOTP_DISABLED = "totp_disabled"
    RECOVERY_CODE_USED = "recovery_code_used"
    ROLE_CREATED = "role_created"
    ROLE_ASSIGNED = "role_assigned"
    ROLE_REVOKED = "role_revoked"
    USER_DELETED = "user_deleted"
    PERMISSION_DENIED = "permission_denied"
    TOKEN_REJECTED = "token_rejected"  # noqa: S105 - a name, not a secret


class Outcome(enum.StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"
    DENIED = "denied"


class Severity(enum.IntEnum):
    """Ordered like `gatehouse.common.v1.Severity`, so `min_severity` is a comparison."""

    INFO = 1
    LOW = 2
    MEDIUM = 3
    HIGH = 4
    CRITICAL = 5


# How much each kind matters by default: theft signals and privilege changes are HIGH,
# refusals MEDIUM, routine sign-ins INFO.
DEFAULT_SEVERITY: Mapping[SecurityEventType, Severity] = {
    SecurityEventType.USER_REGISTERED: Severity.INFO,
    SecurityEventType.LOGIN_SUCCEEDED: Severity.INFO,
    SecurityEventType.LOGIN_FAILED: Severity.LOW,
    SecurityEventType.LOCKED: Severity.MEDIUM,
    SecurityEventType.LOGOUT: Severity.INFO,
    SecurityEventType.REFRESH_TOKEN_REUSED: Severity.HIGH,
    SecurityEventType.PASSWORD_CHANGED: Severity.LOW,
    SecurityEventType.PASSWORD_RESET_REQUESTED: Severity.LOW,
    SecurityEventType.PASSWORD_RESET_COMPLETED: Severity.MEDIUM,
    SecurityEventType.TOTP_ENABLED: Severity.LOW,
    SecurityEventType.TOTP_DISABLED: Severity.MEDIUM,
    SecurityEventType.RECOVERY_CODE_USED: Severity.MEDIUM,
    SecurityEventType.ROLE_CREATED: Severity.MEDIUM,
    SecurityEventType.ROLE_ASSIGNED: Severity.HIGH,
    SecurityEventType.ROLE_REVOKED: Severity.MEDIUM,
    SecurityEventType.USER_DELETED: Severity.MEDIUM,
    SecurityEventType.PERMISSION_DENIED: Severity.MEDIUM,
    SecurityEventType.TOKEN_REJECTED: Severity.MEDIUM,
}


@dataclass(frozen=True, slots=True)
class Actor:
    user: str = ""  # users/{user}
    service: str = ""  # SPIFFE id of the calling service or edge
    client_address: str = ""


@dataclass(frozen=True, slots=True)
class SecurityEvent:
    id: str
    type: SecurityEventType
    severity: Severity
    outcome: Outcome
    actor: Actor
    subject: str
    time: datetime
    reason: str = ""
    user_agent: str = ""
    correlation_id: str = ""
    details: Mapping[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{SECURITY_EVENT_PREFIX}{self.id}"


@dataclass(frozen=True, slots=True)
class SecurityEventFilter:
    """Filters of ListSecurityEvents; each unset one matches everything."""

    user: str = ""
    types: frozenset[SecurityEventType] = frozenset()
    outcome: Outcome | None = None
    min_severity: Severity | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    client_address: str = ""
    newest_first: bool = True
