"""Accounts: register, read, list and delete users; bootstrap the first administrator."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime

from gatehouse.auth.domain.emails import InvalidEmailError, normalise_email
from gatehouse.auth.domain.roles import (
    ADMIN_ROLE,
    BUILT_IN_ROLES,
    Role,
    parse_role_name,
    role_name,
)
from gatehouse.auth.domain.security_events import Outcome, SecurityEventType
from gatehouse.auth.domain.sessions import RevokeReason
from gatehouse.auth.domain.users import (
    User,
    UserState,
    UserStatus,
    check_display_name,
    parse_user_name,
)
from gatehouse.auth.handlers.common import (
    AuthDependencies,
    LostIdempotencyRaceError,
    M,
    Origin,
    Reply,
    RequestIdentity,
    audit,
    end_sessions,
    idempotency_key,
    permissions_of,
    publish,
    remember,
    replay,
    replay_committed,
    revoke_access_tokens,
)
from gatehouse.auth.handlers.pagination import PageTokens, page_size
from gatehouse.auth.handlers.ports import AuthUnitOfWork, UserQuery
from gatehouse.auth.v1 import events_pb2
from gatehouse.runtime.db import DuplicateKeyError
from gatehouse.runtime.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
)
from gatehouse.runtime.ids import new_ulid

# Never-signed-in users sort as if they had signed in at the epoch.
NEVER = datetime(1970, 1, 1, tzinfo=UTC)
USER_ORDERINGS = ("create_time", "email", "display_name", "last_login_time")
MAX_QUERY = 100


def valid_email(raw: str, field: str = "email") -> str:
    try:
        return normalise_email(raw)
    except InvalidEmailError as error:
        raise InvalidArgument([FieldViolation(field, str(error))], reason="INVALID_EMAIL") from None


def check_new_password(
    deps: AuthDependencies, password: str, email: str | None, field: str
) -> None:
    problems = deps.password_policy.problems(password, email)
    if problems:
        raise InvalidArgument(
            [FieldViolation(field, problem) for problem in problems], reason="WEAK_PASSWORD"
        )


def user_id_from(name: str, field: str = "name") -> str:
    user_id = parse_user_name(name)
    if user_id is None:
        raise InvalidArgument(
            [FieldViolation(field, "must be users/{user} with a user id")], reason="INVALID_NAME"
        )
    return user_id


async def existing_user(uow: AuthUnitOfWork, user_id: str, *, for_update: bool = False) -> User:
    user = await uow.users.get(user_id, for_update=for_update)
    if user is None:
        raise NotFound(f"users/{user_id}", reason="USER_NOT_FOUND")
    return user


# --- Register --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Register:
    email: str
    password: str
    display_name: str
    origin: Origin
    identity: RequestIdentity | None = None


async def register(
    command: Register, uow: AuthUnitOfWork, deps: AuthDependencies, reply: Reply[User, M]
) -> M:
    if not deps.settings.registration_enabled:
        raise PermissionDenied("self-registration is turned off", reason="REGISTRATION_DISABLED")
    email = valid_email(command.email)
    problem = check_display_name(command.display_name)
    if problem is not None:
        raise InvalidArgument([FieldViolation("display_name", problem)])
    if not command.password:
        raise InvalidArgument([FieldViolation("password", "is required")])
    check_new_password(deps, command.password, email, "password")
    key = idempotency_key(
        deps, "Register", "email:" + deps.box.digest("email", email), command.identity
    )
    # Read-only first: a replay or a taken email answers without an argon2 hash.
    async with uow.reader() as reader:
        if (found := await replay(reader, deps, key, reply)) is not None:
            return found
        if await reader.users.get_by_email(email) is not None:
            raise AlreadyExists("an account with this email exists", reason="EMAIL_TAKEN")
    address = command.origin.client_address
    if address:
        retry = await deps.limiter.hit(
            f"register:{address}",
            deps.settings.register_per_address,
            deps.settings.rate_window,
        )
        if retry is not None:
            raise ResourceExhausted(
                "too many registrations from this address",
                retry_after=retry,
                reason="TOO_MANY_ATTEMPTS",
            )
    # Hashed outside any transaction: 30 ms holding SQLite's write lock would stall others.
    password_hash = await deps.hasher.hash(command.password)
    try:
        async with uow:
            if (found := await replay(uow, deps, key, reply)) is not None:
                return found
            user = await create_user(
                uow,
                deps,
                command.origin,
                email=email,
                display_name=command.display_name.strip(),
                password_hash=password_hash,
                roles=tuple(deps.settings.default_roles),
            )
            response = reply.present(user)
            await remember(uow, deps, key, response)
            await uow.commit()
    except LostIdempotencyRaceError:
        return await replay_committed(uow, deps, key, reply)
    return response


async def create_user(
    uow: AuthUnitOfWork,
    deps: AuthDependencies,
    origin: Origin,
    *,
    email: str,
    display_name: str,
    password_hash: str,
    roles: tuple[str, ...],
) -> User:
    """Insert a user with `roles`, emit `user.registered` and audit it (inside `uow`)."""
    now = deps.clock()
    user = User(
        id=new_ulid(),
        email=email,
        display_name=display_name,
        password_hash=password_hash,
        status=UserStatus.ACTIVE,
        created_at=now,
        updated_at=now,
        password_updated_at=now,
        roles=tuple(sorted(set(roles))),
    )
    try:
        await uow.users.add(user)
    except DuplicateKeyError:
        raise AlreadyExists("an account with this email exists", reason="EMAIL_TAKEN") from None
    await publish(
        uow,
        deps,
        origin,
        "user.registered",
        user.name,
        events_pb2.UserRegistered(
            user=user.name,
            email=email,
            display_name=user.display_name,
            roles=[role_name(role_id) for role_id in user.roles],
            client_address=origin.client_address,
        ),
    )
    await audit(
        uow,
        deps,
        origin,
        SecurityEventType.USER_REGISTERED,
        Outcome.SUCCESS,
        subject=user.name,
        actor_user=origin.user or user.name,
    )
    return user


# --- reading ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CurrentUser:
    user: User
    permissions: tuple[str, ...]


async def get_current_user(
    origin: Origin, uow: AuthUnitOfWork, deps: AuthDependencies
) -> CurrentUser:
    if origin.user_id is None:
        raise Unauthenticated("this RPC needs an access token", reason="TOKEN_MISSING")
    async with uow.reader() as reader:
        user = await reader.users.get(origin.user_id)
        if user is None or user.is_deleted:
            # Deleting a user revokes its tokens; this only closes the gap before that lands.
            raise Unauthenticated("the token's user no longer exists", reason="TOKEN_REVOKED")
        return CurrentUser(user, await permissions_of(reader, deps, user))


async def get_user(name: str, uow: AuthUnitOfWork) -> User:
    user_id = user_id_from(name)
    async with uow.reader() as reader:
        return await existing_user(reader, user_id)


@dataclass(frozen=True, slots=True)
class ListUsers:
    page_size: int = 0
    page_token: str = ""
    role: str = ""
    state: UserState | None = None
    query: str = ""
    show_deleted: bool = False
    order_by: str = ""


@dataclass(frozen=True, slots=True)
class UserPage:
    users: list[User]
    next_page_token: str


def _user_ordering(order_by: str) -> tuple[str, bool]:
    parts = order_by.split()
    if not parts:
        return "create_time", True
    if parts[0] in USER_ORDERINGS and (len(parts) == 1 or (len(parts) == 2 and parts[1] == "desc")):
        return parts[0], len(parts) == 2
    raise InvalidArgument(
        [
            FieldViolation(
                "order_by", f"must be one of {', '.join(USER_ORDERINGS)}, optionally 'desc'"
            )
        ]
    )


async def list_users(command: ListUsers, uow: AuthUnitOfWork, deps: AuthDependencies) -> UserPage:
    violations: list[FieldViolation] = []
    role_id = None
    if command.role:
        role_id = parse_role_name(command.role)
        if role_id is None:
            violations.append(FieldViolation("role", "must be roles/{role}"))
    if len(command.query) > MAX_QUERY:
        violations.append(FieldViolation("query", f"must be at most {MAX_QUERY} characters"))
    if violations:
        raise InvalidArgument(violations)
    order_by, descending = _user_ordering(command.order_by)
    limit = page_size(command.page_size, 50, 500)
    filters = json.dumps(
        [
            role_id,
            command.state.name if command.state else None,
            command.query,
            command.show_deleted,
            order_by,
            descending,
        ]
    )
    now = deps.clock()
    tokens = PageTokens(deps.box, "users")
    position = tokens.read(command.page_token, filters, now)
    if position is not None and len(position) != 2:
        raise InvalidArgument(
            [FieldViolation("page_token", "is malformed")], reason="INVALID_PAGE_TOKEN"
        )
    query = UserQuery(
        role=role_id,
        state=command.state,
        include_deleted=command.show_deleted,
        query=command.query,
        order_by=order_by,
        descending=descending,
        after=(position[0], position[1]) if position else None,
        limit=limit + 1,
    )
    async with uow.reader() as reader:
        users = await reader.users.search(query, now)
    next_token = ""
    if len(users) > limit:
        users = users[:limit]
        last = users[-1]
        next_token = tokens.make([sort_value_of(last, order_by), last.id], filters, now)
    return UserPage(users, next_token)


def sort_value_of(user: User, order_by: str) -> str:
    """The keyset value a page token carries for `user` under `order_by` (the repository
    parses it back: ISO times for the time orderings)."""
    if order_by == "create_time":
        return user.created_at.isoformat()
    if order_by == "last_login_time":
        return (user.last_login_at or NEVER).isoformat()
    if order_by == "email":
        return user.email or ""
    return user.display_name


# --- DeleteUser ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeleteUser:
    name: str
    origin: Origin
    identity: RequestIdentity | None = None


async def delete_user(
    command: DeleteUser, uow: AuthUnitOfWork, deps: AuthDependencies, reply: Reply[User, M]
) -> M:
    user_id = user_id_from(command.name)
    key = idempotency_key(
        deps, "DeleteUser", command.origin.user or command.origin.service, command.identity
    )
    revoked: list[tuple[str, datetime]] = []
    try:
        async with uow:
            if (found := await replay(uow, deps, key, reply)) is not None:
                return found
            # Taken first, in the same order everywhere: serialises last-admin decisions.
            await uow.roles.get(ADMIN_ROLE, for_update=True)
            user = await existing_user(uow, user_id, for_update=True)
            if not user.is_deleted:
                if ADMIN_ROLE in user.roles and await uow.users.active_holders(ADMIN_ROLE) == [
                    user.id
                ]:
                    raise FailedPrecondition(
                        "the last administrator cannot be deleted; make someone else admin first",
                        reason="LAST_ADMIN",
                    )
                now = deps.clock()
                user.erase(now)
                await uow.users.update(user)
                await uow.recovery_codes.delete_for_user(user.id)
                await uow.reset_tokens.invalidate_unused(user.id, now)
                sessions = await uow.sessions.active_for_user(user.id, now)
                _, revoked = await end_sessions(uow, deps, sessions, RevokeReason.USER_DELETED)
                deleted_by = command.origin.user or command.origin.service
                await publish(
                    uow,
                    deps,
                    command.origin,
                    "user.deleted",
                    user.name,
                    events_pb2.UserDeleted(user=user.name, deleted_by=deleted_by),
                )
                await audit(
                    uow,
                    deps,
                    command.origin,
                    SecurityEventType.USER_DELETED,
                    Outcome.SUCCESS,
                    subject=user.name,
                )
            response = reply.present(user)
            await remember(uow, deps, key, response)
            await uow.commit()
    except LostIdempotencyRaceError:
        return await replay_committed(uow, deps, key, reply)
    await revoke_access_tokens(deps, revoked)
    return response


# --- start-up and bootstrap ------------------------------------------------------------------


async def sync_built_in_roles(uow: AuthUnitOfWork, deps: AuthDependencies) -> None:
    """Create the built-in roles, or bring them in line with this release's definitions.

    Replicas starting together may race to create them: a duplicate means another one did.
    """
    for attempt in range(2):
        try:
            async with uow:
                now = deps.clock()
                for built_in in BUILT_IN_ROLES:
                    role = Role(
                        id=built_in.id,
                        display_name=built_in.display_name,
                        description=built_in.description,
                        permissions=built_in.permissions,
                        built_in=True,
                        created_at=now,
                        updated_at=now,
                    )
                    stored = await uow.roles.get(built_in.id)
                    if stored is None:
                        await uow.roles.add(role)
                    elif (stored.permissions, stored.display_name, stored.description) != (
                        role.permissions,
                        role.display_name,
                        role.description,
                    ):
                        await uow.roles.replace(role)
                await uow.commit()
            return
        except DuplicateKeyError:
            if attempt:
                raise


async def check_default_roles(uow: AuthUnitOfWork, deps: AuthDependencies) -> None:
    """Fail start-up, naming the setting, when a default role does not exist."""
    async with uow.reader() as reader:
        found = {role.id for role in await reader.roles.get_many(deps.settings.default_roles)}
    missing = sorted(set(deps.settings.default_roles) - found)
    if missing:
        raise ValueError(
            f"GATEHOUSE_AUTH_DEFAULT_ROLES names roles that do not exist: {', '.join(missing)}"
        )


@dataclass(frozen=True, slots=True)
class CreateAdmin:
    email: str
    password: str
    display_name: str = "Administrator"
    origin: Origin = field(default_factory=Origin)
    only_if_no_admin: bool = False


async def create_admin(
    command: CreateAdmin, uow: AuthUnitOfWork, deps: AuthDependencies
) -> User | None:
    """Create an account holding `roles/admin` (the CLI and first-start bootstrap).

    The password policy applies as for Register. With `only_if_no_admin`, nothing happens
    when an active administrator exists (returns None): the bootstrap variables can stay
    set without creating a second admin on every start.
    """
    email = valid_email(command.email)
    problem = check_display_name(command.display_name)
    if problem is not None:
        raise InvalidArgument([FieldViolation("display_name", problem)])
    check_new_password(deps, command.password, email, "password")
    async with uow.reader() as reader:
        if command.only_if_no_admin and await reader.users.active_holders(ADMIN_ROLE):
            return None
        if await reader.users.get_by_email(email) is not None:
            raise AlreadyExists("an account with this email exists", reason="EMAIL_TAKEN")
    password_hash = await deps.hasher.hash(command.password)
    async with uow:
        if command.only_if_no_admin and await uow.users.active_holders(ADMIN_ROLE):
            return None
        user = await create_user(
            uow,
            deps,
            command.origin,
            email=email,
            display_name=command.display_name,
            password_hash=password_hash,
            roles=(ADMIN_ROLE,),
        )
        await uow.commit()
    return user
