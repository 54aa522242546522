"""The auth service's unit of work: its repositories, idempotency records and outbox on one
database transaction."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gatehouse.auth.adapters.repositories import (
    SqlAlchemyAccessTokenRepository,
    SqlAlchemyChallengeRepository,
    SqlAlchemyRecoveryCodeRepository,
    SqlAlchemyRefreshTokenRepository,
    SqlAlchemyResetTokenRepository,
    SqlAlchemyRoleRepository,
    SqlAlchemySecurityEventRepository,
    SqlAlchemySessionRepository,
    SqlAlchemySigningKeyRepository,
    SqlAlchemyUserRepository,
)
from gatehouse.runtime.db import _SQLITE_BEGIN_OPTION, Database
from gatehouse.runtime.idempotency import SqlAlchemyIdempotencyRepository
from gatehouse.runtime.outbox import OutboxUnitOfWork, RelayNotifier


class SqlAlchemyAuthUnitOfWork(OutboxUnitOfWork):
    """`AuthUnitOfWork` on the service database; `roles` also offers `replace` for the
    start-up sync of built-in roles."""

    users: SqlAlchemyUserRepository
    roles: SqlAlchemyRoleRepository
    sessions: SqlAlchemySessionRepository
    refresh_tokens: SqlAlchemyRefreshTokenRepository
    access_tokens: SqlAlchemyAccessTokenRepository
    challenges: SqlAlchemyChallengeRepository
    recovery_codes: SqlAlchemyRecoveryCodeRepository
    reset_tokens: SqlAlchemyResetTokenRepository
    security_events: SqlAlchemySecurityEventRepository
    signing_keys: SqlAlchemySigningKeyRepository
    idempotency: SqlAlchemyIdempotencyRepository

    def __init__(
        self,
        session_factory: async_sessionmaker[AsyncSession],
        *,
        relay: RelayNotifier | None = None,
        read_session_factory: async_sessionmaker[AsyncSession] | None = None,
    ) -> None:
        super().__init__(session_factory, relay=relay)
        self._read_session_factory = read_session_factory or session_factory

    def reader(self) -> SqlAlchemyAuthUnitOfWork:
        return SqlAlchemyAuthUnitOfWork(self._read_session_factory)

    def _create_repositories(self, session: AsyncSession) -> None:
        self.users = SqlAlchemyUserRepository(session)
        self.roles = SqlAlchemyRoleRepository(session)
        self.sessions = SqlAlchemySessionRepository(session)
        self.refresh_tokens = SqlAlchemyRefreshTokenRepository(session)
        self.access_tokens = SqlAlchemyAccessTokenRepository(session)
        self.challenges = SqlAlchemyChallengeRepository(session)
        self.recovery_codes = SqlAlchemyRecoveryCodeRepository(session)
        self.reset_tokens = SqlAlchemyResetTokenRepository(session)
        self.security_events = SqlAlchemySecurityEventRepository(session)
        self.signing_keys = SqlAlchemySigningKeyRepository(session)
        self.idempotency = SqlAlchemyIdempotencyRepository(session)


def read_sessions(database: Database) -> async_sessionmaker[AsyncSession]:
    """Sessions whose SQLite transactions begin DEFERRED (a read lock only): the runtime's
    default IMMEDIATE, right for read-then-write transactions, would make concurrent
    lookups queue for the write lock one by one. PostgreSQL ignores the option."""
    engine = database.engine.execution_options(**{_SQLITE_BEGIN_OPTION: "DEFERRED"})
    return async_sessionmaker(engine, expire_on_commit=False)
