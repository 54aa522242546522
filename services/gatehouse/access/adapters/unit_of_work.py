"""The access unit of work: repositories, idempotency records and outbox on one transaction."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gatehouse.access.adapters.repositories import (
    SqlAlchemyAccessLogRepository,
    SqlAlchemyDoorScheduleRepository,
    SqlAlchemyEmergencyRepository,
    SqlAlchemyGrantRepository,
    SqlAlchemyKeypadRepository,
    SqlAlchemyVisitorRepository,
)
from gatehouse.access.handlers.ports import (
    AccessLogRepository,
    DoorScheduleRepository,
    EmergencyRepository,
    GrantRepository,
    KeypadRepository,
    VisitorRepository,
)
from gatehouse.runtime.idempotency import IdempotencyRepository, SqlAlchemyIdempotencyRepository
from gatehouse.runtime.outbox import OutboxUnitOfWork, RelayNotifier


class SqlAlchemyAccessUnitOfWork(OutboxUnitOfWork):
    """Implements `AccessUnitOfWork`; one per concurrent task (enter it again afterwards)."""

    grants: GrantRepository
    visitors: VisitorRepository
    schedules: DoorScheduleRepository
    emergencies: EmergencyRepository
    keypads: KeypadRepository
    log: AccessLogRepository
    idempotency: IdempotencyRepository

    def __init__(
        self,
        session_factory: async_sessionmaker[AsyncSession],
        *,
        relay: RelayNotifier | None = None,
        spawn: Callable[[Coroutine[Any, Any, None]], None] | None = None,
    ) -> None:
        super().__init__(session_factory, relay=relay)
        self._spawn = spawn
        self._after_commit: list[Callable[[], Coroutine[Any, Any, None]]] = []

    def after_commit(self, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run `work` in the background once this transaction committed (never if it did not):
        e.g. commanding doors after an emergency is on record."""
        self._after_commit.append(work)

    async def commit(self) -> None:
        pending, self._after_commit = self._after_commit, []
        await super().commit()
        if self._spawn is not None:
            for work in pending:
                self._spawn(work())

    async def rollback(self) -> None:
        self._after_commit = []
        await super().rollback()

    def _create_repositories(self, session: AsyncSession) -> None:
        self._after_commit = []
        self.grants = SqlAlchemyGrantRepository(session)
        self.visitors = SqlAlchemyVisitorRepository(session)
        self.schedules = SqlAlchemyDoorScheduleRepository(session)
        self.emergencies = SqlAlchemyEmergencyRepository(session)
        self.keypads = SqlAlchemyKeypadRepository(session)
        self.log = SqlAlchemyAccessLogRepository(session)
        self.idempotency = SqlAlchemyIdempotencyRepository(session)
