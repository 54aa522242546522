"""Notifications tables: notifications, their change log, templates, preferences, rate-limit
windows and dead letters. First revision of the `notifications` chain.

Revision ID: notifications_0001
Revises:
Create Date: 2026-11-29 23:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "notifications_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("notifications",)
depends_on: str | Sequence[str] | None = None


def _time(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "notifications_notifications",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("hold_reason", sa.String(length=24), nullable=False),
        sa.Column("channel", sa.String(length=24), nullable=False),
        sa.Column("category", sa.String(length=24), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("user", sa.String(length=255), nullable=False),
        sa.Column("role", sa.String(length=255), nullable=False),
        sa.Column("address_hash", sa.String(length=64), nullable=False),
        sa.Column("sender_user", sa.String(length=255), nullable=False),
        sa.Column("batch_id", sa.String(length=26), nullable=False),
        sa.Column("related_resource", sa.String(length=512), nullable=False),
        _time("create_time"),
        _time("update_time"),
        _time("next_attempt_time", nullable=True),
        sa.Column("lease_owner", sa.String(length=64), nullable=False),
        _time("lease_until", nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("delivery", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notifications_notifications")),
    )
    with op.batch_alter_table("notifications_notifications", schema=None) as batch_op:
        batch_op.create_index(
            "ix_notifications_notifications_create_time_id", ["create_time", "id"]
        )
        batch_op.create_index(
            "ix_notifications_notifications_user_create_time", ["user", "create_time", "id"]
        )
        batch_op.create_index(
            "ix_notifications_notifications_sender_create_time",
            ["sender_user", "create_time", "id"],
        )
        batch_op.create_index(
            "ix_notifications_notifications_status_due", ["status", "next_attempt_time"]
        )
        batch_op.create_index(
            "ix_notifications_notifications_address_status", ["address_hash", "status"]
        )
        batch_op.create_index("ix_notifications_notifications_batch_id", ["batch_id"])

    op.create_table(
        "notifications_changes",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("notification_id", sa.String(length=26), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("previous_status", sa.String(length=24), nullable=True),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("channel", sa.String(length=24), nullable=False),
        sa.Column("recipient_user", sa.String(length=255), nullable=False),
        sa.Column("sender_user", sa.String(length=255), nullable=False),
        _time("time"),
        sa.Column("document", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notifications_changes")),
        sa.UniqueConstraint(
            "notification_id",
            "sequence",
            name=op.f("uq_notifications_changes_notification_id_sequence"),
        ),
    )
    with op.batch_alter_table("notifications_changes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_notifications_changes_time"), ["time"])

    op.create_table(
        "notifications_templates",
        sa.Column("template_id", sa.String(length=63), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(length=24), nullable=False),
        _time("create_time"),
        sa.Column("document", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("template_id", "version", name=op.f("pk_notifications_templates")),
    )
    op.create_table(
        "notifications_preferences",
        sa.Column("user", sa.String(length=255), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("user", name=op.f("pk_notifications_preferences")),
    )
    op.create_table(
        "notifications_rate_limits",
        sa.Column("key", sa.String(length=64), nullable=False),
        _time("window_start"),
        sa.Column("used", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_notifications_rate_limits")),
    )
    op.create_table(
        "notifications_dead_letters",
        sa.Column("notification_id", sa.String(length=26), nullable=False),
        _time("dead_time"),
        sa.Column("failure_code", sa.String(length=64), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("notification_id", name=op.f("pk_notifications_dead_letters")),
    )
    with op.batch_alter_table("notifications_dead_letters", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_notifications_dead_letters_dead_time"), ["dead_time"])


def downgrade() -> None:
    with op.batch_alter_table("notifications_dead_letters", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_notifications_dead_letters_dead_time"))
    op.drop_table("notifications_dead_letters")
    op.drop_table("notifications_rate_limits")
    op.drop_table("notifications_preferences")
    op.drop_table("notifications_templates")
    with op.batch_alter_table("notifications_changes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_notifications_changes_time"))
    op.drop_table("notifications_changes")
    with op.batch_alter_table("notifications_notifications", schema=None) as batch_op:
        for index in (
            "ix_notifications_notifications_batch_id",
            "ix_notifications_notifications_address_status",
            "ix_notifications_notifications_status_due",
            "ix_notifications_notifications_sender_create_time",
            "ix_notifications_notifications_user_create_time",
            "ix_notifications_notifications_create_time_id",
        ):
            batch_op.drop_index(index)
    op.drop_table("notifications_notifications")
