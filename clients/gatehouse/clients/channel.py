"""Secure channels to Gatehouse services: mTLS, and the call behaviour the typed clients want.

Callers describe who they are (`ClientCredentials`) and which services a channel talks to;
the factory turns that into a grpc.aio channel with the retry service config derived from
the contracts and the interceptors for tokens, deadlines and request ids. Most code uses
`GatehouseClients` (gatehouse.clients.mesh) rather than this module directly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor

from gatehouse.clients.interceptors import (
    BearerToken,
    CallConcern,
    DefaultDeadline,
    IdempotencyKey,
    TokenProvider,
    TraceContext,
    interceptors_for,
)
from gatehouse.clients.retry import RetryPolicy, service_config


@dataclass(frozen=True, slots=True)
class ClientCredentials:
    """The CA to trust and the certificate to present (mTLS)."""

    ca: bytes
    certificate_chain: bytes
    private_key: bytes

    def __repr__(self) -> str:
        # The private key must never reach a log line through a repr.
        return "ClientCredentials(<redacted>)"

    @classmethod
    def from_directory(cls, directory: Path, identity: str = "client") -> ClientCredentials:
        """`ca.pem`, `<identity>.pem` and `<identity>-key.pem` from `directory`."""
        return cls(
            ca=(directory / "ca.pem").read_bytes(),
            certificate_chain=(directory / f"{identity}.pem").read_bytes(),
            private_key=(directory / f"{identity}-key.pem").read_bytes(),
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca,
            private_key=self.private_key,
            certificate_chain=self.certificate_chain,
        )


class ChannelFactory:
    """Builds secure channels to Gatehouse services.

    With nothing but credentials, a channel is mTLS plus the trace context (what health checks
    and tests that speak raw gRPC want). The options add, for every channel made:

    - `token_provider`: `authorization: Bearer <token>` on every call (`BearerToken`);
    - `default_timeout`: a deadline for unary and client-streaming calls that have none
      (`DefaultDeadline`); streams with a streamed response are never given one;
    - `retry`: gRPC retries the retryable methods (`is_retryable`) of the services passed to
      `channel()`, and empty `request_id` fields are filled before sending
      (`IdempotencyKey`). The two come together: retrying a mutating call is only safe when
      every attempt carries the same id.

    Every channel passes on the current span's W3C trace context (`TraceContext`), so a call
    made while serving a request or handling an event stays in that trace.
    """

    def __init__(
        self,
        credentials: ClientCredentials,
        *,
        token_provider: TokenProvider | None = None,
        default_timeout: float | None = None,
        retry: RetryPolicy | None = None,
        server_name_override: str | None = None,
    ) -> None:
        self._credentials = credentials
        self._retry = retry
        self._server_name_override = server_name_override
        # Outermost first: the id is in the message before anything else looks at the call.
        concerns: list[CallConcern] = [TraceContext()]
        if retry is not None:
            concerns.append(IdempotencyKey())
        if default_timeout is not None:
            concerns.append(DefaultDeadline(default_timeout))
        if token_provider is not None:
            concerns.append(BearerToken(token_provider))
        self._concerns: Sequence[CallConcern] = tuple(concerns)

    def channel(self, target: str, *services: ServiceDescriptor) -> grpc.aio.Channel:
        """A new channel to `target` (`host:port`), retrying the retryable methods of `services`.

        Call it inside the running event loop: a grpc.aio channel made outside it is bound to
        another loop and fails on first use (grpc/grpc#32480).
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "create gRPC channels inside the running event loop (grpc/grpc#32480)"
            ) from None
        options: list[tuple[str, Any]] = [
            ("grpc.service_config", service_config(services, self._retry)),
            # The config above is the whole truth; never take one from DNS instead.
            ("grpc.service_config_disable_resolution", 1),
            # Also without a policy: gRPC then still retries calls that never left the client.
            ("grpc.enable_retries", 1),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_timeout_ms", 10_000),
        ]
        if self._server_name_override:
            options.append(("grpc.ssl_target_name_override", self._server_name_override))
        return grpc.aio.secure_channel(
            target,
            self._credentials.channel_credentials(),
            options=options,
            interceptors=interceptors_for(self._concerns) or None,
        )
