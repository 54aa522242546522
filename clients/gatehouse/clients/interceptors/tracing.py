"""W3C trace context (`traceparent`, `tracestate`) of the current span on every call, so a
call one service makes for another continues its trace (ARCHITECTURE §9)."""

from __future__ import annotations

import grpc
from opentelemetry import propagate

from gatehouse.clients.interceptors.base import ALL_KINDS, CallConcern, with_metadata


class TraceContext(CallConcern):
    """Adds the current span's context; a call made outside any span goes without (the
    server then starts a trace). A call that already carries a `traceparent` keeps it."""

    kinds = ALL_KINDS

    async def prepare(
        self, details: grpc.aio.ClientCallDetails, request: object | None
    ) -> grpc.aio.ClientCallDetails:
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        if not carrier:
            return details
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        if metadata.get("traceparent") is not None:
            return details
        for key, value in carrier.items():
            metadata.add(key, value)
        return with_metadata(details, metadata)
