"""Signing keys get `activates_at`: a rotation publishes the next key before it signs.

Existing keys signed from their creation, so they activate at `created_at`.

Revision ID: auth_0002
Revises: auth_0001
Create Date: 2026-11-29 23:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "auth_0002"
down_revision: str | Sequence[str] | None = "auth_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "auth_signing_keys", sa.Column("activates_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.execute("UPDATE auth_signing_keys SET activates_at = created_at")
    # Batch mode: SQLite cannot alter a column in place; it copies the table.
    with op.batch_alter_table("auth_signing_keys") as batch:
        batch.alter_column("activates_at", existing_type=sa.DateTime(timezone=True), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("auth_signing_keys") as batch:
        batch.drop_column("activates_at")
