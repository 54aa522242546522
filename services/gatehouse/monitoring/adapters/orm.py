"""The monitoring service's tables (its own MetaData; created by the `monitoring` chain)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from sqlalchemy import (
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from gatehouse.runtime.db import UtcDateTime, new_registry

MONITORING_VERSIONS_DIR = Path(__file__).parent / "migrations" / "versions"
"""The monitoring service's Alembic chain (branch label `monitoring`)."""


class MonitoringBase(DeclarativeBase):
    registry = new_registry()


class BuildingRow(MonitoringBase):
    __tablename__ = "monitoring_buildings"
    __table_args__ = (Index("ix_monitoring_buildings_display_name_id", "display_name", "id"),)

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(200))
    time_zone: Mapped[str] = mapped_column(String(64))
    # JSON documents, read and written whole: nothing queries inside them.
    address: Mapped[str] = mapped_column(Text)
    lockdown_policy: Mapped[str] = mapped_column(Text)
    alert_rule_settings: Mapped[str] = mapped_column(Text)
    create_time: Mapped[datetime] = mapped_column(UtcDateTime())
    emergency_active: Mapped[bool] = mapped_column(Boolean, server_default=false())
    emergency_kind: Mapped[str] = mapped_column(String(64), server_default="")
    emergency_start_time: Mapped[datetime | None] = mapped_column(UtcDateTime())
    emergency_trigger_event_id: Mapped[str] = mapped_column(String(128), server_default="")


class DeviceRow(MonitoringBase):
    __tablename__ = "monitoring_devices"
    __table_args__ = (
        Index(
            "ix_monitoring_devices_building_id_display_name_id", "building_id", "display_name", "id"
        ),
        Index("ix_monitoring_devices_display_name_id", "display_name", "id"),
        # The offline sweeps: ONLINE devices by last heartbeat, OFFLINE ones by change time.
        Index("ix_monitoring_devices_state_last_heartbeat_time", "state", "last_heartbeat_time"),
        Index("ix_monitoring_devices_state_state_change_time", "state", "state_change_time"),
    )

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    building_id: Mapped[str] = mapped_column(ForeignKey("monitoring_buildings.id"))
    display_name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[int] = mapped_column(Integer)
    labels: Mapped[str] = mapped_column(Text)
    firmware_version: Mapped[str] = mapped_column(String(64))
    # A door has at most one controller: unique where set (NULLs never collide).
    door: Mapped[str | None] = mapped_column(String(512), unique=True)
    credential_type: Mapped[int] = mapped_column(Integer)
    # sha256 of the device token; only token devices have one.
    token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    state: Mapped[int] = mapped_column(Integer)
    state_change_time: Mapped[datetime | None] = mapped_column(UtcDateTime())
    last_heartbeat_time: Mapped[datetime | None] = mapped_column(UtcDateTime())
    session_id: Mapped[str | None] = mapped_column(String(26))
    # JSON array of DeviceCommandKind numbers from the latest hello; NULL: the kind's set.
    supported_commands: Mapped[str | None] = mapped_column(Text)
    offline_alerted: Mapped[bool] = mapped_column(Boolean, server_default=false())
    # The `device.status_changed` event that began the current state (an offline alert's
    # trigger).
    state_event_id: Mapped[str | None] = mapped_column(String(26))
    create_time: Mapped[datetime] = mapped_column(UtcDateTime())


class AlertRow(MonitoringBase):
    __tablename__ = "monitoring_alerts"
    __table_args__ = (
        # One unresolved alert per building and dedup key: `open_dedup_key` holds the key
        # while the alert is unresolved and is NULL otherwise (NULLs never collide).
        UniqueConstraint("building_id", "open_dedup_key"),
        Index("ix_monitoring_alerts_building_id_raise_time_id", "building_id", "raise_time", "id"),
        Index("ix_monitoring_alerts_raise_time_id", "raise_time", "id"),
        Index("ix_monitoring_alerts_building_id_state", "building_id", "state"),
    )

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    building_id: Mapped[str] = mapped_column(ForeignKey("monitoring_buildings.id"))
    rule: Mapped[int] = mapped_column(Integer)
    severity: Mapped[int] = mapped_column(Integer)
    state: Mapped[int] = mapped_column(Integer)
    device: Mapped[str] = mapped_column(String(512))
    door: Mapped[str] = mapped_column(String(512))
    summary: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text)
    dedup_key: Mapped[str] = mapped_column(String(700))
    open_dedup_key: Mapped[str | None] = mapped_column(String(700))
    occurrence_count: Mapped[int] = mapped_column(Integer)
    last_occurrence_time: Mapped[datetime | None] = mapped_column(UtcDateTime())
    trigger_event_id: Mapped[str] = mapped_column(String(128))
    raised_by: Mapped[str] = mapped_column(Text)
    raise_time: Mapped[datetime] = mapped_column(UtcDateTime())
    acknowledged_by: Mapped[str | None] = mapped_column(Text)
    acknowledge_time: Mapped[datetime | None] = mapped_column(UtcDateTime())
    acknowledge_note: Mapped[str] = mapped_column(Text)
    resolved_by: Mapped[str | None] = mapped_column(Text)
    resolve_time: Mapped[datetime | None] = mapped_column(UtcDateTime())
    resolve_note: Mapped[str] = mapped_column(Text)


class CommandRow(MonitoringBase):
    __tablename__ = "monitoring_commands"
    # The expiry sweep: pending commands by deadline.
    __table_args__ = (Index("ix_monitoring_commands_state_deadline", "state", "deadline"),)

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    building_id: Mapped[str] = mapped_column(String(26))
    device_id: Mapped[str] = mapped_column(String(26))
    kind: Mapped[int] = mapped_column(Integer)
    deadline: Mapped[datetime] = mapped_column(UtcDateTime())
    requested_by: Mapped[str] = mapped_column(Text)
    correlation_id: Mapped[str] = mapped_column(String(128))
    door: Mapped[str] = mapped_column(String(512))
    unlock_ms: Mapped[int | None] = mapped_column(Integer)
    state: Mapped[int] = mapped_column(Integer)
    result: Mapped[int] = mapped_column(Integer)
    create_time: Mapped[datetime] = mapped_column(UtcDateTime())


class ReadingRow(MonitoringBase):
    __tablename__ = "monitoring_readings"

    device_id: Mapped[str] = mapped_column(String(26), primary_key=True)
    metric: Mapped[str] = mapped_column(String(63), primary_key=True)
    time: Mapped[datetime] = mapped_column(UtcDateTime(), primary_key=True)
    value: Mapped[float] = mapped_column(Float)


class ReadingBatchRow(MonitoringBase):
    """Batch ids already stored, for 24 hours: a retried upload is skipped, not doubled."""

    __tablename__ = "monitoring_reading_batches"

    device_id: Mapped[str] = mapped_column(String(26), primary_key=True)
    batch_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)


class DeviceMessageRow(MonitoringBase):
    """Ids of ConnectDevice messages already processed, for 24 hours (the contract's dedup)."""

    __tablename__ = "monitoring_device_messages"

    device_id: Mapped[str] = mapped_column(String(26), primary_key=True)
    message_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
