"""Conflicts tell a client when to come back (RetryInfo), like rate limits do."""

from __future__ import annotations

from datetime import timedelta

import grpc
from google.rpc import error_details_pb2

from gatehouse.runtime.errors import Aborted, RequestInProgress


def _retry_info(error: Aborted) -> error_details_pb2.RetryInfo | None:
    for packed in error.to_status("payments.gatehouse").details:
        info = error_details_pb2.RetryInfo()
        if packed.Unpack(info):
            return info
    return None


def test_a_twin_still_running_says_when_to_retry() -> None:
    twin = RequestInProgress(timedelta(milliseconds=250))
    assert twin.code == grpc.StatusCode.ABORTED
    assert twin.reason == "REQUEST_IN_PROGRESS"
    info = _retry_info(twin)
    assert info is not None
    assert info.retry_delay.ToTimedelta() == timedelta(milliseconds=250)


def test_a_conflict_without_a_hint_carries_none() -> None:
    assert _retry_info(Aborted("changed", reason="ETAG_MISMATCH")) is None
