"""RBAC per RPC: every RPC declares who may call it in the contract; one interceptor enforces it.

The declaration is the method option `(gatehouse.common.v1.access_rule)` in proto/, so the
table lives in one place, is visible to every reader of the API (grpcurl describe, docs) and
cannot drift from the code. A service with an RPC that declares nothing refuses to start.

Rules (proto/gatehouse/common/v1/authorization.proto):
- public: no token needed;
- authenticated: a valid access token;
- permission: the token's permissions (from its roles) grant it, or the calling *service*
  holds it in `SERVICE_GRANTS` (a service acting for itself, e.g. access opening a door through
  monitoring);
- internal: another Gatehouse service by its mTLS identity, never Envoy or an end user;
- device: a device certificate, or a device token that the handler verifies.

Every denial is handed to a `DenialAudit` (ARCHITECTURE §6: denials are audited).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal, Protocol, cast

import grpc
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message

from gatehouse.common.v1 import authorization_pb2, common_pb2
from gatehouse.events.v1 import security_pb2
from gatehouse.runtime.bus import EventBus
from gatehouse.runtime.config import SERVICE_NAMES
from gatehouse.runtime.errors import AccessRefused, DomainError, PermissionDenied, Unauthenticated
from gatehouse.runtime.events import new_event, stream_for
from gatehouse.runtime.identity import Caller, current_caller
from gatehouse.runtime.interception import ScopedInterceptor
from gatehouse.runtime.tls import spiffe_id

log = logging.getLogger("gatehouse.audit")

RuleKind = Literal["public", "authenticated", "permission", "internal", "device"]
_SERVICE_IDENTITIES = {spiffe_id(name): name for name in SERVICE_NAMES}

# Permissions a service holds when it calls another service for itself, with no end user
# behind the call. Kept short: a service acting for a user checks the user's permission first.
SERVICE_GRANTS: Mapping[str, frozenset[str]] = {
    "access": frozenset(
        {"monitoring.devices.command", "monitoring.devices.read", "monitoring.buildings.read"}
    ),
    "notifications": frozenset({"auth.users.read"}),
    "monitoring": frozenset(),
    # Whether the payer of a payment staff create for someone else exists.
    "payments": frozenset({"auth.users.read"}),
    "auth": frozenset(),
}


class UndeclaredAccessRuleError(Exception):
    """An RPC has no `(gatehouse.common.v1.access_rule)` option: a contract bug."""


@dataclass(frozen=True, slots=True)
class AccessRule:
    kind: RuleKind
    permission: str | None = None
    services: frozenset[str] = frozenset()

    @classmethod
    def of(cls, method: MethodDescriptor) -> AccessRule:
        options = method.GetOptions()
        # The generated stubs type the extension loosely; it is an AccessRule message.
        extension = cast("Any", authorization_pb2.access_rule)
        if not options.HasExtension(extension):
            raise UndeclaredAccessRuleError(
                f"{method.full_name} declares no (gatehouse.common.v1.access_rule)"
            )
        rule: authorization_pb2.AccessRule = options.Extensions[extension]
        kind = rule.WhichOneof("rule")
        if kind is None:
            raise UndeclaredAccessRuleError(f"{method.full_name} has an empty access_rule")
        if kind == "permission":
            return cls("permission", permission=rule.permission)
        if kind == "internal":
            return cls("internal", services=frozenset(rule.internal.services))
        return cls(cast("RuleKind", kind))


def grants(held: Iterable[str], needed: str) -> bool:
    """Whether `held` permissions grant `needed`; `payments.*` and `*` are wildcards."""
    for permission in held:
        if permission in (needed, "*"):
            return True
        if permission.endswith(".*") and needed.startswith(permission[:-1]):
            return True
    return False


def calling_service(caller: Caller) -> str | None:
    """The Gatehouse service behind the mTLS peer, if it is one (Envoy is not)."""
    return _SERVICE_IDENTITIES.get(caller.peer_spiffe_id or "")


class DenialAudit(Protocol):
    async def record(self, method: str, caller: Caller, error: DomainError) -> None: ...


class LogDenialAudit:
    """Writes each denial as a structured `security.access_denied` log record."""

    async def record(self, method: str, caller: Caller, error: DomainError) -> None:
        log.warning(
            "security.access_denied %s %s",
            method,
            error.reason,
            extra={
                "event": "security.access_denied",
                "rpc_method": method,
                "reason": error.reason,
                "user": caller.user,
                "peer": caller.peer_spiffe_id,
                "client_address": caller.client_address,
            },
        )


ACCESS_DENIED_EVENT = "security.access_denied"


class BusDenialAudit:
    """Logs each denial and publishes it as `security.access_denied`, so the auth service can
    keep every service's denials in one audit trail.

    Published straight to the bus, not through an outbox: a denial changes no state, so there
    is no transaction to join. Publishing is best effort; the log record stays either way.
    """

    def __init__(self, bus: EventBus, service: str) -> None:
        self._bus = bus
        self._service = service
        self._log = LogDenialAudit()

    async def record(self, method: str, caller: Caller, error: DomainError) -> None:
        await self._log.record(method, caller, error)
        denial = security_pb2.AccessDenied(
            method=method,
            reason=error.reason,
            permission=error.metadata.get("permission", ""),
            actor=common_pb2.Actor(
                user=caller.user or "",
                service=caller.peer_spiffe_id or "",
                client_address=caller.client_address or "",
            ),
            service=self._service,
        )
        event = new_event(
            ACCESS_DENIED_EVENT,
            source=self._service,
            subject=caller.user or caller.peer_spiffe_id or "anonymous",
            data=denial,
        )
        try:
            await self._bus.publish(stream_for(ACCESS_DENIED_EVENT), event)
        except Exception:
            log.exception("could not publish a denial to the bus; it is in the log")


def check(rule: AccessRule, caller: Caller) -> None:
    """Raise Unauthenticated or PermissionDenied unless `caller` satisfies `rule`."""
    if rule.kind == "public":
        return
    if rule.kind == "device":
        if caller.device_spiffe_id or caller.device_token:
            return
        raise Unauthenticated("this RPC is for devices only", reason="DEVICE_IDENTITY_MISSING")
    service = calling_service(caller)
    if rule.kind == "internal":
        if service is not None and (not rule.services or service in rule.services):
            return
        raise PermissionDenied("this RPC is internal to the mesh", reason="INTERNAL_ONLY")
    if rule.kind == "permission" and caller.claims is None and service is not None:
        needed = cast("str", rule.permission)
        if grants(SERVICE_GRANTS.get(service, ()), needed):
            return
        raise PermissionDenied(
            f"service {service} lacks permission {needed}",
            reason="PERMISSION_MISSING",
            metadata={"permission": needed},
        )
    if caller.claims is None:
        raise Unauthenticated("this RPC needs an access token", reason="TOKEN_MISSING")
    if rule.kind == "permission":
        needed = cast("str", rule.permission)
        if not grants(caller.claims.permissions, needed):
            raise PermissionDenied(
                f"missing permission {needed}",
                reason="PERMISSION_MISSING",
                metadata={"permission": needed},
            )


class AuthorizationInterceptor(ScopedInterceptor):
    def __init__(self, services: Iterable[ServiceDescriptor], audit: DenialAudit) -> None:
        self._rules = {
            f"/{service.full_name}/{method.name}": AccessRule.of(method)
            for service in services
            for method in service.methods
        }
        self._audit = audit

    @asynccontextmanager
    async def scope(
        self, method: str, request: Message | None, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[None]:
        rule = self._rules.get(method)
        if rule is not None:
            caller = current_caller()
            try:
                check(rule, caller)
            except (Unauthenticated, PermissionDenied) as denial:
                await self._audit.record(method, caller, denial)
                raise
        try:
            yield
        except AccessRefused as refusal:
            # The handler's own refusal: audited like the rule's.
            await self._audit.record(method, current_caller(), refusal)
            raise
