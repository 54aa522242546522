"""`authorization: Bearer <token>` on every call, from a token provider."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Protocol

import grpc

from gatehouse.clients.interceptors.base import ALL_KINDS, CallConcern, with_metadata

AUTHORIZATION = "authorization"


class TokenProvider(Protocol):
    """Returns the access token to send, or None to send none.

    Called before every call (streams too), so a provider that refreshes is never stale.
    """

    def __call__(self) -> Awaitable[str | None]: ...


def bearer_token(token: str) -> TokenProvider:
    """A provider for a fixed token (scripts, tests); services pass a refreshing one."""

    async def provide() -> str:
        return token

    return provide


class BearerToken(CallConcern):
    """Adds the provider's token to calls of every kind.

    A call that already carries `authorization` keeps it: a service forwarding an end user's
    token must not have it replaced by its own.
    """

    kinds = ALL_KINDS

    def __init__(self, provider: TokenProvider) -> None:
        self._provider = provider

    async def prepare(
        self, details: grpc.aio.ClientCallDetails, request: object | None
    ) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        if metadata.get(AUTHORIZATION) is not None:
            return details
        token = await self._provider()
        if not token:
            return details
        metadata.add(AUTHORIZATION, f"Bearer {token}")
        return with_metadata(details, metadata)
