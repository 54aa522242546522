"""The auth service's tables (its own MetaData; created by the `auth` Alembic chain)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from gatehouse.runtime.db import UtcDateTime, new_registry

AUTH_VERSIONS_DIR = Path(__file__).parent / "migrations" / "versions"
"""The auth service's Alembic chain (branch label `auth`)."""


class AuthBase(DeclarativeBase):
    registry = new_registry()


class UserRow(AuthBase):
    __tablename__ = "auth_users"

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    # Unique among rows that have one; deletion sets it to NULL, which releases it (NULLs
    # never collide in a unique index, on PostgreSQL and SQLite alike).
    email: Mapped[str | None] = mapped_column(String(254), unique=True)
    display_name: Mapped[str] = mapped_column(String(100))
    password_hash: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16))
    totp_enabled: Mapped[bool] = mapped_column(Boolean, server_default=false())
    totp_secret: Mapped[bytes | None] = mapped_column(LargeBinary)
    totp_last_step: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    totp_pending_secret: Mapped[bytes | None] = mapped_column(LargeBinary)
    totp_pending_expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())
    password_updated_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    last_login_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    deleted_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    locked_until: Mapped[datetime | None] = mapped_column(UtcDateTime())


class RoleRow(AuthBase):
    __tablename__ = "auth_roles"

    id: Mapped[str] = mapped_column(String(63), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(Text)
    # A JSON array: read and written whole, never queried inside.
    permissions: Mapped[str] = mapped_column(Text)
    built_in: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class UserRoleRow(AuthBase):
    __tablename__ = "auth_user_roles"

    user_id: Mapped[str] = mapped_column(ForeignKey("auth_users.id"), primary_key=True)
    # Indexed: "who holds admin" (last-admin rule) and the role filter of ListUsers.
    role_id: Mapped[str] = mapped_column(ForeignKey("auth_roles.id"), primary_key=True, index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class SessionRow(AuthBase):
    __tablename__ = "auth_sessions"

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("auth_users.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime())
    client_address: Mapped[str] = mapped_column(String(64))
    user_agent: Mapped[str] = mapped_column(String(256))
    second_factor: Mapped[str] = mapped_column(String(16))
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    revoke_reason: Mapped[str | None] = mapped_column(String(32))


class RefreshTokenRow(AuthBase):
    __tablename__ = "auth_refresh_tokens"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("auth_sessions.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class AccessTokenRow(AuthBase):
    __tablename__ = "auth_access_tokens"

    token_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("auth_sessions.id"), index=True)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)


class LoginChallengeRow(AuthBase):
    __tablename__ = "auth_login_challenges"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("auth_users.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime())
    attempts: Mapped[int] = mapped_column(Integer)
    used_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class RecoveryCodeRow(AuthBase):
    __tablename__ = "auth_recovery_codes"

    user_id: Mapped[str] = mapped_column(ForeignKey("auth_users.id"), primary_key=True)
    code_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class PasswordResetRow(AuthBase):
    __tablename__ = "auth_password_resets"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("auth_users.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    invalidated_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class SecurityEventRow(AuthBase):
    __tablename__ = "auth_security_events"
    __table_args__ = (
        # The filters ListSecurityEvents offers that narrow the most, each with the id
        # (time order) for keyset pagination.
        Index("ix_auth_security_events_actor_user_id", "actor_user", "id"),
        Index("ix_auth_security_events_subject_id", "subject", "id"),
        Index("ix_auth_security_events_type_id", "type", "id"),
    )

    # A ULID: sorts by time, so it is also the pagination key.
    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    type: Mapped[str] = mapped_column(String(40))
    severity: Mapped[int] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(16))
    actor_user: Mapped[str] = mapped_column(String(40))
    actor_service: Mapped[str] = mapped_column(String(255))
    client_address: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(255))
    time: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    reason: Mapped[str] = mapped_column(String(64))
    user_agent: Mapped[str] = mapped_column(String(256))
    correlation_id: Mapped[str] = mapped_column(String(64))
    details: Mapped[str] = mapped_column(Text)  # JSON object of strings


class SigningKeyRow(AuthBase):
    __tablename__ = "auth_signing_keys"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    algorithm: Mapped[str] = mapped_column(String(16))
    public_jwk: Mapped[str] = mapped_column(Text)
    sealed_private_key: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    activates_at: Mapped[datetime] = mapped_column(UtcDateTime())
    superseded_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
