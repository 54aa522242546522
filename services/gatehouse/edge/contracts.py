"""What the edge needs to know about every RPC, read from the generated contracts.

Routes, timeouts, retries, rate limits and token requirements are all derived here, once per
method, from the service descriptors, so a new RPC gets the right edge behaviour the day it is
added to a `.proto` file.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Literal, cast

from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message

from gatehouse.clients.retry import is_retryable
from gatehouse.runtime.config import SERVICE_NAMES, ServiceName

AccessKind = Literal["public", "authenticated", "permission", "internal", "device"]
ACCESS_RULE_OPTION = "gatehouse.common.v1.access_rule"

# Brute-forceable entry points: each gets its own per-client-address bucket at the edge on top
# of the global limit (ARCHITECTURE §6). Lockout and backoff in the services still apply.
RATE_LIMITED_METHODS = frozenset(
    {
        "gatehouse.auth.v1.AuthService.Login",
        "gatehouse.auth.v1.AuthService.Register",
        "gatehouse.access.v1.AccessService.ValidatePin",
    }
)


@dataclass(frozen=True, slots=True)
class EdgeMethod:
    """One RPC as the edge sees it."""

    service: ServiceName
    full_name: str  # gatehouse.auth.v1.AuthService.Login
    grpc_path: str  # /gatehouse.auth.v1.AuthService/Login
    client_streaming: bool
    server_streaming: bool
    retryable: bool
    access: AccessKind | None  # None: the contract declares no access rule (yet)

    @property
    def streaming(self) -> bool:
        return self.client_streaming or self.server_streaming

    @property
    def exposed(self) -> bool:
        """Internal RPCs serve other services over mTLS; they are not part of the edge API."""
        return self.access != "internal"

    @property
    def needs_token(self) -> bool:
        # Undeclared counts as protected: a contract gap must fail closed at the edge.
        return self.access not in ("public", "device")

    @property
    def rate_limited(self) -> bool:
        return self.full_name in RATE_LIMITED_METHODS


def service_descriptor(name: ServiceName) -> ServiceDescriptor:
    """`gatehouse.<name>.v1.<Name>Service` from its generated module (ARCHITECTURE §4)."""
    module = importlib.import_module(f"gatehouse.{name}.v1.{name}_pb2")
    descriptor: ServiceDescriptor = module.DESCRIPTOR.services_by_name[
        f"{name.capitalize()}Service"
    ]
    return descriptor


def edge_methods(services: tuple[ServiceName, ...] = SERVICE_NAMES) -> tuple[EdgeMethod, ...]:
    methods: list[EdgeMethod] = []
    for name in services:
        service = service_descriptor(name)
        for method in service.methods:
            methods.append(
                EdgeMethod(
                    service=name,
                    full_name=method.full_name,
                    grpc_path=f"/{service.full_name}/{method.name}",
                    client_streaming=method.client_streaming,
                    server_streaming=method.server_streaming,
                    retryable=is_retryable(method),
                    access=access_kind(method),
                )
            )
    return tuple(methods)


def access_kind(method: MethodDescriptor) -> AccessKind | None:
    """The kind of `(gatehouse.common.v1.access_rule)` the method declares, if any.

    Read by option name rather than through the generated extension so the edge does not
    depend on the authorization runtime, only on the contract.
    """
    for field, value in method.GetOptions().ListFields():
        if field.full_name == ACCESS_RULE_OPTION:
            kind = cast("Message", value).WhichOneof("rule")
            return cast("AccessKind | None", kind)
    return None
