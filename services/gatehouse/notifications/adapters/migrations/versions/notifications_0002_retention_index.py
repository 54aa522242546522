"""The retention sweep finds finished notifications by status and last change.

Revision ID: notifications_0002
Revises: notifications_0001
Create Date: 2026-11-30 00:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "notifications_0002"
down_revision: str | Sequence[str] | None = "notifications_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("notifications_notifications", schema=None) as batch_op:
        batch_op.create_index(
            "ix_notifications_notifications_status_update_time", ["status", "update_time"]
        )


def downgrade() -> None:
    with op.batch_alter_table("notifications_notifications", schema=None) as batch_op:
        batch_op.drop_index("ix_notifications_notifications_status_update_time")
