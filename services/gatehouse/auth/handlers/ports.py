"""The interfaces the auth handlers depend on; adapters implement them, tests may fake them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Protocol, Self

from gatehouse.auth.domain.lockout import Lock
from gatehouse.auth.domain.roles import Role
from gatehouse.auth.domain.security_events import SecurityEvent, SecurityEventFilter
from gatehouse.auth.domain.sessions import (
    LoginChallenge,
    PasswordResetToken,
    RefreshToken,
    RevokeReason,
    Session,
)
from gatehouse.auth.domain.users import User, UserState
from gatehouse.runtime.idempotency import IdempotencyRepository
from gatehouse.runtime.outbox import Outbox

# --- persistence -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UserQuery:
    role: str | None = None  # role id
    state: UserState | None = None
    include_deleted: bool = False
    query: str = ""
    order_by: str = "create_time"
    descending: bool = True
    # Keyset position: the sort value and id of the last row of the previous page.
    after: tuple[str, str] | None = None
    limit: int = 50


class UserRepository(Protocol):
    async def get(self, user_id: str, *, for_update: bool = False) -> User | None: ...

    async def get_by_email(self, email: str) -> User | None:
        """The non-deleted user with this normalised email."""
        ...

    async def add(self, user: User) -> None:
        """Raises `DuplicateKeyError` if the email is taken."""
        ...

    async def update(self, user: User) -> None: ...

    async def advance_totp_step(self, user_id: str, step: int) -> bool:
        """Record `step` as the last accepted TOTP step if it is newer than the stored one;
        False if it is not (a concurrent request used this code first)."""
        ...

    async def search(self, query: UserQuery, now: datetime) -> list[User]: ...

    async def active_holders(self, role_id: str) -> list[str]:
        """Ids of non-deleted users holding the role."""
        ...


class RoleRepository(Protocol):
    async def get(self, role_id: str, *, for_update: bool = False) -> Role | None: ...

    async def get_many(self, role_ids: Sequence[str]) -> list[Role]: ...

    async def add(self, role: Role) -> None:
        """Raises `DuplicateKeyError` if the id is taken."""
        ...

    async def replace(self, role: Role) -> None:
        """Overwrite an existing role's definition."""
        ...

    async def page(self, after: str | None, limit: int) -> list[Role]: ...


class SessionRepository(Protocol):
    async def add(self, session: Session) -> None: ...

    async def get(self, session_id: str) -> Session | None: ...

    async def active_for_user(self, user_id: str, now: datetime) -> list[Session]: ...

    async def revoke(self, session_ids: Sequence[str], reason: RevokeReason, now: datetime) -> int:
        """Revoke those not yet revoked; how many were."""
        ...


class RefreshTokenRepository(Protocol):
    async def add(self, token: RefreshToken) -> None: ...

    async def get(self, token_hash: str) -> RefreshToken | None: ...

    async def spend(self, token_hash: str, now: datetime) -> bool:
        """Mark the token used if it was not; False if someone spent it first (atomic)."""
        ...


class AccessTokenRepository(Protocol):
    """Ids of the access tokens each session was given, so revoking a session can put every
    one of them that is still alive on the shared revocation list."""

    async def add(self, token_id: str, session_id: str, expires_at: datetime) -> None: ...

    async def live(
        self, session_ids: Sequence[str], now: datetime
    ) -> list[tuple[str, datetime]]: ...

    async def delete_expired(self, now: datetime) -> int: ...


class ChallengeRepository(Protocol):
    async def add(self, challenge: LoginChallenge) -> None: ...

    async def get(self, token_hash: str) -> LoginChallenge | None: ...

    async def record_attempt(self, token_hash: str) -> None: ...

    async def consume(self, token_hash: str, now: datetime) -> bool:
        """Mark the challenge used if it was not; False if another request did (atomic)."""
        ...


class RecoveryCodeRepository(Protocol):
    async def replace(self, user_id: str, code_hashes: Sequence[str], now: datetime) -> None: ...

    async def spend(self, user_id: str, code_hash: str, now: datetime) -> bool:
        """Mark an unused code used; False if unknown or used (atomic)."""
        ...

    async def delete_for_user(self, user_id: str) -> None: ...


class ResetTokenRepository(Protocol):
    async def add(self, token: PasswordResetToken) -> None: ...

    async def get(self, token_hash: str) -> PasswordResetToken | None: ...

    async def invalidate_unused(self, user_id: str, now: datetime) -> None: ...

    async def spend(self, token_hash: str, now: datetime) -> bool: ...


class SecurityEventRepository(Protocol):
    async def add(self, event: SecurityEvent) -> None: ...

    async def search(
        self, where: SecurityEventFilter, after: str | None, limit: int
    ) -> list[SecurityEvent]: ...


@dataclass(frozen=True, slots=True)
class StoredSigningKey:
    kid: str
    algorithm: str
    public_jwk: Mapping[str, Any]
    sealed_private_key: bytes
    created_at: datetime  # published from then on
    activates_at: datetime  # signs from then on (later than created_at when prepublished)
    superseded_at: datetime | None = None  # signs until then


class SigningKeyRepository(Protocol):
    async def all(self) -> list[StoredSigningKey]: ...

    async def add(self, key: StoredSigningKey) -> None: ...

    async def supersede_all_but(self, kid: str, at: datetime) -> None:
        """Every other key stops signing at `at`, or earlier if it already would."""


class AuthUnitOfWork(Protocol):
    """One transaction over the auth tables, its idempotency records and its outbox.

    Repositories are read-only members so an implementation may narrow their types."""

    @property
    def users(self) -> UserRepository: ...

    @property
    def roles(self) -> RoleRepository: ...

    @property
    def sessions(self) -> SessionRepository: ...

    @property
    def refresh_tokens(self) -> RefreshTokenRepository: ...

    @property
    def access_tokens(self) -> AccessTokenRepository: ...

    @property
    def challenges(self) -> ChallengeRepository: ...

    @property
    def recovery_codes(self) -> RecoveryCodeRepository: ...

    @property
    def reset_tokens(self) -> ResetTokenRepository: ...

    @property
    def security_events(self) -> SecurityEventRepository: ...

    @property
    def signing_keys(self) -> SigningKeyRepository: ...

    @property
    def idempotency(self) -> IdempotencyRepository: ...

    @property
    def outbox(self) -> Outbox: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...

    async def commit(self) -> None: ...

    async def rollback(self) -> None: ...

    def reader(self) -> AuthUnitOfWork:
        """A unit of work for reads only (never committed). On SQLite it does not take the
        write lock, so lookups do not queue behind sign-ins."""
        ...


# --- crypto and shared state -------------------------------------------------------------------


class Clock(Protocol):
    def __call__(self) -> datetime:
        """Now, timezone-aware UTC."""
        ...


@dataclass(frozen=True, slots=True)
class PasswordCheck:
    ok: bool
    needs_rehash: bool = False


class PasswordHasher(Protocol):
    async def hash(self, password: str) -> str: ...

    async def verify(self, password_hash: str | None, password: str) -> PasswordCheck:
        """Check `password`; with no hash (unknown account) do the same work against a dummy
        hash and fail, so both failures cost the same."""
        ...


class SecretBox(Protocol):
    """Authenticated encryption and keyed hashing under the service's key-encryption key."""

    def seal(self, purpose: str, plaintext: bytes, associated_data: bytes = b"") -> bytes: ...

    def open(self, purpose: str, sealed: bytes, associated_data: bytes = b"") -> bytes: ...

    def digest(self, purpose: str, value: str | bytes) -> str:
        """A keyed hash (hex): what the store keeps of tokens, codes and fingerprints."""
        ...


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    claims: Mapping[str, Any]
    kid: str


class KeyRing(Protocol):
    """The signing keys: sign with the current one, verify with any published one."""

    def sign(self, claims: Mapping[str, Any]) -> str: ...

    def public_keys(self) -> list[dict[str, str]]:
        """Current first, then the previous ones still inside a token lifetime."""
        ...

    def verify(self, token: str) -> VerifiedToken:
        """Raises `TokenRejectedError` with the reason the token is not acceptable."""
        ...


class Lockout(Protocol):
    async def current(self, account_key: str, address: str) -> Lock | None:
        """The lock in force on the account or the address, if any."""
        ...

    async def record_failure(self, account_key: str, address: str) -> Lock | None:
        """Count one failure; the lock it caused, if any."""
        ...

    async def clear(self, account_key: str) -> None: ...


class RateLimiter(Protocol):
    async def hit(self, key: str, limit: int, window: timedelta) -> timedelta | None:
        """Count one use; how long to wait when over the limit, else None."""
        ...


class Revocations(Protocol):
    async def is_revoked(self, token_id: str) -> bool: ...

    async def revoke(self, token_id: str, until: datetime) -> None: ...
