"""Client interceptors, one concern per module; see `base` for how they are built."""

from gatehouse.clients.interceptors.base import (
    ALL_KINDS,
    CallConcern,
    CallKind,
    interceptors_for,
)
from gatehouse.clients.interceptors.bearer import BearerToken, TokenProvider, bearer_token
from gatehouse.clients.interceptors.deadline import DefaultDeadline
from gatehouse.clients.interceptors.idempotency import IdempotencyKey, carries_request_id
from gatehouse.clients.interceptors.tracing import TraceContext

__all__ = [
    "ALL_KINDS",
    "BearerToken",
    "CallConcern",
    "CallKind",
    "DefaultDeadline",
    "IdempotencyKey",
    "TokenProvider",
    "TraceContext",
    "bearer_token",
    "carries_request_id",
    "interceptors_for",
]
