"""The monitoring unit of work: repositories, idempotency records and outbox on one
database transaction."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from gatehouse.monitoring.adapters.repositories import (
    SqlAlchemyAlertRepository,
    SqlAlchemyBuildingRepository,
    SqlAlchemyCommandRepository,
    SqlAlchemyDeviceMessageRepository,
    SqlAlchemyDeviceRepository,
    SqlAlchemyReadingRepository,
)
from gatehouse.runtime.idempotency import SqlAlchemyIdempotencyRepository
from gatehouse.runtime.outbox import OutboxUnitOfWork


class SqlAlchemyMonitoringUnitOfWork(OutboxUnitOfWork):
    buildings: SqlAlchemyBuildingRepository
    devices: SqlAlchemyDeviceRepository
    alerts: SqlAlchemyAlertRepository
    commands: SqlAlchemyCommandRepository
    readings: SqlAlchemyReadingRepository
    device_messages: SqlAlchemyDeviceMessageRepository
    idempotency: SqlAlchemyIdempotencyRepository

    def _create_repositories(self, session: AsyncSession) -> None:
        self.buildings = SqlAlchemyBuildingRepository(session)
        self.devices = SqlAlchemyDeviceRepository(session)
        self.alerts = SqlAlchemyAlertRepository(session)
        self.commands = SqlAlchemyCommandRepository(session)
        self.readings = SqlAlchemyReadingRepository(session)
        self.device_messages = SqlAlchemyDeviceMessageRepository(session)
        self.idempotency = SqlAlchemyIdempotencyRepository(session)
