"""Composition root of the auth service: the one place its parts are created and wired.

`create_service(context)` is what the mesh calls. Nothing touches the disk, the database or
the key-value store before the server starts: `AuthApp.start` (an on_start hook) migrates,
loads or creates the signing key, publishes the JWKS where every service reads it, and
bootstraps the first administrator when configured to.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gatehouse.auth.adapters.catalogue import permission_catalogue
from gatehouse.auth.adapters.hashing import Argon2Hasher, Argon2Parameters
from gatehouse.auth.adapters.lockout import (
    GuardedRevocations,
    KeyValueLockout,
    KeyValueRateLimiter,
)
from gatehouse.auth.adapters.orm import AUTH_VERSIONS_DIR
from gatehouse.auth.adapters.signing import SigningKeyRing, new_signing_key
from gatehouse.auth.adapters.unit_of_work import SqlAlchemyAuthUnitOfWork, read_sessions
from gatehouse.auth.domain.lockout import LockoutPolicy
from gatehouse.auth.domain.passwords import PasswordPolicy
from gatehouse.auth.domain.tokens import LEEWAY
from gatehouse.auth.grpc_api import AuthServicer, client_ip
from gatehouse.auth.handlers import accounts, audit, keys
from gatehouse.auth.handlers.common import AuthDependencies, Origin
from gatehouse.auth.handlers.ports import StoredSigningKey
from gatehouse.auth.settings import AuthSettings, load_auth_settings
from gatehouse.auth.v1 import auth_pb2, auth_pb2_grpc
from gatehouse.events.v1 import security_pb2
from gatehouse.events.v1.envelope_pb2 import Event
from gatehouse.runtime.authorization import ACCESS_DENIED_EVENT, LogDenialAudit
from gatehouse.runtime.config import ConfigurationError
from gatehouse.runtime.consumers import Consumer, ConsumerRunner
from gatehouse.runtime.errors import AlreadyExists, DomainError, PermissionDenied
from gatehouse.runtime.identity import JWKS_KEY, Caller, KeyValueRevocationList
from gatehouse.runtime.secrets import KeyedSecretBox, SealedValueError, resolve_secret_key
from gatehouse.runtime.server import ServiceDefinition
from gatehouse.runtime.service_context import ServiceContext, ServiceDatabase

log = logging.getLogger("gatehouse.auth")

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def resolve_kek(settings: AuthSettings, home: Path) -> bytes:
    """The key-encryption key: from the setting, from the configured file, or from
    `<home>/keys/auth.kek`, created (0600) on first start in embedded mode."""
    return resolve_secret_key(
        value=settings.key_encryption_key,
        file=settings.key_encryption_key_file,
        default_file=home / "keys" / "auth.kek",
        what="the auth key-encryption key",
    )


class AuthApp:
    """The auth service's parts. Built by `create_service`; started by the server."""

    def __init__(
        self,
        context: ServiceContext,
        settings: AuthSettings,
        *,
        clock: Clock = utc_now,
        kek: bytes | None = None,
        outbox_relay: bool = True,
    ) -> None:
        """`outbox_relay=False` for tools (the CLI) that write beside a running service: its
        relay publishes what they commit."""
        self.context = context
        self.settings = settings
        self.clock = clock
        self._kek = kek
        self.database: ServiceDatabase = context.database(
            migrations=[AUTH_VERSIONS_DIR], outbox_relay=outbox_relay
        )
        self.hasher = Argon2Hasher(
            Argon2Parameters(
                time_cost=settings.argon2_time_cost,
                memory_kib=settings.argon2_memory_kib,
                parallelism=settings.argon2_parallelism,
            ),
            workers=settings.hash_workers,
            nice=settings.hash_thread_nice,
        )
        self._deps: AuthDependencies | None = None
        self._ring: SigningKeyRing | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._denials: ConsumerRunner[SqlAlchemyAuthUnitOfWork] | None = None
        self._read_sessions: async_sessionmaker[AsyncSession] | None = None

    # -- what the servicer uses --

    @property
    def deps(self) -> AuthDependencies:
        if self._deps is None:
            raise RuntimeError("the auth service has not started")
        return self._deps

    def uow(self) -> SqlAlchemyAuthUnitOfWork:
        if self._read_sessions is None:
            self._read_sessions = read_sessions(self.database.database)
        return SqlAlchemyAuthUnitOfWork(
            self.database.database.sessionmaker,
            relay=self.database.relay,
            read_session_factory=self._read_sessions,
        )

    @property
    def key_ring(self) -> SigningKeyRing:
        if self._ring is None:
            raise RuntimeError("the auth service has not started")
        return self._ring

    # -- lifecycle --

    async def start(self) -> None:
        await self.database.start()
        try:
            await self._start_parts()
        except BaseException:
            await self.stop()
            raise

    async def _start_parts(self) -> None:
        settings, runtime = self.settings, self.context.settings
        kek = self._kek
        if kek is None:
            kek = await asyncio.to_thread(resolve_kek, settings, runtime.home)
        box = KeyedSecretBox(kek)
        await self.hasher.start()
        kv = self.context.kv
        self._ring = SigningKeyRing(
            box,
            issuer=runtime.jwt_issuer,
            audience=runtime.jwt_audience,
            # Superseded keys stay published while tokens they signed may still be alive.
            publish_window=settings.access_token_ttl + LEEWAY + timedelta(minutes=1),
            clock=self.clock,
        )

        def policy(max_failures: int) -> LockoutPolicy:
            return LockoutPolicy(
                max_failures=max_failures,
                window=settings.failure_window,
                base_lock=settings.lock_base,
                max_lock=settings.lock_max,
                memory=settings.lock_memory,
            )

        self._deps = AuthDependencies(
            settings=settings,
            issuer=runtime.jwt_issuer,
            audience=runtime.jwt_audience,
            clock=self.clock,
            hasher=self.hasher,
            box=box,
            keys=self._ring,
            lockout=KeyValueLockout(
                kv,
                account=policy(settings.account_max_failures),
                address=policy(settings.address_max_failures),
                clock=self.clock,
            ),
            limiter=KeyValueRateLimiter(kv),
            revocations=GuardedRevocations(KeyValueRevocationList(kv, clock=self.clock)),
            catalogue=permission_catalogue(),
            password_policy=PasswordPolicy(
                min_length=settings.password_min_length, max_length=settings.password_max_length
            ),
        )
        await accounts.sync_built_in_roles(self.uow(), self._deps)
        try:
            await accounts.check_default_roles(self.uow(), self._deps)
        except ValueError as error:
            raise ConfigurationError(str(error)) from None
        try:
            await self.refresh_keys(publish=True)
        except SealedValueError:
            raise ConfigurationError(
                "the key-encryption key does not open the signing keys stored in the auth "
                "database: start with the key this database was created with "
                "(GATEHOUSE_AUTH_KEY_ENCRYPTION_KEY or its file)"
            ) from None
        await self._bootstrap_admin()
        self._refresher = asyncio.create_task(self._refresh_forever(), name="auth-key-refresh")
        self._denials = self.context.consumer_runner(self._denial_consumer())
        await self._denials.start()

    def _denial_consumer(self) -> Consumer[SqlAlchemyAuthUnitOfWork]:
        """Every other service publishes its access denials; auth keeps them with its own."""
        consumer = Consumer("auth", self.uow)

        @consumer.handles(ACCESS_DENIED_EVENT, security_pb2.AccessDenied)
        async def store(
            event: Event, denial: security_pb2.AccessDenied, uow: SqlAlchemyAuthUnitOfWork
        ) -> None:
            origin = Origin(
                user_id=denial.actor.user.removeprefix("users/") or None,
                service=denial.actor.service or f"spiffe://gatehouse/{denial.service}",
                client_address=client_ip(denial.actor.client_address or None),
            )
            await audit.store_denial(
                origin, denial.method, denial.reason, denial.permission, uow, self.deps
            )

        return consumer

    async def stop(self) -> None:
        denials, self._denials = self._denials, None
        if denials is not None:
            await denials.stop()
        task, self._refresher = self._refresher, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.hasher.stop()
        await self.database.stop()

    # -- keys --

    async def refresh_keys(self, *, publish: bool = False) -> None:
        """Reread the key ring (another replica may have rotated), rotate when the current key
        is due, and publish the JWKS when it changed (or `publish`)."""
        deps, settings = self.deps, self.settings
        stored = await keys.ensure_signing_key(
            self.uow(),
            deps.box,
            self.clock(),
            settings.signing_key_rotation,
            new_signing_key,
            prepublish=settings.signing_key_prepublish,
        )
        changed = self.key_ring.load(stored)
        await self._publish_jwks(replace=publish or changed)

    async def rotate_keys(self, *, immediately: bool = False) -> StoredSigningKey:
        """Publish a new signing key now; it signs from `signing_key_prepublish` later (or at
        once when `immediately`: after a leak, accepting that verifiers with a cached JWKS
        refuse its tokens until they refetch). The old key stays published. Returns the key."""
        prepublish = timedelta(0) if immediately else self.settings.signing_key_prepublish
        key, stored = await keys.rotate_signing_key(
            self.uow(), self.deps.box, self.clock(), new_signing_key, prepublish=prepublish
        )
        self.key_ring.load(stored)
        await self._publish_jwks(replace=True)
        log.info("signing key %s published; it signs from %s", key.kid, key.activates_at)
        return key

    async def _publish_jwks(self, *, replace: bool) -> None:
        document = self.key_ring.jwks_document()
        if replace:
            await self.context.kv.set(JWKS_KEY, document)
        else:
            # Restores the document if the store lost it (a Redis restart), without
            # fighting whoever published a newer ring meanwhile.
            await self.context.kv.set_if_absent(JWKS_KEY, document)

    async def _refresh_forever(self) -> None:
        interval = self.settings.key_refresh_interval.total_seconds()
        while True:
            await asyncio.sleep(interval)
            try:
                await self.refresh_keys()
                async with self.uow() as uow:
                    await uow.access_tokens.delete_expired(self.clock())
                    await uow.commit()
            except Exception:
                log.exception("refreshing the signing keys failed; retrying later")

    # -- bootstrap --

    async def _bootstrap_admin(self) -> None:
        settings = self.settings
        if not settings.bootstrap_admin_email:
            return
        if settings.bootstrap_admin_password is not None:
            password = settings.bootstrap_admin_password.get_secret_value()
        elif settings.bootstrap_admin_password_file is not None:
            password = await asyncio.to_thread(settings.bootstrap_admin_password_file.read_text)
            password = password.rstrip("\n")
        else:
            raise ConfigurationError(
                "GATEHOUSE_AUTH_BOOTSTRAP_ADMIN_EMAIL needs GATEHOUSE_AUTH_BOOTSTRAP_ADMIN_PASSWORD"
                " or GATEHOUSE_AUTH_BOOTSTRAP_ADMIN_PASSWORD_FILE"
            )
        command = accounts.CreateAdmin(
            email=settings.bootstrap_admin_email,
            password=password,
            origin=Origin(service="bootstrap"),
            only_if_no_admin=True,
        )
        try:
            created = await accounts.create_admin(command, self.uow(), self.deps)
        except AlreadyExists:
            log.warning(
                "bootstrap admin not created: an account with that email exists but no admin; "
                "use `gatehouse auth create-admin` with another email"
            )
            return
        except DomainError as error:
            raise ConfigurationError(f"bootstrap admin: {error.message}") from None
        if created is not None:
            log.info("bootstrap administrator %s created", created.name)


class AuditTrailDenials:
    """The interceptor's denials in front of auth: logged like everywhere, and the
    PERMISSION_DENIED ones stored in the security audit trail."""

    def __init__(self, app: AuthApp) -> None:
        self._app = app
        self._log = LogDenialAudit()

    async def record(self, method: str, caller: Caller, error: DomainError) -> None:
        await self._log.record(method, caller, error)
        if not isinstance(error, PermissionDenied):
            return
        claims = caller.claims
        origin = Origin(
            user_id=claims.subject.removeprefix("users/") if claims else None,
            service=caller.peer_spiffe_id or "",
            client_address=client_ip(caller.client_address),
        )
        try:
            await audit.record_denial(
                origin,
                method,
                error.reason,
                error.metadata.get("permission", ""),
                self._app.uow(),
                self._app.deps,
            )
        except Exception:
            log.exception("could not store a permission denial in the audit trail")


def create_auth(
    context: ServiceContext,
    *,
    settings: AuthSettings | None = None,
    clock: Clock = utc_now,
    kek: bytes | None = None,
) -> tuple[ServiceDefinition, AuthApp]:
    """The definition and the app behind it (tests and tools reach the app)."""
    app = AuthApp(context, settings or load_auth_settings(), clock=clock, kek=kek)
    servicer = AuthServicer(app)
    definition = ServiceDefinition(
        name=context.name,
        descriptor=auth_pb2.DESCRIPTOR.services_by_name["AuthService"],
        on_start=(app.start,),
        on_stop=(app.stop,),
        register=partial(auth_pb2_grpc.add_AuthServiceServicer_to_server, servicer),
        denial_audit=AuditTrailDenials(app),
    )
    return definition, app


def create_service(context: ServiceContext) -> ServiceDefinition:
    return create_auth(context)[0]
