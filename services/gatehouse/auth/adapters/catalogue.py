"""The permission catalogue, read from the contracts: every permission an RPC of any service
declares in its access rule, plus those handlers check beyond the rule (documented in the
RPC comments), so a role can only grant what some service actually enforces."""

from __future__ import annotations

import importlib
from typing import Any, cast

from gatehouse.auth.domain.roles import PermissionCatalogue
from gatehouse.common.v1 import authorization_pb2
from gatehouse.runtime.config import SERVICE_NAMES

# Checked inside handlers (ownership rules), not by an access rule: see payments.proto and
# notifications.proto ("a caller without `payments.read_all` ...").
HANDLER_PERMISSIONS = frozenset(
    {"payments.read_all", "payments.manage", "notifications.read_all", "auth.users.manage"}
)


def contract_permissions() -> frozenset[str]:
    extension = cast("Any", authorization_pb2.access_rule)
    found: set[str] = set()
    for service in SERVICE_NAMES:
        module = importlib.import_module(f"gatehouse.{service}.v1.{service}_pb2")
        for descriptor in module.DESCRIPTOR.services_by_name.values():
            for method in descriptor.methods:
                options = method.GetOptions()
                if options.HasExtension(extension):
                    rule = options.Extensions[extension]
                    if rule.WhichOneof("rule") == "permission":
                        found.add(rule.permission)
    return frozenset(found)


def permission_catalogue() -> PermissionCatalogue:
    return PermissionCatalogue(contract_permissions() | HANDLER_PERMISSIONS)
