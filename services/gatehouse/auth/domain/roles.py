"""Roles and permissions (RBAC): built-in roles, the permission catalogue, no escalation.

A permission is `<service>.<resource-or-action>[.<verb>]`; a role entry ending in `.*`
grants every permission with that prefix and `*` alone grants everything. Whether a set of
held permissions grants one is `gatehouse.runtime.authorization.grants`, the same function
every service's interceptor uses, so auth and the services can never disagree.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from gatehouse.runtime.authorization import grants

ADMIN_ROLE = "admin"
ROLE_PREFIX = "roles/"
ROLE_ID_PATTERN = re.compile(r"[a-z][a-z0-9-]{2,62}")
MAX_ROLE_DISPLAY_NAME = 100
MAX_ROLE_DESCRIPTION = 1000
MAX_PERMISSIONS_PER_ROLE = 200
_PERMISSION_PATTERN = re.compile(r"\*|[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)*(?:\.\*)?")


@dataclass(frozen=True, slots=True)
class Role:
    id: str
    display_name: str
    description: str
    permissions: tuple[str, ...]
    built_in: bool
    created_at: datetime
    updated_at: datetime

    @property
    def name(self) -> str:
        return role_name(self.id)


def role_name(role_id: str) -> str:
    return f"{ROLE_PREFIX}{role_id}"


def parse_role_name(name: str) -> str | None:
    """`roles/front-desk` -> `front-desk`; None when `name` is not a role name."""
    if not name.startswith(ROLE_PREFIX):
        return None
    role_id = name.removeprefix(ROLE_PREFIX)
    return role_id if ROLE_ID_PATTERN.fullmatch(role_id) else None


@dataclass(frozen=True, slots=True)
class BuiltInRole:
    id: str
    display_name: str
    description: str
    permissions: tuple[str, ...]


# What each kind of person in a building needs, from the permission strings the five
# contracts declare. Operators run the site day to day but cannot change who holds which
# role (no `auth.roles.*` beyond reading), so an operator account cannot make itself admin.
BUILT_IN_ROLES: tuple[BuiltInRole, ...] = (
    BuiltInRole(
        id=ADMIN_ROLE,
        display_name="Administrator",
        description="Everything, including users, roles and the security audit trail.",
        permissions=("*",),
    ),
    BuiltInRole(
        id="operator",
        display_name="Operator",
        description=(
            "Runs buildings day to day: doors, PINs, visitors, emergencies, devices, alerts, "
            "notifications and payments; reads users, roles and the audit trail."
        ),
        permissions=(
            "access.*",
            "monitoring.*",
            "notifications.send",
            "notifications.read_all",
            "notifications.templates.manage",
            "payments.create",
            "payments.process",
            "payments.refund",
            "payments.read_all",
            "payments.manage",
            "auth.users.read",
            "auth.roles.read",
            "auth.security_events.read",
        ),
    ),
    BuiltInRole(
        id="resident",
        display_name="Resident",
        description="Lives or works in a building: own PINs and visitors, doors, payments.",
        permissions=(
            "access.pins.issue",
            "access.pins.revoke",
            "access.grants.read",
            "access.visitors.register",
            "access.visitors.read",
            "access.schedules.read",
            "access.open",
            "monitoring.buildings.read",
            "payments.create",
            "payments.process",
        ),
    ),
    BuiltInRole(
        id="visitor",
        display_name="Visitor",
        description="A self-registered account: can pay for what it is invited to.",
        permissions=("payments.create", "payments.process"),
    ),
)
BUILT_IN_ROLE_IDS = frozenset(role.id for role in BUILT_IN_ROLES)


class PermissionCatalogue:
    """The permissions the services declare (their contracts' access rules and the extra ones
    handlers check). A role may only grant what is in here, or a wildcard over some of it."""

    def __init__(self, permissions: Iterable[str]) -> None:
        self._permissions = frozenset(permissions)

    def __contains__(self, permission: object) -> bool:
        return permission in self._permissions

    def all(self) -> tuple[str, ...]:
        return tuple(sorted(self._permissions))

    def is_known(self, permission: str) -> bool:
        if permission == "*":
            return True
        if permission.endswith(".*"):
            prefix = permission[:-1]
            return any(known.startswith(prefix) for known in self._permissions)
        return permission in self._permissions


def is_well_formed_permission(permission: str) -> bool:
    return len(permission) <= 128 and _PERMISSION_PATTERN.fullmatch(permission) is not None


def effective_permissions(roles: Iterable[Role]) -> tuple[str, ...]:
    """Union over roles, wildcards kept as granted, sorted (stable token claims)."""
    return tuple(sorted({permission for role in roles for permission in role.permissions}))


def escalations(held: Iterable[str], wanted: Iterable[str]) -> list[str]:
    """The permissions in `wanted` that `held` does not grant (empty: no escalation).

    A wildcard in `wanted` needs an equal or wider wildcard in `held`: holding every
    `monitoring.*` permission one by one does not cover permissions added to the
    catalogue later.
    """
    held = tuple(held)
    return [permission for permission in wanted if not grants(held, permission)]
