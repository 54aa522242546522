"""SQLAlchemy repositories of the auth service: rows in, domain objects out.

Each works on the unit of work's session and never commits. Writes that must be atomic
against concurrent requests (spending a refresh token, a recovery code, a reset token) are
single conditional UPDATEs whose row count says who won, on PostgreSQL and SQLite alike.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    CursorResult,
    and_,
    delete,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from gatehouse.auth.adapters.orm import (
    AccessTokenRow,
    LoginChallengeRow,
    PasswordResetRow,
    RecoveryCodeRow,
    RefreshTokenRow,
    RoleRow,
    SecurityEventRow,
    SessionRow,
    SigningKeyRow,
    UserRoleRow,
    UserRow,
)
from gatehouse.auth.domain.roles import Role
from gatehouse.auth.domain.security_events import (
    Actor,
    Outcome,
    SecurityEvent,
    SecurityEventFilter,
    SecurityEventType,
    Severity,
)
from gatehouse.auth.domain.sessions import (
    LoginChallenge,
    PasswordResetToken,
    RefreshToken,
    RevokeReason,
    SecondFactor,
    Session,
)
from gatehouse.auth.domain.users import TotpSettings, User, UserState, UserStatus
from gatehouse.auth.handlers.ports import StoredSigningKey, UserQuery
from gatehouse.runtime.db import UtcDateTime, translate_integrity_errors

# Sort keys ListUsers offers; NULL last-login times sort as the epoch so keyset comparisons
# stay total.
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _rowcount(result: Any) -> int:
    return cast("CursorResult[Any]", result).rowcount


# --- users ---------------------------------------------------------------------------------


def _user_from_row(row: UserRow, roles: Sequence[str]) -> User:
    return User(
        id=row.id,
        email=row.email,
        display_name=row.display_name,
        password_hash=row.password_hash,
        status=UserStatus(row.status),
        created_at=row.created_at,
        updated_at=row.updated_at,
        password_updated_at=row.password_updated_at,
        last_login_at=row.last_login_at,
        deleted_at=row.deleted_at,
        locked_until=row.locked_until,
        totp=TotpSettings(
            enabled=row.totp_enabled,
            sealed_secret=row.totp_secret,
            last_used_step=row.totp_last_step,
            pending_sealed_secret=row.totp_pending_secret,
            pending_expires_at=row.totp_pending_expires_at,
        ),
        roles=tuple(sorted(roles)),
    )


def _copy_to_row(user: User, row: UserRow) -> None:
    row.email = user.email
    row.display_name = user.display_name
    row.password_hash = user.password_hash
    row.status = user.status.value
    row.totp_enabled = user.totp.enabled
    row.totp_secret = user.totp.sealed_secret
    row.totp_last_step = user.totp.last_used_step
    row.totp_pending_secret = user.totp.pending_sealed_secret
    row.totp_pending_expires_at = user.totp.pending_expires_at
    row.created_at = user.created_at
    row.updated_at = user.updated_at
    row.password_updated_at = user.password_updated_at
    row.last_login_at = user.last_login_at
    row.deleted_at = user.deleted_at
    row.locked_until = user.locked_until


class SqlAlchemyUserRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def get(self, user_id: str, *, for_update: bool = False) -> User | None:
        return await self._one(UserRow.id == user_id, for_update=for_update)

    async def get_by_email(self, email: str) -> User | None:
        return await self._one(UserRow.email == email)

    async def _one(self, where: ColumnElement[bool], *, for_update: bool = False) -> User | None:
        # The user and its role ids in one round trip: every sign-in and introspection
        # reads a user, and each statement costs a thread hop on aiosqlite.
        statement = (
            select(UserRow, UserRoleRow.role_id)
            .outerjoin(UserRoleRow, UserRoleRow.user_id == UserRow.id)
            .where(where)
        )
        if for_update:
            statement = statement.with_for_update(of=UserRow)
        rows = (await self._session.execute(statement)).all()
        if not rows:
            return None
        return _user_from_row(rows[0][0], [role_id for _, role_id in rows if role_id is not None])

    async def add(self, user: User) -> None:
        row = UserRow(id=user.id)
        _copy_to_row(user, row)
        with translate_integrity_errors():
            # A savepoint keeps the transaction usable after a duplicate email on PostgreSQL.
            async with self._session.begin_nested():
                self._session.add(row)
                await self._session.flush()
                for role_id in user.roles:
                    self._session.add(
                        UserRoleRow(user_id=user.id, role_id=role_id, created_at=user.created_at)
                    )
                await self._session.flush()

    async def update(self, user: User) -> None:
        row = await self._session.get(UserRow, user.id)
        if row is None:
            raise LookupError(f"user {user.id} vanished during the transaction")
        _copy_to_row(user, row)
        held = set(await self._roles_of(user.id))
        wanted = set(user.roles)
        if held - wanted:
            await self._session.execute(
                delete(UserRoleRow).where(
                    UserRoleRow.user_id == user.id, UserRoleRow.role_id.in_(held - wanted)
                )
            )
        for role_id in sorted(wanted - held):
            self._session.add(
                UserRoleRow(user_id=user.id, role_id=role_id, created_at=user.updated_at)
            )
        with translate_integrity_errors():
            await self._session.flush()

    async def advance_totp_step(self, user_id: str, step: int) -> bool:
        result = await self._session.execute(
            update(UserRow)
            .where(UserRow.id == user_id, UserRow.totp_last_step < step)
            .values(totp_last_step=step)
            .execution_options(synchronize_session=False)
        )
        return _rowcount(result) == 1

    async def search(self, query: UserQuery, now: datetime) -> list[User]:
        sort_column: Any = {
            "create_time": UserRow.created_at,
            "email": func.coalesce(UserRow.email, ""),
            "display_name": UserRow.display_name,
            "last_login_time": func.coalesce(UserRow.last_login_at, literal(_EPOCH, UtcDateTime())),
        }[query.order_by]
        statement = select(UserRow)
        if query.role is not None:
            statement = statement.where(
                UserRow.id.in_(select(UserRoleRow.user_id).where(UserRoleRow.role_id == query.role))
            )
        statement = statement.where(*self._state_filter(query, now))
        if query.query:
            pattern = f"%{_escape_like(query.query.lower())}%"
            statement = statement.where(
                or_(
                    func.lower(func.coalesce(UserRow.email, "")).like(pattern, escape="\\"),
                    func.lower(UserRow.display_name).like(pattern, escape="\\"),
                )
            )
        if query.after is not None:
            value, last_id = query.after
            bound = _sort_value(query.order_by, value)
            if query.descending:
                statement = statement.where(
                    or_(sort_column < bound, and_(sort_column == bound, UserRow.id < last_id))
                )
            else:
                statement = statement.where(
                    or_(sort_column > bound, and_(sort_column == bound, UserRow.id > last_id))
                )
        if query.descending:
            statement = statement.order_by(sort_column.desc(), UserRow.id.desc())
        else:
            statement = statement.order_by(sort_column.asc(), UserRow.id.asc())
        rows = list((await self._session.execute(statement.limit(query.limit))).scalars())
        roles = await self._roles_of_many([row.id for row in rows])
        return [_user_from_row(row, roles.get(row.id, ())) for row in rows]

    @staticmethod
    def _state_filter(query: UserQuery, now: datetime) -> list[ColumnElement[bool]]:
        not_deleted = UserRow.status != UserStatus.DELETED.value
        locked = and_(UserRow.locked_until.is_not(None), UserRow.locked_until > now)
        if query.state is UserState.DELETED:
            return [UserRow.status == UserStatus.DELETED.value]
        if query.state is UserState.LOCKED:
            return [not_deleted, locked]
        if query.state is UserState.ACTIVE:
            return [
                not_deleted,
                or_(UserRow.locked_until.is_(None), UserRow.locked_until <= now),
            ]
        return [] if query.include_deleted else [not_deleted]

    async def active_holders(self, role_id: str) -> list[str]:
        result = await self._session.execute(
            select(UserRow.id)
            .join(UserRoleRow, UserRoleRow.user_id == UserRow.id)
            .where(UserRoleRow.role_id == role_id, UserRow.status != UserStatus.DELETED.value)
            .order_by(UserRow.id)
        )
        return list(result.scalars())

    async def _roles_of(self, user_id: str) -> list[str]:
        return (await self._roles_of_many([user_id])).get(user_id, [])

    async def _roles_of_many(self, user_ids: Sequence[str]) -> dict[str, list[str]]:
        if not user_ids:
            return {}
        result = await self._session.execute(
            select(UserRoleRow.user_id, UserRoleRow.role_id).where(
                UserRoleRow.user_id.in_(user_ids)
            )
        )
        found: dict[str, list[str]] = {}
        for user_id, role_id in result.all():
            found.setdefault(user_id, []).append(role_id)
        return found


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _sort_value(order_by: str, value: str) -> Any:
    if order_by in ("create_time", "last_login_time"):
        return datetime.fromisoformat(value)
    return value


# --- roles ---------------------------------------------------------------------------------


def _role_from_row(row: RoleRow) -> Role:
    return Role(
        id=row.id,
        display_name=row.display_name,
        description=row.description,
        permissions=tuple(json.loads(row.permissions)),
        built_in=row.built_in,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


class SqlAlchemyRoleRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def get(self, role_id: str, *, for_update: bool = False) -> Role | None:
        statement = select(RoleRow).where(RoleRow.id == role_id)
        if for_update:
            # Serialises changes that depend on who holds the role (the last-admin rule).
            statement = statement.with_for_update()
        row = (await self._session.execute(statement)).scalar_one_or_none()
        return None if row is None else _role_from_row(row)

    async def get_many(self, role_ids: Sequence[str]) -> list[Role]:
        if not role_ids:
            return []
        rows = await self._session.execute(
            select(RoleRow).where(RoleRow.id.in_(role_ids)).order_by(RoleRow.id)
        )
        return [_role_from_row(row) for row in rows.scalars()]

    async def add(self, role: Role) -> None:
        with translate_integrity_errors():
            async with self._session.begin_nested():
                self._session.add(
                    RoleRow(
                        id=role.id,
                        display_name=role.display_name,
                        description=role.description,
                        permissions=json.dumps(list(role.permissions)),
                        built_in=role.built_in,
                        created_at=role.created_at,
                        updated_at=role.updated_at,
                    )
                )

    async def replace(self, role: Role) -> None:
        """Overwrite a role's definition (built-in roles whose shipped definition changed)."""
        await self._session.execute(
            update(RoleRow)
            .where(RoleRow.id == role.id)
            .values(
                display_name=role.display_name,
                description=role.description,
                permissions=json.dumps(list(role.permissions)),
                built_in=role.built_in,
                updated_at=role.updated_at,
            )
        )

    async def page(self, after: str | None, limit: int) -> list[Role]:
        statement = select(RoleRow).order_by(RoleRow.id).limit(limit)
        if after is not None:
            statement = statement.where(RoleRow.id > after)
        return [_role_from_row(row) for row in (await self._session.execute(statement)).scalars()]


# --- sessions and tokens ---------------------------------------------------------------------


def _session_from_row(row: SessionRow) -> Session:
    return Session(
        id=row.id,
        user_id=row.user_id,
        created_at=row.created_at,
        expires_at=row.expires_at,
        client_address=row.client_address,
        user_agent=row.user_agent,
        second_factor=SecondFactor(row.second_factor),
        revoked_at=row.revoked_at,
        revoke_reason=RevokeReason(row.revoke_reason) if row.revoke_reason else None,
    )


class SqlAlchemySessionRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, session: Session) -> None:
        self._session.add(
            SessionRow(
                id=session.id,
                user_id=session.user_id,
                created_at=session.created_at,
                expires_at=session.expires_at,
                client_address=session.client_address,
                user_agent=session.user_agent,
                second_factor=session.second_factor.value,
                revoked_at=session.revoked_at,
                revoke_reason=session.revoke_reason.value if session.revoke_reason else None,
            )
        )
        await self._session.flush()

    async def get(self, session_id: str) -> Session | None:
        row = await self._session.get(SessionRow, session_id)
        return None if row is None else _session_from_row(row)

    async def active_for_user(self, user_id: str, now: datetime) -> list[Session]:
        rows = await self._session.execute(
            select(SessionRow)
            .where(
                SessionRow.user_id == user_id,
                SessionRow.revoked_at.is_(None),
                SessionRow.expires_at > now,
            )
            .order_by(SessionRow.id)
        )
        return [_session_from_row(row) for row in rows.scalars()]

    async def revoke(self, session_ids: Sequence[str], reason: RevokeReason, now: datetime) -> int:
        if not session_ids:
            return 0
        result = await self._session.execute(
            update(SessionRow)
            .where(SessionRow.id.in_(session_ids), SessionRow.revoked_at.is_(None))
            .values(revoked_at=now, revoke_reason=reason.value)
        )
        return _rowcount(result)


class SqlAlchemyRefreshTokenRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, token: RefreshToken) -> None:
        self._session.add(
            RefreshTokenRow(
                token_hash=token.token_hash,
                session_id=token.session_id,
                created_at=token.created_at,
                expires_at=token.expires_at,
                used_at=token.used_at,
            )
        )
        await self._session.flush()

    async def get(self, token_hash: str) -> RefreshToken | None:
        row = await self._session.get(RefreshTokenRow, token_hash)
        if row is None:
            return None
        return RefreshToken(
            token_hash=row.token_hash,
            session_id=row.session_id,
            created_at=row.created_at,
            expires_at=row.expires_at,
            used_at=row.used_at,
        )

    async def spend(self, token_hash: str, now: datetime) -> bool:
        result = await self._session.execute(
            update(RefreshTokenRow)
            .where(RefreshTokenRow.token_hash == token_hash, RefreshTokenRow.used_at.is_(None))
            .values(used_at=now)
            .execution_options(synchronize_session=False)
        )
        return _rowcount(result) == 1


class SqlAlchemyAccessTokenRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, token_id: str, session_id: str, expires_at: datetime) -> None:
        self._session.add(
            AccessTokenRow(token_id=token_id, session_id=session_id, expires_at=expires_at)
        )
        await self._session.flush()

    async def live(self, session_ids: Sequence[str], now: datetime) -> list[tuple[str, datetime]]:
        if not session_ids:
            return []
        rows = await self._session.execute(
            select(AccessTokenRow.token_id, AccessTokenRow.expires_at).where(
                AccessTokenRow.session_id.in_(session_ids), AccessTokenRow.expires_at > now
            )
        )
        return [(token_id, expires_at) for token_id, expires_at in rows.all()]

    async def delete_expired(self, now: datetime) -> int:
        result = await self._session.execute(
            delete(AccessTokenRow)
            .where(AccessTokenRow.expires_at <= now)
            .execution_options(synchronize_session=False)
        )
        return _rowcount(result)


class SqlAlchemyChallengeRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, challenge: LoginChallenge) -> None:
        self._session.add(
            LoginChallengeRow(
                token_hash=challenge.token_hash,
                user_id=challenge.user_id,
                created_at=challenge.created_at,
                expires_at=challenge.expires_at,
                attempts=challenge.attempts,
                used_at=challenge.used_at,
            )
        )
        await self._session.flush()

    async def get(self, token_hash: str) -> LoginChallenge | None:
        row = await self._session.get(LoginChallengeRow, token_hash)
        if row is None:
            return None
        return LoginChallenge(
            token_hash=row.token_hash,
            user_id=row.user_id,
            created_at=row.created_at,
            expires_at=row.expires_at,
            attempts=row.attempts,
            used_at=row.used_at,
        )

    async def record_attempt(self, token_hash: str) -> None:
        await self._session.execute(
            update(LoginChallengeRow)
            .where(LoginChallengeRow.token_hash == token_hash)
            .values(attempts=LoginChallengeRow.attempts + 1)
            .execution_options(synchronize_session=False)
        )

    async def consume(self, token_hash: str, now: datetime) -> bool:
        result = await self._session.execute(
            update(LoginChallengeRow)
            .where(LoginChallengeRow.token_hash == token_hash, LoginChallengeRow.used_at.is_(None))
            .values(used_at=now)
            .execution_options(synchronize_session=False)
        )
        return _rowcount(result) == 1


class SqlAlchemyRecoveryCodeRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def replace(self, user_id: str, code_hashes: Sequence[str], now: datetime) -> None:
        await self.delete_for_user(user_id)
        for code_hash in code_hashes:
            self._session.add(
                RecoveryCodeRow(user_id=user_id, code_hash=code_hash, created_at=now, used_at=None)
            )
        await self._session.flush()

    async def spend(self, user_id: str, code_hash: str, now: datetime) -> bool:
        result = await self._session.execute(
            update(RecoveryCodeRow)
            .where(
                RecoveryCodeRow.user_id == user_id,
                RecoveryCodeRow.code_hash == code_hash,
                RecoveryCodeRow.used_at.is_(None),
            )
            .values(used_at=now)
            .execution_options(synchronize_session=False)
        )
        return _rowcount(result) == 1

    async def delete_for_user(self, user_id: str) -> None:
        await self._session.execute(
            delete(RecoveryCodeRow)
            .where(RecoveryCodeRow.user_id == user_id)
            .execution_options(synchronize_session=False)
        )


class SqlAlchemyResetTokenRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, token: PasswordResetToken) -> None:
        self._session.add(
            PasswordResetRow(
                token_hash=token.token_hash,
                user_id=token.user_id,
                created_at=token.created_at,
                expires_at=token.expires_at,
                used_at=token.used_at,
                invalidated_at=token.invalidated_at,
            )
        )
        await self._session.flush()

    async def get(self, token_hash: str) -> PasswordResetToken | None:
        row = await self._session.get(PasswordResetRow, token_hash)
        if row is None:
            return None
        return PasswordResetToken(
            token_hash=row.token_hash,
            user_id=row.user_id,
            created_at=row.created_at,
            expires_at=row.expires_at,
            used_at=row.used_at,
            invalidated_at=row.invalidated_at,
        )

    async def invalidate_unused(self, user_id: str, now: datetime) -> None:
        await self._session.execute(
            update(PasswordResetRow)
            .where(
                PasswordResetRow.user_id == user_id,
                PasswordResetRow.used_at.is_(None),
                PasswordResetRow.invalidated_at.is_(None),
            )
            .values(invalidated_at=now)
            .execution_options(synchronize_session=False)
        )

    async def spend(self, token_hash: str, now: datetime) -> bool:
        result = await self._session.execute(
            update(PasswordResetRow)
            .where(
                PasswordResetRow.token_hash == token_hash,
                PasswordResetRow.used_at.is_(None),
                PasswordResetRow.invalidated_at.is_(None),
            )
            .values(used_at=now)
            .execution_options(synchronize_session=False)
        )
        return _rowcount(result) == 1


# --- audit ---------------------------------------------------------------------------------


def _event_from_row(row: SecurityEventRow) -> SecurityEvent:
    return SecurityEvent(
        id=row.id,
        type=SecurityEventType(row.type),
        severity=Severity(row.severity),
        outcome=Outcome(row.outcome),
        actor=Actor(
            user=row.actor_user, service=row.actor_service, client_address=row.client_address
        ),
        subject=row.subject,
        time=row.time,
        reason=row.reason,
        user_agent=row.user_agent,
        correlation_id=row.correlation_id,
        details=json.loads(row.details),
    )


class SqlAlchemySecurityEventRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, event: SecurityEvent) -> None:
        self._session.add(
            SecurityEventRow(
                id=event.id,
                type=event.type.value,
                severity=int(event.severity),
                outcome=event.outcome.value,
                actor_user=event.actor.user,
                actor_service=event.actor.service,
                client_address=event.actor.client_address,
                subject=event.subject,
                time=event.time,
                reason=event.reason,
                user_agent=event.user_agent,
                correlation_id=event.correlation_id,
                details=json.dumps(dict(event.details), sort_keys=True),
            )
        )
        await self._session.flush()

    async def search(
        self, where: SecurityEventFilter, after: str | None, limit: int
    ) -> list[SecurityEvent]:
        statement = select(SecurityEventRow)
        if where.user:
            statement = statement.where(
                or_(
                    SecurityEventRow.actor_user == where.user,
                    SecurityEventRow.subject == where.user,
                )
            )
        if where.types:
            statement = statement.where(
                SecurityEventRow.type.in_(sorted(kind.value for kind in where.types))
            )
        if where.outcome is not None:
            statement = statement.where(SecurityEventRow.outcome == where.outcome.value)
        if where.min_severity is not None:
            statement = statement.where(SecurityEventRow.severity >= int(where.min_severity))
        if where.start_time is not None:
            statement = statement.where(SecurityEventRow.time >= where.start_time)
        if where.end_time is not None:
            statement = statement.where(SecurityEventRow.time < where.end_time)
        if where.client_address:
            statement = statement.where(SecurityEventRow.client_address == where.client_address)
        if after is not None:
            statement = statement.where(
                SecurityEventRow.id < after if where.newest_first else SecurityEventRow.id > after
            )
        order = SecurityEventRow.id.desc() if where.newest_first else SecurityEventRow.id.asc()
        rows = await self._session.execute(statement.order_by(order).limit(limit))
        return [_event_from_row(row) for row in rows.scalars()]


# --- signing keys ----------------------------------------------------------------------------


class SqlAlchemySigningKeyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def all(self) -> list[StoredSigningKey]:
        rows = await self._session.execute(select(SigningKeyRow).order_by(SigningKeyRow.created_at))
        return [
            StoredSigningKey(
                kid=row.kid,
                algorithm=row.algorithm,
                public_jwk=json.loads(row.public_jwk),
                sealed_private_key=row.sealed_private_key,
                created_at=row.created_at,
                activates_at=row.activates_at,
                superseded_at=row.superseded_at,
            )
            for row in rows.scalars()
        ]

    async def add(self, key: StoredSigningKey) -> None:
        self._session.add(
            SigningKeyRow(
                kid=key.kid,
                algorithm=key.algorithm,
                public_jwk=json.dumps(dict(key.public_jwk), sort_keys=True),
                sealed_private_key=key.sealed_private_key,
                created_at=key.created_at,
                activates_at=key.activates_at,
                superseded_at=key.superseded_at,
            )
        )
        await self._session.flush()

    async def supersede_all_but(self, kid: str, at: datetime) -> None:
        await self._session.execute(
            update(SigningKeyRow)
            .where(
                SigningKeyRow.kid != kid,
                or_(SigningKeyRow.superseded_at.is_(None), SigningKeyRow.superseded_at > at),
            )
            .values(superseded_at=at)
            .execution_options(synchronize_session=False)
        )
