"""Roles: create custom ones, list, assign to and revoke from users. Nobody may hand out a
permission they do not hold themselves, and the last administrator stays one."""

from __future__ import annotations

from dataclasses import dataclass

from gatehouse.auth.domain.roles import (
    ADMIN_ROLE,
    BUILT_IN_ROLE_IDS,
    MAX_PERMISSIONS_PER_ROLE,
    MAX_ROLE_DESCRIPTION,
    MAX_ROLE_DISPLAY_NAME,
    ROLE_ID_PATTERN,
    Role,
    escalations,
    is_well_formed_permission,
    parse_role_name,
    role_name,
)
from gatehouse.auth.domain.security_events import Outcome, SecurityEventType
from gatehouse.auth.domain.users import User
from gatehouse.auth.handlers.accounts import existing_user, user_id_from
from gatehouse.auth.handlers.common import (
    AuthDependencies,
    LostIdempotencyRaceError,
    M,
    Origin,
    Refusal,
    Reply,
    RequestIdentity,
    audit,
    audit_step,
    idempotency_key,
    kept_on_refusal,
    permissions_of,
    publish,
    remember,
    replay,
    replay_committed,
)
from gatehouse.auth.handlers.pagination import PageTokens, page_size
from gatehouse.auth.handlers.ports import AuthUnitOfWork
from gatehouse.auth.v1 import events_pb2
from gatehouse.runtime.db import DuplicateKeyError
from gatehouse.runtime.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)


async def caller_permissions(
    uow: AuthUnitOfWork, deps: AuthDependencies, origin: Origin
) -> tuple[str, ...]:
    """What the caller holds *now* (inside `uow`): a token minted before a RevokeRole must
    not keep its holder able to hand out what it no longer has."""
    if origin.user_id is None:
        return ()
    caller = await uow.users.get(origin.user_id)
    if caller is None or caller.is_deleted:
        return ()
    return await permissions_of(uow, deps, caller)


def _refuse_escalation(
    deps: AuthDependencies,
    origin: Origin,
    refusal: Refusal,
    missing: list[str],
    subject: str,
    method: str,
) -> PermissionDenied:
    refusal.steps.append(
        audit_step(
            deps,
            origin,
            SecurityEventType.PERMISSION_DENIED,
            Outcome.DENIED,
            subject=subject,
            reason="ROLE_ESCALATION",
            details={"method": method, "permission": ",".join(missing)[:500]},
        )
    )
    return PermissionDenied(
        f"you cannot hand out permissions you do not hold: {', '.join(missing)}",
        reason="ROLE_ESCALATION",
    )


# --- CreateRole ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CreateRole:
    role_id: str
    display_name: str
    description: str
    permissions: tuple[str, ...]
    origin: Origin
    identity: RequestIdentity | None = None


def _check_role_fields(command: CreateRole, deps: AuthDependencies) -> None:
    violations: list[FieldViolation] = []
    if ROLE_ID_PATTERN.fullmatch(command.role_id) is None:
        violations.append(
            FieldViolation(
                "role_id",
                "must be 3 to 63 lower-case letters, digits or '-', starting with a letter",
            )
        )
    if len(command.display_name) > MAX_ROLE_DISPLAY_NAME:
        violations.append(
            FieldViolation(
                "role.display_name", f"must be at most {MAX_ROLE_DISPLAY_NAME} characters"
            )
        )
    if len(command.description) > MAX_ROLE_DESCRIPTION:
        violations.append(
            FieldViolation("role.description", f"must be at most {MAX_ROLE_DESCRIPTION} characters")
        )
    if not command.permissions:
        violations.append(FieldViolation("role.permissions", "must name at least one permission"))
    elif len(command.permissions) > MAX_PERMISSIONS_PER_ROLE:
        violations.append(
            FieldViolation("role.permissions", f"must hold at most {MAX_PERMISSIONS_PER_ROLE}")
        )
    malformed = [p for p in command.permissions if not is_well_formed_permission(p)]
    if malformed:
        violations.append(
            FieldViolation(
                "role.permissions", f"malformed: {', '.join(repr(p[:64]) for p in malformed[:5])}"
            )
        )
    if violations:
        raise InvalidArgument(violations)
    unknown = [p for p in command.permissions if not deps.catalogue.is_known(p)]
    if unknown:
        raise InvalidArgument(
            [FieldViolation("role.permissions", f"unknown permission: {p}") for p in unknown],
            reason="UNKNOWN_PERMISSION",
        )


async def create_role(
    command: CreateRole, uow: AuthUnitOfWork, deps: AuthDependencies, reply: Reply[Role, M]
) -> M:
    _check_role_fields(command, deps)
    origin = command.origin
    permissions = tuple(dict.fromkeys(command.permissions))  # de-duplicated, order kept
    key = idempotency_key(deps, "CreateRole", origin.user or origin.service, command.identity)
    async with kept_on_refusal(uow) as refusal:
        try:
            async with uow:
                if (found := await replay(uow, deps, key, reply)) is not None:
                    return found
                if command.role_id in BUILT_IN_ROLE_IDS or await uow.roles.get(command.role_id):
                    raise AlreadyExists(
                        f"role {role_name(command.role_id)} exists", reason="ROLE_EXISTS"
                    )
                missing = escalations(await caller_permissions(uow, deps, origin), permissions)
                if missing:
                    raise _refuse_escalation(
                        deps, origin, refusal, missing, role_name(command.role_id), "CreateRole"
                    )
                now = deps.clock()
                role = Role(
                    id=command.role_id,
                    display_name=command.display_name.strip() or command.role_id,
                    description=command.description,
                    permissions=permissions,
                    built_in=False,
                    created_at=now,
                    updated_at=now,
                )
                try:
                    await uow.roles.add(role)
                except DuplicateKeyError:
                    raise AlreadyExists(f"role {role.name} exists", reason="ROLE_EXISTS") from None
                await audit(
                    uow,
                    deps,
                    origin,
                    SecurityEventType.ROLE_CREATED,
                    Outcome.SUCCESS,
                    subject=role.name,
                    details={"role": role.name, "permission": ",".join(permissions)[:500]},
                )
                response = reply.present(role)
                await remember(uow, deps, key, response)
                await uow.commit()
        except LostIdempotencyRaceError:
            return await replay_committed(uow, deps, key, reply)
    return response


# --- ListRoles -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RolePage:
    roles: list[Role]
    next_page_token: str


async def list_roles(
    requested_size: int, page_token: str, uow: AuthUnitOfWork, deps: AuthDependencies
) -> RolePage:
    limit = page_size(requested_size, 100, 500)
    tokens = PageTokens(deps.box, "roles")
    now = deps.clock()
    position = tokens.read(page_token, "", now)
    async with uow.reader() as reader:
        roles = await reader.roles.page(position[0] if position else None, limit + 1)
    next_token = ""
    if len(roles) > limit:
        roles = roles[:limit]
        next_token = tokens.make([roles[-1].id], "", now)
    return RolePage(roles, next_token)


# --- AssignRole / RevokeRole -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChangeRole:
    name: str
    role: str
    origin: Origin
    identity: RequestIdentity | None = None


def _role_id_from(name: str) -> str:
    role_id = parse_role_name(name)
    if role_id is None:
        raise InvalidArgument(
            [FieldViolation("role", "must be roles/{role}")], reason="INVALID_NAME"
        )
    return role_id


async def assign_role(
    command: ChangeRole, uow: AuthUnitOfWork, deps: AuthDependencies, reply: Reply[User, M]
) -> M:
    return await _change_role(command, uow, deps, reply, assign=True)


async def revoke_role(
    command: ChangeRole, uow: AuthUnitOfWork, deps: AuthDependencies, reply: Reply[User, M]
) -> M:
    return await _change_role(command, uow, deps, reply, assign=False)


async def _change_role(
    command: ChangeRole,
    uow: AuthUnitOfWork,
    deps: AuthDependencies,
    reply: Reply[User, M],
    *,
    assign: bool,
) -> M:
    user_id = user_id_from(command.name)
    role_id = _role_id_from(command.role)
    origin = command.origin
    method = "AssignRole" if assign else "RevokeRole"
    key = idempotency_key(deps, method, origin.user or origin.service, command.identity)
    async with kept_on_refusal(uow) as refusal:
        try:
            async with uow:
                if (found := await replay(uow, deps, key, reply)) is not None:
                    return found
                # Locked first when it matters, in one order everywhere (see DeleteUser).
                role = await uow.roles.get(role_id, for_update=role_id == ADMIN_ROLE)
                if role is None:
                    raise NotFound(role_name(role_id), reason="ROLE_NOT_FOUND")
                missing = escalations(await caller_permissions(uow, deps, origin), role.permissions)
                if missing:
                    raise _refuse_escalation(
                        deps, origin, refusal, missing, f"users/{user_id}", method
                    )
                user = await existing_user(uow, user_id, for_update=True)
                changed = await (_assign if assign else _revoke)(uow, deps, origin, user, role)
                if changed:
                    await uow.users.update(user)
                response = reply.present(user)
                await remember(uow, deps, key, response)
                await uow.commit()
        except LostIdempotencyRaceError:
            return await replay_committed(uow, deps, key, reply)
    return response


async def _assign(
    uow: AuthUnitOfWork, deps: AuthDependencies, origin: Origin, user: User, role: Role
) -> bool:
    if user.is_deleted:
        raise FailedPrecondition(f"{user.name} is deleted", reason="USER_DELETED")
    if role.id in user.roles:
        return False
    user.roles = tuple(sorted((*user.roles, role.id)))
    user.touch(deps.clock())
    await publish(
        uow,
        deps,
        origin,
        "role.assigned",
        user.name,
        events_pb2.RoleAssigned(
            user=user.name,
            role=role.name,
            assigned_by=origin.user or origin.service,
            roles=[role_name(role_id) for role_id in user.roles],
        ),
    )
    await audit(
        uow,
        deps,
        origin,
        SecurityEventType.ROLE_ASSIGNED,
        Outcome.SUCCESS,
        subject=user.name,
        details={"role": role.name},
    )
    return True


async def _revoke(
    uow: AuthUnitOfWork, deps: AuthDependencies, origin: Origin, user: User, role: Role
) -> bool:
    if role.id not in user.roles:
        return False
    if role.id == ADMIN_ROLE and await uow.users.active_holders(ADMIN_ROLE) == [user.id]:
        raise FailedPrecondition(
            "this would leave no administrator; make someone else admin first",
            reason="LAST_ADMIN",
        )
    user.roles = tuple(role_id for role_id in user.roles if role_id != role.id)
    user.touch(deps.clock())
    await publish(
        uow,
        deps,
        origin,
        "role.revoked",
        user.name,
        events_pb2.RoleRevoked(
            user=user.name,
            role=role.name,
            revoked_by=origin.user or origin.service,
            roles=[role_name(role_id) for role_id in user.roles],
        ),
    )
    await audit(
        uow,
        deps,
        origin,
        SecurityEventType.ROLE_REVOKED,
        Outcome.SUCCESS,
        subject=user.name,
        details={"role": role.name},
    )
    return True
