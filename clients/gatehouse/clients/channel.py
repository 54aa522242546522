"""Channels with mTLS, deadlines, token metadata and a retry policy for idempotent RPCs.

Callers never build channels or metadata by hand: they describe *who they are*
(`ClientCredentials`) and *which RPCs are safe to retry*, and get a configured channel.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

TokenProvider = Callable[[], Awaitable[str | None]]

# Only these codes mean "the call never took effect or is safe to repeat" for an idempotent RPC.
RETRYABLE_CODES = ("UNAVAILABLE", "RESOURCE_EXHAUSTED")


@dataclass(frozen=True, slots=True)
class ClientCredentials:
    """The CA to trust and the certificate to present (mTLS)."""

    ca: bytes
    certificate_chain: bytes
    private_key: bytes

    @classmethod
    def from_directory(cls, directory: Path, identity: str = "client") -> ClientCredentials:
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


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """gRPC's transparent retry (service config), applied to the idempotent methods only."""

    max_attempts: int = 4
    initial_backoff_seconds: float = 0.1
    max_backoff_seconds: float = 2.0
    backoff_multiplier: float = 2.0
    retryable_status_codes: Sequence[str] = RETRYABLE_CODES


@dataclass(frozen=True, slots=True)
class MethodConfig:
    """Which methods of a service gRPC may retry by itself.

    Deadlines are not set here: a service-wide timeout would also cut long-lived streams, so
    the typed clients give each unary call its default deadline instead.
    """

    service: str
    idempotent_methods: Sequence[str] = ()
    retry: RetryPolicy = field(default_factory=RetryPolicy)


def service_config(configs: Sequence[MethodConfig]) -> str:
    method_config: list[dict[str, Any]] = []
    for config in configs:
        retry = config.retry
        if config.idempotent_methods:
            method_config.append(
                {
                    "name": [
                        {"service": config.service, "method": m} for m in config.idempotent_methods
                    ],
                    "retryPolicy": {
                        "maxAttempts": retry.max_attempts,
                        "initialBackoff": f"{retry.initial_backoff_seconds}s",
                        "maxBackoff": f"{retry.max_backoff_seconds}s",
                        "backoffMultiplier": retry.backoff_multiplier,
                        "retryableStatusCodes": list(retry.retryable_status_codes),
                    },
                }
            )
    return json.dumps({"methodConfig": method_config})


class _TokenInterceptor(
    grpc.aio.UnaryUnaryClientInterceptor,
    grpc.aio.UnaryStreamClientInterceptor,
    grpc.aio.StreamUnaryClientInterceptor,
    grpc.aio.StreamStreamClientInterceptor,
):
    """Adds `authorization: Bearer <token>` from a provider, fresh on every call."""

    def __init__(self, provider: TokenProvider) -> None:
        self._provider = provider

    async def _with_token(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        token = await self._provider()
        if token is None:
            return details
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        metadata.add("authorization", f"Bearer {token}")
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(await self._with_token(details), request)

    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(await self._with_token(details), request)

    async def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(await self._with_token(details), requests)

    async def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(await self._with_token(details), requests)


def bearer_token(token: str) -> TokenProvider:
    """A provider for a fixed token (scripts, tests); services pass a refreshing one."""

    async def provide() -> str:
        return token

    return provide


class ChannelFactory:
    """Builds secure channels to Gatehouse services. Create it inside the running event loop."""

    def __init__(
        self,
        credentials: ClientCredentials,
        *,
        token_provider: TokenProvider | None = None,
        method_configs: Sequence[MethodConfig] = (),
        server_name_override: str | None = None,
    ) -> None:
        self._credentials = credentials
        self._token_provider = token_provider
        self._method_configs = tuple(method_configs)
        self._server_name_override = server_name_override

    def channel(self, target: str, *extra_configs: MethodConfig) -> grpc.aio.Channel:
        options: list[tuple[str, Any]] = [
            ("grpc.service_config", service_config((*self._method_configs, *extra_configs))),
            ("grpc.enable_retries", 1),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_timeout_ms", 10_000),
        ]
        if self._server_name_override:
            options.append(("grpc.ssl_target_name_override", self._server_name_override))
        interceptors = [_TokenInterceptor(self._token_provider)] if self._token_provider else None
        return grpc.aio.secure_channel(
            target,
            self._credentials.channel_credentials(),
            options=options,
            interceptors=interceptors,
        )
