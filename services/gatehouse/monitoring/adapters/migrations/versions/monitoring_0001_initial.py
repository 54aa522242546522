"""Monitoring tables: buildings, devices (with their hashed tokens and session state), alerts,
device commands, readings, and the ids that make batch uploads and device messages
idempotent. First revision of the `monitoring` chain.

Revision ID: monitoring_0001
Revises:
Create Date: 2026-11-29 20:37:31
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "monitoring_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("monitoring",)
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "monitoring_buildings",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("display_name", sa.String(length=200), nullable=False),
        sa.Column("time_zone", sa.String(length=64), nullable=False),
        sa.Column("address", sa.Text(), nullable=False),
        sa.Column("lockdown_policy", sa.Text(), nullable=False),
        sa.Column("alert_rule_settings", sa.Text(), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("emergency_active", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("emergency_kind", sa.String(length=64), server_default="", nullable=False),
        sa.Column("emergency_start_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "emergency_trigger_event_id", sa.String(length=128), server_default="", nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_monitoring_buildings")),
    )
    with op.batch_alter_table("monitoring_buildings", schema=None) as batch_op:
        batch_op.create_index(
            "ix_monitoring_buildings_display_name_id", ["display_name", "id"], unique=False
        )

    op.create_table(
        "monitoring_commands",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("building_id", sa.String(length=26), nullable=False),
        sa.Column("device_id", sa.String(length=26), nullable=False),
        sa.Column("kind", sa.Integer(), nullable=False),
        sa.Column("deadline", sa.DateTime(timezone=True), nullable=False),
        sa.Column("requested_by", sa.Text(), nullable=False),
        sa.Column("correlation_id", sa.String(length=128), nullable=False),
        sa.Column("door", sa.String(length=512), nullable=False),
        sa.Column("unlock_ms", sa.Integer(), nullable=True),
        sa.Column("state", sa.Integer(), nullable=False),
        sa.Column("result", sa.Integer(), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_monitoring_commands")),
    )
    with op.batch_alter_table("monitoring_commands", schema=None) as batch_op:
        batch_op.create_index(
            "ix_monitoring_commands_state_deadline", ["state", "deadline"], unique=False
        )

    op.create_table(
        "monitoring_device_messages",
        sa.Column("device_id", sa.String(length=26), nullable=False),
        sa.Column("message_id", sa.String(length=128), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(
            "device_id", "message_id", name=op.f("pk_monitoring_device_messages")
        ),
    )
    with op.batch_alter_table("monitoring_device_messages", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_monitoring_device_messages_received_at"), ["received_at"], unique=False
        )

    op.create_table(
        "monitoring_reading_batches",
        sa.Column("device_id", sa.String(length=26), nullable=False),
        sa.Column("batch_id", sa.String(length=128), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(
            "device_id", "batch_id", name=op.f("pk_monitoring_reading_batches")
        ),
    )
    with op.batch_alter_table("monitoring_reading_batches", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_monitoring_reading_batches_received_at"), ["received_at"], unique=False
        )

    op.create_table(
        "monitoring_readings",
        sa.Column("device_id", sa.String(length=26), nullable=False),
        sa.Column("metric", sa.String(length=63), nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("device_id", "metric", "time", name=op.f("pk_monitoring_readings")),
    )
    op.create_table(
        "monitoring_alerts",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("building_id", sa.String(length=26), nullable=False),
        sa.Column("rule", sa.Integer(), nullable=False),
        sa.Column("severity", sa.Integer(), nullable=False),
        sa.Column("state", sa.Integer(), nullable=False),
        sa.Column("device", sa.String(length=512), nullable=False),
        sa.Column("door", sa.String(length=512), nullable=False),
        sa.Column("summary", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("dedup_key", sa.String(length=700), nullable=False),
        sa.Column("open_dedup_key", sa.String(length=700), nullable=True),
        sa.Column("occurrence_count", sa.Integer(), nullable=False),
        sa.Column("last_occurrence_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("trigger_event_id", sa.String(length=128), nullable=False),
        sa.Column("raised_by", sa.Text(), nullable=False),
        sa.Column("raise_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("acknowledged_by", sa.Text(), nullable=True),
        sa.Column("acknowledge_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("acknowledge_note", sa.Text(), nullable=False),
        sa.Column("resolved_by", sa.Text(), nullable=True),
        sa.Column("resolve_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolve_note", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["building_id"],
            ["monitoring_buildings.id"],
            name=op.f("fk_monitoring_alerts_building_id_monitoring_buildings"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_monitoring_alerts")),
        sa.UniqueConstraint(
            "building_id",
            "open_dedup_key",
            name=op.f("uq_monitoring_alerts_building_id_open_dedup_key"),
        ),
    )
    with op.batch_alter_table("monitoring_alerts", schema=None) as batch_op:
        batch_op.create_index(
            "ix_monitoring_alerts_building_id_raise_time_id",
            ["building_id", "raise_time", "id"],
            unique=False,
        )
        batch_op.create_index(
            "ix_monitoring_alerts_building_id_state", ["building_id", "state"], unique=False
        )
        batch_op.create_index(
            "ix_monitoring_alerts_raise_time_id", ["raise_time", "id"], unique=False
        )

    op.create_table(
        "monitoring_devices",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("building_id", sa.String(length=26), nullable=False),
        sa.Column("display_name", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.Integer(), nullable=False),
        sa.Column("labels", sa.Text(), nullable=False),
        sa.Column("firmware_version", sa.String(length=64), nullable=False),
        sa.Column("door", sa.String(length=512), nullable=True),
        sa.Column("credential_type", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=True),
        sa.Column("state", sa.Integer(), nullable=False),
        sa.Column("state_change_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_heartbeat_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("session_id", sa.String(length=26), nullable=True),
        sa.Column("supported_commands", sa.Text(), nullable=True),
        sa.Column("offline_alerted", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("state_event_id", sa.String(length=26), nullable=True),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["building_id"],
            ["monitoring_buildings.id"],
            name=op.f("fk_monitoring_devices_building_id_monitoring_buildings"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_monitoring_devices")),
        sa.UniqueConstraint("door", name=op.f("uq_monitoring_devices_door")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_monitoring_devices_token_hash")),
    )
    with op.batch_alter_table("monitoring_devices", schema=None) as batch_op:
        batch_op.create_index(
            "ix_monitoring_devices_building_id_display_name_id",
            ["building_id", "display_name", "id"],
            unique=False,
        )
        batch_op.create_index(
            "ix_monitoring_devices_display_name_id", ["display_name", "id"], unique=False
        )
        batch_op.create_index(
            "ix_monitoring_devices_state_last_heartbeat_time",
            ["state", "last_heartbeat_time"],
            unique=False,
        )
        batch_op.create_index(
            "ix_monitoring_devices_state_state_change_time",
            ["state", "state_change_time"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("monitoring_devices", schema=None) as batch_op:
        batch_op.drop_index("ix_monitoring_devices_state_state_change_time")
        batch_op.drop_index("ix_monitoring_devices_state_last_heartbeat_time")
        batch_op.drop_index("ix_monitoring_devices_display_name_id")
        batch_op.drop_index("ix_monitoring_devices_building_id_display_name_id")

    op.drop_table("monitoring_devices")
    with op.batch_alter_table("monitoring_alerts", schema=None) as batch_op:
        batch_op.drop_index("ix_monitoring_alerts_raise_time_id")
        batch_op.drop_index("ix_monitoring_alerts_building_id_state")
        batch_op.drop_index("ix_monitoring_alerts_building_id_raise_time_id")

    op.drop_table("monitoring_alerts")
    op.drop_table("monitoring_readings")
    with op.batch_alter_table("monitoring_reading_batches", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_monitoring_reading_batches_received_at"))

    op.drop_table("monitoring_reading_batches")
    with op.batch_alter_table("monitoring_device_messages", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_monitoring_device_messages_received_at"))

    op.drop_table("monitoring_device_messages")
    with op.batch_alter_table("monitoring_commands", schema=None) as batch_op:
        batch_op.drop_index("ix_monitoring_commands_state_deadline")

    op.drop_table("monitoring_commands")
    with op.batch_alter_table("monitoring_buildings", schema=None) as batch_op:
        batch_op.drop_index("ix_monitoring_buildings_display_name_id")

    op.drop_table("monitoring_buildings")
