from __future__ import annotations

import datetime as dt

import grpc
from google.rpc import error_details_pb2

from gatehouse.runtime.errors import (
    ERROR_DOMAIN,
    FieldViolation,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    internal_status,
)


def _unpack(status_details: object, message_type: type) -> list:  # type: ignore[type-arg]
    found = []
    for detail in status_details:  # type: ignore[attr-defined]
        message = message_type()
        if detail.Is(message.DESCRIPTOR):
            detail.Unpack(message)
            found.append(message)
    return found


def test_invalid_argument_carries_bad_request_and_error_info() -> None:
    error = InvalidArgument([FieldViolation("amount.currency_code", "must be ISO 4217")])
    status = error.to_status()
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "amount.currency_code: must be ISO 4217" in status.message
    (bad_request,) = _unpack(status.details, error_details_pb2.BadRequest)
    assert [(v.field, v.description) for v in bad_request.field_violations] == [
        ("amount.currency_code", "must be ISO 4217")
    ]
    (info,) = _unpack(status.details, error_details_pb2.ErrorInfo)
    assert (info.reason, info.domain) == ("INVALID_FIELD", ERROR_DOMAIN)


def test_not_found_names_the_resource() -> None:
    status = NotFound("users/42", reason="USER_NOT_FOUND").to_status()
    assert status.code == grpc.StatusCode.NOT_FOUND.value[0]
    (resource,) = _unpack(status.details, error_details_pb2.ResourceInfo)
    assert resource.resource_name == "users/42"
    (info,) = _unpack(status.details, error_details_pb2.ErrorInfo)
    assert info.reason == "USER_NOT_FOUND"


def test_resource_exhausted_says_when_to_retry() -> None:
    error = ResourceExhausted(
        "too many attempts", retry_after=dt.timedelta(seconds=1.5), reason="ACCOUNT_LOCKED"
    )
    (retry,) = _unpack(error.to_status().details, error_details_pb2.RetryInfo)
    assert (retry.retry_delay.seconds, retry.retry_delay.nanos) == (1, 500_000_000)


def test_internal_status_reveals_nothing_but_the_trace_id() -> None:
    status = internal_status("abc123")
    assert status.code == grpc.StatusCode.INTERNAL.value[0]
    assert "abc123" in status.message
    (info,) = _unpack(status.details, error_details_pb2.ErrorInfo)
    assert dict(info.metadata) == {"trace_id": "abc123"}
