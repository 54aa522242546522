"""One way to write a client interceptor, whatever the streaming shape of the call.

grpc.aio files each interceptor object under ONE call kind: an object implementing several of
its interceptor ABCs is registered only for the first one it matches (an `if/elif` chain in
`grpc.aio.Channel.__init__`, grpc/grpc#31442), so an "all kinds" token interceptor silently
skips every stream. A `CallConcern` instead names the kinds it applies to and says how it
changes a call; `interceptors_for` turns it into one grpc.aio interceptor per kind.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import ClassVar, TypeVar

import grpc

RequestT = TypeVar("RequestT")
ResponseT = TypeVar("ResponseT")


class CallKind(enum.Enum):
    UNARY_UNARY = "unary_unary"
    UNARY_STREAM = "unary_stream"
    STREAM_UNARY = "stream_unary"
    STREAM_STREAM = "stream_stream"


ALL_KINDS = frozenset(CallKind)


class CallConcern(abc.ABC):
    """A change every outgoing call of the given kinds gets before it is sent."""

    kinds: ClassVar[frozenset[CallKind]]

    @abc.abstractmethod
    async def prepare(
        self, details: grpc.aio.ClientCallDetails, request: object | None
    ) -> grpc.aio.ClientCallDetails:
        """Return the call details to send with.

        `request` is the request message of unary-request calls and None for client streams,
        whose messages are produced later by the caller's iterator.
        """


def with_timeout(details: grpc.aio.ClientCallDetails, timeout: float) -> grpc.aio.ClientCallDetails:
    return grpc.aio.ClientCallDetails(
        details.method, timeout, details.metadata, details.credentials, details.wait_for_ready
    )


def with_metadata(
    details: grpc.aio.ClientCallDetails, metadata: grpc.aio.Metadata
) -> grpc.aio.ClientCallDetails:
    return grpc.aio.ClientCallDetails(
        details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
    )


def interceptors_for(concerns: Sequence[CallConcern]) -> list[grpc.aio.ClientInterceptor]:
    """One grpc.aio interceptor per (concern, kind); the first concern runs outermost."""
    adapters: dict[CallKind, Callable[[CallConcern], grpc.aio.ClientInterceptor]] = {
        CallKind.UNARY_UNARY: _UnaryUnary,
        CallKind.UNARY_STREAM: _UnaryStream,
        CallKind.STREAM_UNARY: _StreamUnary,
        CallKind.STREAM_STREAM: _StreamStream,
    }
    return [
        adapters[kind](concern)
        for concern in concerns
        for kind in CallKind
        if kind in concern.kinds
    ]


class _Adapter:
    def __init__(self, concern: CallConcern) -> None:
        self.concern = concern

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.concern!r})"


class _UnaryUnary(_Adapter, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(
        self,
        continuation: Callable[
            [grpc.aio.ClientCallDetails, RequestT],
            Awaitable[grpc.aio.UnaryUnaryCall[RequestT, ResponseT]],
        ],
        client_call_details: grpc.aio.ClientCallDetails,
        request: RequestT,
    ) -> ResponseT | grpc.aio.UnaryUnaryCall[RequestT, ResponseT]:
        details = await self.concern.prepare(client_call_details, request)
        return await continuation(details, request)


class _UnaryStream(_Adapter, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(
        self,
        continuation: Callable[
            [grpc.aio.ClientCallDetails, RequestT],
            Awaitable[grpc.aio.UnaryStreamCall[RequestT, ResponseT]],
        ],
        client_call_details: grpc.aio.ClientCallDetails,
        request: RequestT,
    ) -> AsyncIterator[ResponseT] | grpc.aio.UnaryStreamCall[RequestT, ResponseT]:
        details = await self.concern.prepare(client_call_details, request)
        return await continuation(details, request)


class _StreamUnary(_Adapter, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(
        self,
        continuation: Callable[
            [grpc.aio.ClientCallDetails, AsyncIterable[RequestT] | Iterable[RequestT]],
            Awaitable[grpc.aio.StreamUnaryCall[RequestT, ResponseT]],
        ],
        client_call_details: grpc.aio.ClientCallDetails,
        request_iterator: AsyncIterable[RequestT] | Iterable[RequestT],
    ) -> ResponseT | grpc.aio.StreamUnaryCall[RequestT, ResponseT]:
        details = await self.concern.prepare(client_call_details, None)
        return await continuation(details, request_iterator)


class _StreamStream(_Adapter, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(
        self,
        continuation: Callable[
            [grpc.aio.ClientCallDetails, AsyncIterable[RequestT] | Iterable[RequestT]],
            Awaitable[grpc.aio.StreamStreamCall[RequestT, ResponseT]],
        ],
        client_call_details: grpc.aio.ClientCallDetails,
        request_iterator: AsyncIterable[RequestT] | Iterable[RequestT],
    ) -> AsyncIterator[ResponseT] | grpc.aio.StreamStreamCall[RequestT, ResponseT]:
        details = await self.concern.prepare(client_call_details, None)
        return await continuation(details, request_iterator)
