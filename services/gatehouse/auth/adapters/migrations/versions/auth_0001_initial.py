"""Auth tables: users and roles, sessions and their tokens, TOTP recovery codes, password
resets, the security audit trail and the signing keys. First revision of the `auth` chain.

Revision ID: auth_0001
Revises:
Create Date: 2025-12-02 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "auth_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("auth",)
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "auth_roles",
        sa.Column("id", sa.String(length=63), nullable=False),
        sa.Column("display_name", sa.String(length=100), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("permissions", sa.Text(), nullable=False),
        sa.Column("built_in", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_auth_roles")),
    )
    op.create_table(
        "auth_security_events",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("type", sa.String(length=40), nullable=False),
        sa.Column("severity", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("actor_user", sa.String(length=40), nullable=False),
        sa.Column("actor_service", sa.String(length=255), nullable=False),
        sa.Column("client_address", sa.String(length=64), nullable=False),
        sa.Column("subject", sa.String(length=255), nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=False),
        sa.Column("user_agent", sa.String(length=256), nullable=False),
        sa.Column("correlation_id", sa.String(length=64), nullable=False),
        sa.Column("details", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_auth_security_events")),
    )
    with op.batch_alter_table("auth_security_events", schema=None) as batch_op:
        batch_op.create_index(
            "ix_auth_security_events_actor_user_id", ["actor_user", "id"], unique=False
        )
        batch_op.create_index("ix_auth_security_events_subject_id", ["subject", "id"], unique=False)
        batch_op.create_index(batch_op.f("ix_auth_security_events_time"), ["time"], unique=False)
        batch_op.create_index("ix_auth_security_events_type_id", ["type", "id"], unique=False)

    op.create_table(
        "auth_signing_keys",
        sa.Column("kid", sa.String(length=64), nullable=False),
        sa.Column("algorithm", sa.String(length=16), nullable=False),
        sa.Column("public_jwk", sa.Text(), nullable=False),
        sa.Column("sealed_private_key", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("superseded_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("kid", name=op.f("pk_auth_signing_keys")),
    )
    op.create_table(
        "auth_users",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=True),
        sa.Column("display_name", sa.String(length=100), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("totp_enabled", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("totp_secret", sa.LargeBinary(), nullable=True),
        sa.Column("totp_last_step", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("totp_pending_secret", sa.LargeBinary(), nullable=True),
        sa.Column(
            "totp_pending_expires_at",
            sa.DateTime(timezone=True),
            nullable=True,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("password_updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_login_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_auth_users")),
        sa.UniqueConstraint("email", name=op.f("uq_auth_users_email")),
    )
    with op.batch_alter_table("auth_users", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_auth_users_created_at"), ["created_at"], unique=False)

    op.create_table(
        "auth_login_challenges",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=26), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["auth_users.id"], name=op.f("fk_auth_login_challenges_user_id_auth_users")
        ),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_auth_login_challenges")),
    )
    with op.batch_alter_table("auth_login_challenges", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_auth_login_challenges_user_id"), ["user_id"], unique=False
        )

    op.create_table(
        "auth_password_resets",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=26), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("invalidated_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["auth_users.id"], name=op.f("fk_auth_password_resets_user_id_auth_users")
        ),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_auth_password_resets")),
    )
    with op.batch_alter_table("auth_password_resets", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_auth_password_resets_user_id"), ["user_id"], unique=False
        )

    op.create_table(
        "auth_recovery_codes",
        sa.Column("user_id", sa.String(length=26), nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["auth_users.id"], name=op.f("fk_auth_recovery_codes_user_id_auth_users")
        ),
        sa.PrimaryKeyConstraint("user_id", "code_hash", name=op.f("pk_auth_recovery_codes")),
    )
    op.create_table(
        "auth_sessions",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("user_id", sa.String(length=26), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("client_address", sa.String(length=64), nullable=False),
        sa.Column("user_agent", sa.String(length=256), nullable=False),
        sa.Column("second_factor", sa.String(length=16), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoke_reason", sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["auth_users.id"], name=op.f("fk_auth_sessions_user_id_auth_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_auth_sessions")),
    )
    with op.batch_alter_table("auth_sessions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_auth_sessions_user_id"), ["user_id"], unique=False)

    op.create_table(
        "auth_user_roles",
        sa.Column("user_id", sa.String(length=26), nullable=False),
        sa.Column("role_id", sa.String(length=63), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["role_id"], ["auth_roles.id"], name=op.f("fk_auth_user_roles_role_id_auth_roles")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["auth_users.id"], name=op.f("fk_auth_user_roles_user_id_auth_users")
        ),
        sa.PrimaryKeyConstraint("user_id", "role_id", name=op.f("pk_auth_user_roles")),
    )
    with op.batch_alter_table("auth_user_roles", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_auth_user_roles_role_id"), ["role_id"], unique=False)

    op.create_table(
        "auth_access_tokens",
        sa.Column("token_id", sa.String(length=40), nullable=False),
        sa.Column("session_id", sa.String(length=26), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["auth_sessions.id"],
            name=op.f("fk_auth_access_tokens_session_id_auth_sessions"),
        ),
        sa.PrimaryKeyConstraint("token_id", name=op.f("pk_auth_access_tokens")),
    )
    with op.batch_alter_table("auth_access_tokens", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_auth_access_tokens_expires_at"), ["expires_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_auth_access_tokens_session_id"), ["session_id"], unique=False
        )

    op.create_table(
        "auth_refresh_tokens",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("session_id", sa.String(length=26), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["auth_sessions.id"],
            name=op.f("fk_auth_refresh_tokens_session_id_auth_sessions"),
        ),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_auth_refresh_tokens")),
    )
    with op.batch_alter_table("auth_refresh_tokens", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_auth_refresh_tokens_session_id"), ["session_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("auth_refresh_tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_auth_refresh_tokens_session_id"))

    op.drop_table("auth_refresh_tokens")
    with op.batch_alter_table("auth_access_tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_auth_access_tokens_session_id"))
        batch_op.drop_index(batch_op.f("ix_auth_access_tokens_expires_at"))

    op.drop_table("auth_access_tokens")
    with op.batch_alter_table("auth_user_roles", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_auth_user_roles_role_id"))

    op.drop_table("auth_user_roles")
    with op.batch_alter_table("auth_sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_auth_sessions_user_id"))

    op.drop_table("auth_sessions")
    op.drop_table("auth_recovery_codes")
    with op.batch_alter_table("auth_password_resets", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_auth_password_resets_user_id"))

    op.drop_table("auth_password_resets")
    with op.batch_alter_table("auth_login_challenges", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_auth_login_challenges_user_id"))

    op.drop_table("auth_login_challenges")
    with op.batch_alter_table("auth_users", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_auth_users_created_at"))

    op.drop_table("auth_users")
    op.drop_table("auth_signing_keys")
    with op.batch_alter_table("auth_security_events", schema=None) as batch_op:
        batch_op.drop_index("ix_auth_security_events_type_id")
        batch_op.drop_index(batch_op.f("ix_auth_security_events_time"))
        batch_op.drop_index("ix_auth_security_events_subject_id")
        batch_op.drop_index("ix_auth_security_events_actor_user_id")

    op.drop_table("auth_security_events")
    op.drop_table("auth_roles")
