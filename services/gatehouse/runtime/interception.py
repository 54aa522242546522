"""The one way our server interceptors wrap an RPC, whatever its streaming shape.

grpc.aio interceptors get a method handler and must return one; each concern (errors,
identity, validation, tracing) only wants to run code *around* the call. `ScopedInterceptor`
does the plumbing for the four handler kinds once, so each concern is a single async
context manager.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, cast

import grpc
from google.protobuf.message import Message

# Our own services; health and reflection are left alone (the health servicer's Watch is
# known to misbehave under interceptors, grpc/grpc#28728, and probes need no identity).
OWN_METHOD_PREFIX = "/gatehouse."

# `request` is None for client-streaming RPCs: there is no single request to look at.
Scope = Callable[
    [str, Message | None, grpc.aio.ServicerContext[Any, Any]], AbstractAsyncContextManager[None]
]

Behaviour = Callable[..., Any]


class ScopedInterceptor(grpc.aio.ServerInterceptor):
    """Runs `scope(method, request, context)` around every call of our own methods."""

    def applies_to(self, method: str) -> bool:
        return method.startswith(OWN_METHOD_PREFIX)

    def scope(
        self, method: str, request: Message | None, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AbstractAsyncContextManager[None]:
        raise NotImplementedError

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or not self.applies_to(method):
            return handler
        return wrap_handler(handler, method, self.scope)


def wrap_handler(
    handler: grpc.RpcMethodHandler[Any, Any], method: str, scope: Scope
) -> grpc.RpcMethodHandler[Any, Any]:
    deserializer = handler.request_deserializer
    serializer = handler.response_serializer
    if not handler.request_streaming and not handler.response_streaming:
        unary_unary = cast("Behaviour", handler.unary_unary)

        async def call_unary_unary(request: Message, context: Any) -> Any:
            async with scope(method, request, context):
                return await unary_unary(request, context)

        return grpc.unary_unary_rpc_method_handler(call_unary_unary, deserializer, serializer)

    if not handler.request_streaming:
        unary_stream = cast("Behaviour", handler.unary_stream)

        async def call_unary_stream(request: Message, context: Any) -> AsyncIterator[Any]:
            async with scope(method, request, context):
                async for response in _responses(unary_stream(request, context)):
                    yield response

        return grpc.unary_stream_rpc_method_handler(call_unary_stream, deserializer, serializer)

    if not handler.response_streaming:
        stream_unary = cast("Behaviour", handler.stream_unary)

        async def call_stream_unary(requests: AsyncIterator[Message], context: Any) -> Any:
            async with scope(method, None, context):
                return await stream_unary(requests, context)

        return grpc.stream_unary_rpc_method_handler(call_stream_unary, deserializer, serializer)

    stream_stream = cast("Behaviour", handler.stream_stream)

    async def call_stream_stream(
        requests: AsyncIterator[Message], context: Any
    ) -> AsyncIterator[Any]:
        async with scope(method, None, context):
            async for response in _responses(stream_stream(requests, context)):
                yield response

    return grpc.stream_stream_rpc_method_handler(call_stream_stream, deserializer, serializer)


async def _responses(result: Any) -> AsyncIterator[Any]:
    """A streaming behaviour is either an async generator or a coroutine using context.write."""
    if inspect.isasyncgen(result):
        async for response in result:
            yield response
    else:
        await result


def split_method(method: str) -> tuple[str, str]:
    """`/gatehouse.auth.v1.AuthService/Login` -> (`gatehouse.auth.v1.AuthService`, `Login`)."""
    service, _, name = method.lstrip("/").partition("/")
    return service, name
