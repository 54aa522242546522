"""The principal use cases decide with, and what makes a retry the same request."""

from __future__ import annotations

from gatehouse.payments.v1 import payments_pb2
from gatehouse.runtime.principal import Principal, request_fingerprint


def test_a_retry_is_the_same_request_whatever_its_request_id() -> None:
    first = payments_pb2.ProcessPaymentRequest(name="payments/p1", request_id="a")
    retry = payments_pb2.ProcessPaymentRequest(name="payments/p1", request_id="b")
    other = payments_pb2.ProcessPaymentRequest(name="payments/p2", request_id="a")
    assert request_fingerprint(first) == request_fingerprint(retry)
    assert request_fingerprint(first) != request_fingerprint(other)
    assert first.request_id == "a"  # the caller's message is left as it was


def test_permissions_and_identity() -> None:
    staff = Principal(user="users/s", permissions=("payments.*",))
    assert staff.has("payments.refund")
    assert not staff.has("auth.users.read")
    assert staff.identity == "users/s"
    assert Principal(service="spiffe://gatehouse/access").identity == "spiffe://gatehouse/access"
    assert Principal().identity == "anonymous"
