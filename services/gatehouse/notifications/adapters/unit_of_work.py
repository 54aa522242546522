"""The notifications unit of work: its repositories on one session, events in the same commit."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from gatehouse.notifications.adapters.repositories import (
    SqlAlchemyChangeRepository,
    SqlAlchemyDeadLetterRepository,
    SqlAlchemyNotificationRepository,
    SqlAlchemyPreferenceRepository,
    SqlAlchemyRateLimitRepository,
    SqlAlchemyReplyStore,
    SqlAlchemyRetentionStore,
    SqlAlchemyTemplateRepository,
)
from gatehouse.notifications.handlers.ports import (
    ChangeRepository,
    DeadLetterRepository,
    NotificationRepository,
    PreferenceRepository,
    RateLimitRepository,
    ReplyStore,
    RetentionStore,
    TemplateRepository,
)
from gatehouse.runtime.outbox import OutboxUnitOfWork


class SqlAlchemyNotificationsUnitOfWork(OutboxUnitOfWork):
    """Implements `NotificationsUnitOfWork`; one per concurrent task."""

    notifications: NotificationRepository
    changes: ChangeRepository
    templates: TemplateRepository
    preferences: PreferenceRepository
    rate_limits: RateLimitRepository
    replies: ReplyStore
    dead_letters: DeadLetterRepository
    retention: RetentionStore

    def _create_repositories(self, session: AsyncSession) -> None:
        self.notifications = SqlAlchemyNotificationRepository(session)
        self.changes = SqlAlchemyChangeRepository(session)
        self.templates = SqlAlchemyTemplateRepository(session)
        self.preferences = SqlAlchemyPreferenceRepository(session)
        self.rate_limits = SqlAlchemyRateLimitRepository(session)
        self.replies = SqlAlchemyReplyStore(session)
        self.dead_letters = SqlAlchemyDeadLetterRepository(session)
        self.retention = SqlAlchemyRetentionStore(session)
