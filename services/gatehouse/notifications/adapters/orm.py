"""The notifications tables (Alembic chain `notifications`, `migrations/versions/notifications_*`).

Retention (`handlers.retention`) deletes finished notifications with their change log and
dead letters, and old rate-limit windows.

A notification is a row of query columns (what listings, the worker and the rate limit
filter on) plus its JSON document (`adapters.codec`, attempts included). The deliverable
copy, which may hold secrets (a password-reset link), lives in its own column and is
erased when the notification is final.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from sqlalchemy import Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from gatehouse.runtime.db import new_registry

NOTIFICATIONS_VERSIONS_DIR = Path(__file__).parent / "migrations" / "versions"

ID = 26
NAME = 255
KEY = 64  # sha256 hex
STATUS = 24


class NotificationsBase(DeclarativeBase):
    registry = new_registry()


class NotificationRow(NotificationsBase):
    __tablename__ = "notifications_notifications"
    __table_args__ = (
        # Listings: keyset on (create_time, id), scoped by recipient user or sender.
        Index("ix_notifications_notifications_create_time_id", "create_time", "id"),
        Index("ix_notifications_notifications_user_create_time", "user", "create_time", "id"),
        Index(
            "ix_notifications_notifications_sender_create_time",
            "sender_user",
            "create_time",
            "id",
        ),
        # The worker: what is due, by status and time.
        Index("ix_notifications_notifications_status_due", "status", "next_attempt_time"),
        # The backlog of held messages per recipient address.
        Index("ix_notifications_notifications_address_status", "address_hash", "status"),
        Index("ix_notifications_notifications_batch_id", "batch_id"),
        # The retention sweep: finished notifications by last change (notifications_0002).
        Index("ix_notifications_notifications_status_update_time", "status", "update_time"),
    )

    id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    status: Mapped[str] = mapped_column(String(STATUS))
    hold_reason: Mapped[str] = mapped_column(String(STATUS))
    channel: Mapped[str] = mapped_column(String(STATUS))
    category: Mapped[str] = mapped_column(String(STATUS))
    priority: Mapped[int] = mapped_column(Integer)
    user: Mapped[str] = mapped_column(String(NAME))
    role: Mapped[str] = mapped_column(String(NAME))
    address_hash: Mapped[str] = mapped_column(String(KEY))
    sender_user: Mapped[str] = mapped_column(String(NAME))
    batch_id: Mapped[str] = mapped_column(String(ID))
    related_resource: Mapped[str] = mapped_column(String(512))
    create_time: Mapped[datetime]
    update_time: Mapped[datetime]
    next_attempt_time: Mapped[datetime | None]
    lease_owner: Mapped[str] = mapped_column(String(KEY))
    lease_until: Mapped[datetime | None]
    version: Mapped[int] = mapped_column(Integer)
    document: Mapped[str] = mapped_column(Text)
    delivery: Mapped[str] = mapped_column(Text)


class ChangeRow(NotificationsBase):
    """What WatchDeliveries replays: each status change with the notification as of then."""

    __tablename__ = "notifications_changes"
    __table_args__ = (UniqueConstraint("notification_id", "sequence"),)

    id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    notification_id: Mapped[str] = mapped_column(String(ID))
    sequence: Mapped[int] = mapped_column(Integer)
    previous_status: Mapped[str | None] = mapped_column(String(STATUS))
    status: Mapped[str] = mapped_column(String(STATUS))
    channel: Mapped[str] = mapped_column(String(STATUS))
    recipient_user: Mapped[str] = mapped_column(String(NAME))
    sender_user: Mapped[str] = mapped_column(String(NAME))
    time: Mapped[datetime] = mapped_column(index=True)
    document: Mapped[str] = mapped_column(Text)


class TemplateRow(NotificationsBase):
    __tablename__ = "notifications_templates"

    template_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    channel: Mapped[str] = mapped_column(String(STATUS))
    create_time: Mapped[datetime]
    document: Mapped[str] = mapped_column(Text)


class PreferenceRow(NotificationsBase):
    __tablename__ = "notifications_preferences"

    user: Mapped[str] = mapped_column(String(NAME), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    document: Mapped[str] = mapped_column(Text)


class RateLimitRow(NotificationsBase):
    __tablename__ = "notifications_rate_limits"

    key: Mapped[str] = mapped_column(String(KEY), primary_key=True)
    window_start: Mapped[datetime]
    used: Mapped[int] = mapped_column(Integer)


class DeadLetterRow(NotificationsBase):
    """Notifications whose retries ran out, for an operator to inspect and resend."""

    __tablename__ = "notifications_dead_letters"

    notification_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    dead_time: Mapped[datetime] = mapped_column(index=True)
    failure_code: Mapped[str] = mapped_column(String(64))
    document: Mapped[str] = mapped_column(Text)
