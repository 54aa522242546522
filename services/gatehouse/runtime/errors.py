"""Domain errors and their one mapping to gRPC status with google.rpc details.

Handlers raise these; the error interceptor turns them into a status code, a message meant
for the caller, and `google.rpc.Status` details (ARCHITECTURE §5). Nothing else in a service
decides status codes. Messages must never contain secrets, SQL or stack traces: they are
shown to callers and, through Envoy, to REST clients.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2

# The ErrorInfo domain names the system that produced the reason (AIP-193): the service,
# `<service>.gatehouse` (e.g. `payments.gatehouse`), or this one when no service is known.
ERROR_DOMAIN = "gatehouse"


def error_domain(grpc_service: str) -> str:
    """`gatehouse.payments.v1.PaymentsService` -> `payments.gatehouse`."""
    parts = grpc_service.split(".")
    return f"{parts[1]}.gatehouse" if len(parts) > 2 and parts[0] == "gatehouse" else ERROR_DOMAIN


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One invalid field: `field` is a dotted path (`amount.currency_code`)."""

    field: str
    description: str


class DomainError(Exception):
    """Base of every error a handler may raise on purpose.

    `reason` is stable UPPER_SNAKE (clients switch on it); `message` is for humans.
    """

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN
    default_reason = "UNKNOWN"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata = dict(metadata or {})

    def details(self, domain: str = ERROR_DOMAIN) -> list[any_pb2.Any]:
        info = error_details_pb2.ErrorInfo(
            reason=self.reason, domain=domain, metadata=self.metadata
        )
        return [_pack(info)]

    def to_status(self, domain: str = ERROR_DOMAIN) -> status_pb2.Status:
        return status_pb2.Status(
            code=self.code.value[0], message=self.message, details=self.details(domain)
        )


class InvalidArgument(DomainError):
    """The request is malformed whatever the system's state (BadRequest field violations)."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    default_reason = "INVALID_FIELD"

    def __init__(
        self,
        violations: Sequence[FieldViolation],
        message: str | None = None,
        *,
        reason: str | None = None,
    ) -> None:
        self.violations = tuple(violations)
        summary = "; ".join(f"{v.field}: {v.description}" for v in self.violations)
        super().__init__(message or f"invalid request: {summary}", reason=reason)

    def details(self, domain: str = ERROR_DOMAIN) -> list[any_pb2.Any]:
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=v.field, description=v.description
                )
                for v in self.violations
            ]
        )
        return [_pack(bad_request), *super().details(domain)]


class Unauthenticated(DomainError):
    """No valid credentials: missing, expired or tampered token."""

    code = grpc.StatusCode.UNAUTHENTICATED
    default_reason = "UNAUTHENTICATED"


class PermissionDenied(DomainError):
    """Authenticated, but the caller lacks the permission the RPC declares."""

    code = grpc.StatusCode.PERMISSION_DENIED
    default_reason = "PERMISSION_DENIED"


class AccessRefused(PermissionDenied):
    """A refusal a handler decides beyond the contract's access rule (whose payment this is,
    which door this controller serves). Raised as PERMISSION_DENIED like any other; the
    authorization interceptor also hands it to the service's denial audit, so it reaches the
    security audit trail like the rule's own refusals."""


def permission_missing(permission: str) -> AccessRefused:
    """The refusal of a caller who lacks `permission` for what it asked."""
    return AccessRefused(
        f"missing permission {permission}",
        reason="PERMISSION_MISSING",
        metadata={"permission": permission},
    )


class NotFound(DomainError):
    code = grpc.StatusCode.NOT_FOUND
    default_reason = "NOT_FOUND"

    def __init__(self, resource_name: str, *, reason: str | None = None) -> None:
        super().__init__(f"{resource_name} not found", reason=reason)
        self.resource_name = resource_name

    def details(self, domain: str = ERROR_DOMAIN) -> list[any_pb2.Any]:
        info = error_details_pb2.ResourceInfo(resource_name=self.resource_name)
        return [*super().details(domain), _pack(info)]


class AlreadyExists(DomainError):
    code = grpc.StatusCode.ALREADY_EXISTS
    default_reason = "ALREADY_EXISTS"


class FailedPrecondition(DomainError):
    """The request is valid but the system is not in a state that allows it."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    default_reason = "FAILED_PRECONDITION"


class Aborted(DomainError):
    """A concurrency conflict (optimistic lock lost, a twin request still running); retrying
    the whole operation may work, after `retry_after` when given (sent as RetryInfo)."""

    code = grpc.StatusCode.ABORTED
    default_reason = "CONFLICT"

    def __init__(
        self,
        message: str,
        *,
        retry_after: dt.timedelta | None = None,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, reason=reason, metadata=metadata)
        self.retry_after = retry_after

    def details(self, domain: str = ERROR_DOMAIN) -> list[any_pb2.Any]:
        details = super().details(domain)
        if self.retry_after is not None:
            details.append(_pack(_retry_info(self.retry_after)))
        return details


class RequestInProgress(Aborted):
    """A retry arrived while the first call with its request id is still running: the caller
    retries shortly and then gets the first call's reply."""

    def __init__(self, retry_after: dt.timedelta) -> None:
        super().__init__(
            "a request with this request_id is still being processed; retry shortly",
            reason="REQUEST_IN_PROGRESS",
            retry_after=retry_after,
        )


class ResourceExhausted(DomainError):
    """Rate limit, lockout or quota; `retry_after` tells the caller when to come back."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    default_reason = "RESOURCE_EXHAUSTED"

    def __init__(
        self,
        message: str,
        *,
        retry_after: dt.timedelta | None = None,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, reason=reason, metadata=metadata)
        self.retry_after = retry_after

    def details(self, domain: str = ERROR_DOMAIN) -> list[any_pb2.Any]:
        details = super().details(domain)
        if self.retry_after is not None:
            details.append(_pack(_retry_info(self.retry_after)))
        return details


class Unavailable(DomainError):
    """A dependency is down or the service is draining; safe to retry later."""

    code = grpc.StatusCode.UNAVAILABLE
    default_reason = "UNAVAILABLE"

    def __init__(
        self,
        message: str,
        *,
        retry_after: dt.timedelta | None = dt.timedelta(seconds=1),
        reason: str | None = None,
    ) -> None:
        super().__init__(message, reason=reason)
        self.retry_after = retry_after

    def details(self, domain: str = ERROR_DOMAIN) -> list[any_pb2.Any]:
        details = super().details(domain)
        if self.retry_after is not None:
            details.append(_pack(_retry_info(self.retry_after)))
        return details


class DeadlineExceeded(DomainError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED
    default_reason = "DEADLINE_EXCEEDED"


class Unimplemented(DomainError):
    """The RPC is in the contract but its behaviour has not landed yet."""

    code = grpc.StatusCode.UNIMPLEMENTED
    default_reason = "NOT_IMPLEMENTED_YET"


def internal_status(trace_id: str, domain: str = ERROR_DOMAIN) -> status_pb2.Status:
    """What a caller sees for a bug: no exception text, only a handle for the operator."""
    info = error_details_pb2.ErrorInfo(
        reason="INTERNAL", domain=domain, metadata={"trace_id": trace_id}
    )
    message = "internal error; the operator can find it by trace id"
    return status_pb2.Status(
        code=code_pb2.INTERNAL, message=f"{message} {trace_id}", details=[_pack(info)]
    )


def _retry_info(delay: dt.timedelta) -> error_details_pb2.RetryInfo:
    seconds = int(delay.total_seconds())
    nanos = int((delay.total_seconds() - seconds) * 1e9)
    return error_details_pb2.RetryInfo(
        retry_delay=duration_pb2.Duration(seconds=seconds, nanos=nanos)
    )


def _pack(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed
