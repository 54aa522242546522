"""A default deadline for calls whose caller gave none."""

from __future__ import annotations

import grpc

from gatehouse.clients.interceptors.base import CallConcern, CallKind, with_timeout


class DefaultDeadline(CallConcern):
    """Gives unary and client-streaming calls `seconds` when the caller set no timeout.

    A call without a deadline waits forever on a hung peer and holds its caller's resources
    with it. Server-streaming and bidirectional calls are left alone: they are long-lived by
    design (live feeds, device connections), and a deadline would cut them mid-stream.
    """

    kinds = frozenset({CallKind.UNARY_UNARY, CallKind.STREAM_UNARY})

    def __init__(self, seconds: float) -> None:
        if seconds <= 0:
            raise ValueError(f"a default deadline must be positive, got {seconds}")
        self.seconds = seconds

    def __repr__(self) -> str:
        return f"DefaultDeadline({self.seconds})"

    async def prepare(
        self, details: grpc.aio.ClientCallDetails, request: object | None
    ) -> grpc.aio.ClientCallDetails:
        if details.timeout is not None:
            return details
        return with_timeout(details, self.seconds)
