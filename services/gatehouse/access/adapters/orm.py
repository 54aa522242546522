"""The access service's tables (its own MetaData; created by the `access` chain)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from sqlalchemy import (
    Boolean,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from gatehouse.runtime.db import UtcDateTime, new_registry

ACCESS_VERSIONS_DIR = Path(__file__).parent / "migrations" / "versions"
"""The access service's Alembic chain (branch label `access`)."""


class AccessBase(DeclarativeBase):
    registry = new_registry()


class GrantRow(AccessBase):
    __tablename__ = "access_grants"
    __table_args__ = (
        # A PIN is unique in its building among grants that have not ended: `open_digest`
        # holds the digest while the grant is open and is NULL once it ended (NULLs never
        # collide). Expiry is a matter of time, so IssuePin clears it for expired grants.
        UniqueConstraint("building_id", "open_digest"),
        # ValidatePin: every grant of the building with this PIN, ended ones included.
        Index("ix_access_grants_building_id_pin_digest", "building_id", "pin_digest"),
        Index("ix_access_grants_building_id_create_time_id", "building_id", "create_time", "id"),
    )

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    building_id: Mapped[str] = mapped_column(String(128))
    holder: Mapped[str] = mapped_column(String(512))
    display_name: Mapped[str] = mapped_column(String(200))
    # JSON array of door ids (quoted), so `LIKE '%"door"%'` finds a door exactly.
    doors: Mapped[str] = mapped_column(Text)
    pin_digest: Mapped[str] = mapped_column(String(64))
    open_digest: Mapped[str | None] = mapped_column(String(64))
    valid_from: Mapped[datetime] = mapped_column(UtcDateTime())
    valid_until: Mapped[datetime | None] = mapped_column(UtcDateTime())
    schedule: Mapped[str | None] = mapped_column(Text)
    max_uses: Mapped[int] = mapped_column(Integer)
    use_count: Mapped[int] = mapped_column(Integer)
    last_use_time: Mapped[datetime | None] = mapped_column(UtcDateTime())
    create_time: Mapped[datetime] = mapped_column(UtcDateTime())
    issued_by: Mapped[str] = mapped_column(Text)
    revoke_time: Mapped[datetime | None] = mapped_column(UtcDateTime())
    revoked_by: Mapped[str | None] = mapped_column(Text)
    revoke_reason: Mapped[str] = mapped_column(Text)
    visitor_id: Mapped[str] = mapped_column(String(26))


class VisitorRow(AccessBase):
    __tablename__ = "access_visitors"
    __table_args__ = (
        UniqueConstraint("building_id", "code_digest"),
        Index(
            "ix_access_visitors_building_id_expected_arrival_time_id",
            "building_id",
            "expected_arrival_time",
            "id",
        ),
    )

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    building_id: Mapped[str] = mapped_column(String(128))
    display_name: Mapped[str] = mapped_column(String(200))
    company: Mapped[str] = mapped_column(String(200))
    host: Mapped[str] = mapped_column(String(512))
    expected_arrival_time: Mapped[datetime] = mapped_column(UtcDateTime())
    expected_departure_time: Mapped[datetime | None] = mapped_column(UtcDateTime())
    invitation_expire_time: Mapped[datetime] = mapped_column(UtcDateTime())
    doors: Mapped[str] = mapped_column(Text)
    note: Mapped[str] = mapped_column(Text)
    code_digest: Mapped[str] = mapped_column(String(64))
    grant_id: Mapped[str] = mapped_column(String(26))
    check_in_time: Mapped[datetime | None] = mapped_column(UtcDateTime())
    check_in_method: Mapped[int] = mapped_column(Integer)
    check_out_time: Mapped[datetime | None] = mapped_column(UtcDateTime())
    create_time: Mapped[datetime] = mapped_column(UtcDateTime())
    registered_by: Mapped[str] = mapped_column(Text)


class DoorScheduleRow(AccessBase):
    __tablename__ = "access_door_schedules"

    building_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    door_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    mode: Mapped[int] = mapped_column(Integer)
    schedule: Mapped[str] = mapped_column(Text)
    etag: Mapped[str] = mapped_column(String(64))
    update_time: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_by: Mapped[str] = mapped_column(Text)
    # Whether the controller was last told to hold the door unlocked (door hours).
    held: Mapped[bool] = mapped_column(Boolean, server_default=false())


class EmergencyRow(AccessBase):
    __tablename__ = "access_emergencies"

    building_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    active: Mapped[bool] = mapped_column(Boolean)
    mode: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text)
    triggered_by: Mapped[str] = mapped_column(Text)
    trigger_time: Mapped[datetime] = mapped_column(UtcDateTime())
    source_alert: Mapped[str] = mapped_column(String(512))
    cleared_by: Mapped[str | None] = mapped_column(Text)
    clear_time: Mapped[datetime | None] = mapped_column(UtcDateTime())
    clear_reason: Mapped[str] = mapped_column(Text)


class KeypadRow(AccessBase):
    __tablename__ = "access_keypads"

    building_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    door_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    # JSON array of ISO times of recent unknown PINs.
    failures: Mapped[str] = mapped_column(Text)
    locked_until: Mapped[datetime | None] = mapped_column(UtcDateTime())


class ChainHeadRow(AccessBase):
    """The latest entry of a building's log. Every append locks this row first, which orders
    a building's decisions (use counts, keypad counts, the chain) one after the other."""

    __tablename__ = "access_log_heads"

    building_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    sequence: Mapped[int] = mapped_column(Integer)
    entry_hash: Mapped[bytes] = mapped_column(LargeBinary)


class LogEntryRow(AccessBase):
    __tablename__ = "access_log_entries"
    __table_args__ = (
        UniqueConstraint("building_id", "sequence"),
        UniqueConstraint("event_id"),
        Index("ix_access_log_entries_building_id_time", "building_id", "time"),
    )

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    building_id: Mapped[str] = mapped_column(String(128))
    sequence: Mapped[int] = mapped_column(Integer)
    kind: Mapped[int] = mapped_column(Integer)
    time: Mapped[datetime] = mapped_column(UtcDateTime())
    door_id: Mapped[str] = mapped_column(String(128))
    decision: Mapped[int] = mapped_column(Integer)
    deny_reason: Mapped[int] = mapped_column(Integer)
    grant_id: Mapped[str] = mapped_column(String(26))
    holder: Mapped[str] = mapped_column(String(512))
    actor: Mapped[str] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text)
    emergency_mode: Mapped[int] = mapped_column(Integer)
    event_id: Mapped[str] = mapped_column(String(26))
    previous_hash: Mapped[bytes] = mapped_column(LargeBinary)
    entry_hash: Mapped[bytes] = mapped_column(LargeBinary)
