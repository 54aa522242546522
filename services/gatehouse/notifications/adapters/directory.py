"""Users and roles from auth, over gRPC with the service's own identity (mTLS certificate
`notifications`; SERVICE_GRANTS gives it `auth.users.read`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc

from gatehouse.auth.v1 import auth_pb2, auth_pb2_grpc
from gatehouse.clients.channel import ChannelFactory
from gatehouse.notifications.handlers.ports import DirectoryUnavailableError, UserInfo, UserState

_STATES = {
    auth_pb2.USER_STATE_ACTIVE: UserState.ACTIVE,
    auth_pb2.USER_STATE_LOCKED: UserState.LOCKED,
    auth_pb2.USER_STATE_DELETED: UserState.DELETED,
}
_PAGE = 500


def _user(message: auth_pb2.User) -> UserInfo:
    return UserInfo(
        name=message.name,
        email=message.email,
        display_name=message.display_name,
        state=_STATES.get(message.state, UserState.ACTIVE),
    )


class GrpcUserDirectory:
    """`UserDirectory` on auth's GetUser and ListUsers. The channel is made on first use,
    inside the running loop (grpc/grpc#32480)."""

    def __init__(
        self,
        factory: Callable[[], ChannelFactory],
        target: str,
        *,
        timeout: float = 5.0,
    ) -> None:
        self._factory = factory
        self._target = target
        self._timeout = timeout
        self._channel: grpc.aio.Channel | None = None
        self._stub: auth_pb2_grpc.AuthServiceAsyncStub | None = None
        self._lock = asyncio.Lock()

    async def _auth(self) -> auth_pb2_grpc.AuthServiceAsyncStub:
        async with self._lock:
            if self._stub is None:
                self._channel = self._factory().channel(self._target)
                self._stub = auth_pb2_grpc.AuthServiceStub(self._channel)
            return self._stub

    async def close(self) -> None:
        channel, self._channel, self._stub = self._channel, None, None
        if channel is not None:
            await channel.close()

    async def user(self, name: str) -> UserInfo | None:
        stub = await self._auth()
        try:
            response = await stub.GetUser(auth_pb2.GetUserRequest(name=name), timeout=self._timeout)
        except grpc.aio.AioRpcError as error:
            if error.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                return None
            raise DirectoryUnavailableError(error.code().name) from None
        return _user(response.user)

    async def role_members(self, role: str, limit: int) -> list[UserInfo] | None:
        stub = await self._auth()
        members: list[UserInfo] = []
        token = ""
        while True:
            try:
                response = await stub.ListUsers(
                    auth_pb2.ListUsersRequest(
                        role=role, page_size=_PAGE, page_token=token, order_by="create_time"
                    ),
                    timeout=self._timeout,
                )
            except grpc.aio.AioRpcError as error:
                if error.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                    return None
                raise DirectoryUnavailableError(error.code().name) from None
            members.extend(_user(user) for user in response.users)
            token = response.next_page_token
            if not token or len(members) > limit:
                return members


class StaticUserDirectory:
    """A fixed directory: tests, and tools that run without auth."""

    def __init__(
        self, users: list[UserInfo] | None = None, roles: dict[str, list[str]] | None = None
    ) -> None:
        self.users = {user.name: user for user in users or []}
        self.roles = dict(roles or {})
        self.available = True
        self.calls = 0

    def add(self, user: UserInfo, *roles: str) -> None:
        self.users[user.name] = user
        for role in roles:
            self.roles.setdefault(role, []).append(user.name)

    async def user(self, name: str) -> UserInfo | None:
        self.calls += 1
        if not self.available:
            raise DirectoryUnavailableError("down")
        return self.users.get(name)

    async def role_members(self, role: str, limit: int) -> list[UserInfo] | None:
        self.calls += 1
        if not self.available:
            raise DirectoryUnavailableError("down")
        if role not in self.roles:
            return None
        return [self.users[name] for name in self.roles[role]][: limit + 1]
