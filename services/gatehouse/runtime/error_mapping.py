"""Domain error -> gRPC status with google.rpc details; anything else -> an opaque INTERNAL."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
from google.protobuf.message import Message
from grpc_status import rpc_status
from opentelemetry import trace

from gatehouse.runtime.errors import DomainError, error_domain, internal_status
from gatehouse.runtime.interception import ScopedInterceptor, split_method

log = logging.getLogger("gatehouse.rpc")


class ErrorMappingInterceptor(ScopedInterceptor):
    @asynccontextmanager
    async def scope(
        self, method: str, request: Message | None, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[None]:
        domain = error_domain(split_method(method)[0])
        try:
            yield
        except grpc.aio.AbortError:
            raise  # a deliberate abort further in; the status is already set
        except DomainError as error:
            await context.abort_with_status(rpc_status.to_status(error.to_status(domain)))
        except Exception:
            trace_id = _current_trace_id()
            # The only place a stack trace goes: our log, never the caller.
            log.exception("unhandled error in %s", method, extra={"rpc_method": method})
            await context.abort_with_status(rpc_status.to_status(internal_status(trace_id, domain)))


def _current_trace_id() -> str:
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid:
        return f"{span_context.trace_id:032x}"
    return "unknown"
