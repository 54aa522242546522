"""Who is asking, as a handler sees it: the caller the interceptors established, reduced to
what use cases decide with (never taken from the request body), and what makes two calls
"the same request" for idempotency."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TypeVar

from google.protobuf.message import Message

from gatehouse.runtime.authorization import SERVICE_GRANTS, calling_service, grants
from gatehouse.runtime.identity import current_caller


@dataclass(frozen=True, slots=True)
class Principal:
    user: str = ""  # `users/{id}`; empty for a service acting for itself
    service: str = ""  # the mTLS peer's SPIFFE id
    client_address: str = ""
    permissions: tuple[str, ...] = ()

    def has(self, permission: str) -> bool:
        return grants(self.permissions, permission)

    @property
    def identity(self) -> str:
        """Scopes request ids: two callers choosing the same id never meet."""
        return self.user or self.service or "anonymous"


P = TypeVar("P", bound=Principal)


def current_principal(kind: type[P]) -> P:
    """The current call's principal, as `kind` (a service's subclass adds its own helpers). A
    user's permissions come from the token; a service acting for itself holds its grants."""
    caller = current_caller()
    if caller.claims is not None:
        permissions = tuple(caller.claims.permissions)
    else:
        permissions = tuple(SERVICE_GRANTS.get(calling_service(caller) or "", ()))
    return kind(
        user=caller.user or "",
        service=caller.peer_spiffe_id or "",
        client_address=caller.client_address or "",
        permissions=permissions,
    )


def request_fingerprint(request: Message) -> bytes:
    """What makes a retry the same request: everything but its `request_id`."""
    copy = type(request)()
    copy.CopyFrom(request)
    copy.ClearField("request_id")
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).digest()
