"""Who may pay: auth's users, asked over gRPC with the service's own identity (mTLS
certificate `payments`; SERVICE_GRANTS gives it `auth.users.read`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc

from gatehouse.auth.v1 import auth_pb2, auth_pb2_grpc
from gatehouse.clients.channel import ChannelFactory
from gatehouse.payments.handlers.ports import PayerState
from gatehouse.runtime.errors import Unavailable

PAYER_DIRECTORY_UNAVAILABLE = "PAYER_DIRECTORY_UNAVAILABLE"


class GrpcPayerDirectory:
    """`PayerDirectory` on auth's GetUser. The channel is made on first use, inside the
    running loop (grpc/grpc#32480); auth not answering is UNAVAILABLE (retry), never a guess."""

    def __init__(
        self, factory: Callable[[], ChannelFactory], target: str, *, timeout: float = 5.0
    ) -> None:
        self._factory = factory
        self._target = target
        self._timeout = timeout
        self._channel: grpc.aio.Channel | None = None
        self._stub: auth_pb2_grpc.AuthServiceAsyncStub | None = None
        self._lock = asyncio.Lock()

    async def state(self, payer: str) -> PayerState:
        stub = await self._auth()
        try:
            response = await stub.GetUser(
                auth_pb2.GetUserRequest(name=payer), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as error:
            if error.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                return PayerState.UNKNOWN
            raise Unavailable(
                f"could not ask auth about {payer} ({error.code().name})",
                reason=PAYER_DIRECTORY_UNAVAILABLE,
            ) from None
        if response.user.state == auth_pb2.USER_STATE_DELETED:
            return PayerState.INACTIVE
        return PayerState.ACTIVE

    async def close(self) -> None:
        channel, self._channel, self._stub = self._channel, None, None
        if channel is not None:
            await channel.close()

    async def _auth(self) -> auth_pb2_grpc.AuthServiceAsyncStub:
        async with self._lock:
            if self._stub is None:
                self._channel = self._factory().channel(self._target)
                self._stub = auth_pb2_grpc.AuthServiceStub(self._channel)
            return self._stub
