"""Access tables: grants, visitors, door schedules, emergencies, keypads and the access log
(hash-chained per building, with its head row). First revision of the `access` chain.

Revision ID: access_0001
Revises:
Create Date: 2026-11-29 23:18:16.497674
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "access_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("access",)
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "access_door_schedules",
        sa.Column("building_id", sa.String(length=128), nullable=False),
        sa.Column("door_id", sa.String(length=128), nullable=False),
        sa.Column("mode", sa.Integer(), nullable=False),
        sa.Column("schedule", sa.Text(), nullable=False),
        sa.Column("etag", sa.String(length=64), nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.Text(), nullable=False),
        sa.Column("held", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.PrimaryKeyConstraint("building_id", "door_id", name=op.f("pk_access_door_schedules")),
    )
    op.create_table(
        "access_emergencies",
        sa.Column("building_id", sa.String(length=128), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("mode", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("triggered_by", sa.Text(), nullable=False),
        sa.Column("trigger_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source_alert", sa.String(length=512), nullable=False),
        sa.Column("cleared_by", sa.Text(), nullable=True),
        sa.Column("clear_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("clear_reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("building_id", name=op.f("pk_access_emergencies")),
    )
    op.create_table(
        "access_grants",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("building_id", sa.String(length=128), nullable=False),
        sa.Column("holder", sa.String(length=512), nullable=False),
        sa.Column("display_name", sa.String(length=200), nullable=False),
        sa.Column("doors", sa.Text(), nullable=False),
        sa.Column("pin_digest", sa.String(length=64), nullable=False),
        sa.Column("open_digest", sa.String(length=64), nullable=True),
        sa.Column("valid_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("valid_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("schedule", sa.Text(), nullable=True),
        sa.Column("max_uses", sa.Integer(), nullable=False),
        sa.Column("use_count", sa.Integer(), nullable=False),
        sa.Column("last_use_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("issued_by", sa.Text(), nullable=False),
        sa.Column("revoke_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_by", sa.Text(), nullable=True),
        sa.Column("revoke_reason", sa.Text(), nullable=False),
        sa.Column("visitor_id", sa.String(length=26), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_access_grants")),
        sa.UniqueConstraint(
            "building_id", "open_digest", name=op.f("uq_access_grants_building_id_open_digest")
        ),
    )
    with op.batch_alter_table("access_grants", schema=None) as batch_op:
        batch_op.create_index(
            "ix_access_grants_building_id_create_time_id",
            ["building_id", "create_time", "id"],
            unique=False,
        )
        batch_op.create_index(
            "ix_access_grants_building_id_pin_digest", ["building_id", "pin_digest"], unique=False
        )

    op.create_table(
        "access_keypads",
        sa.Column("building_id", sa.String(length=128), nullable=False),
        sa.Column("door_id", sa.String(length=128), nullable=False),
        sa.Column("failures", sa.Text(), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("building_id", "door_id", name=op.f("pk_access_keypads")),
    )
    op.create_table(
        "access_log_entries",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("building_id", sa.String(length=128), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("kind", sa.Integer(), nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("door_id", sa.String(length=128), nullable=False),
        sa.Column("decision", sa.Integer(), nullable=False),
        sa.Column("deny_reason", sa.Integer(), nullable=False),
        sa.Column("grant_id", sa.String(length=26), nullable=False),
        sa.Column("holder", sa.String(length=512), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("emergency_mode", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.String(length=26), nullable=False),
        sa.Column("previous_hash", sa.LargeBinary(), nullable=False),
        sa.Column("entry_hash", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_access_log_entries")),
        sa.UniqueConstraint(
            "building_id", "sequence", name=op.f("uq_access_log_entries_building_id_sequence")
        ),
        sa.UniqueConstraint("event_id", name=op.f("uq_access_log_entries_event_id")),
    )
    with op.batch_alter_table("access_log_entries", schema=None) as batch_op:
        batch_op.create_index(
            "ix_access_log_entries_building_id_time", ["building_id", "time"], unique=False
        )

    op.create_table(
        "access_log_heads",
        sa.Column("building_id", sa.String(length=128), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("entry_hash", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("building_id", name=op.f("pk_access_log_heads")),
    )
    op.create_table(
        "access_visitors",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("building_id", sa.String(length=128), nullable=False),
        sa.Column("display_name", sa.String(length=200), nullable=False),
        sa.Column("company", sa.String(length=200), nullable=False),
        sa.Column("host", sa.String(length=512), nullable=False),
        sa.Column("expected_arrival_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "expected_departure_time",
            sa.DateTime(timezone=True),
            nullable=True,
        ),
        sa.Column(
            "invitation_expire_time",
            sa.DateTime(timezone=True),
            nullable=False,
        ),
        sa.Column("doors", sa.Text(), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("code_digest", sa.String(length=64), nullable=False),
        sa.Column("grant_id", sa.String(length=26), nullable=False),
        sa.Column("check_in_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("check_in_method", sa.Integer(), nullable=False),
        sa.Column("check_out_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("registered_by", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_access_visitors")),
        sa.UniqueConstraint(
            "building_id", "code_digest", name=op.f("uq_access_visitors_building_id_code_digest")
        ),
    )
    with op.batch_alter_table("access_visitors", schema=None) as batch_op:
        batch_op.create_index(
            "ix_access_visitors_building_id_expected_arrival_time_id",
            ["building_id", "expected_arrival_time", "id"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("access_visitors", schema=None) as batch_op:
        batch_op.drop_index("ix_access_visitors_building_id_expected_arrival_time_id")

    op.drop_table("access_visitors")
    op.drop_table("access_log_heads")
    with op.batch_alter_table("access_log_entries", schema=None) as batch_op:
        batch_op.drop_index("ix_access_log_entries_building_id_time")

    op.drop_table("access_log_entries")
    op.drop_table("access_keypads")
    with op.batch_alter_table("access_grants", schema=None) as batch_op:
        batch_op.drop_index("ix_access_grants_building_id_pin_digest")
        batch_op.drop_index("ix_access_grants_building_id_create_time_id")

    op.drop_table("access_grants")
    op.drop_table("access_emergencies")
    op.drop_table("access_door_schedules")
