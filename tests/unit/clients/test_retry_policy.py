"""Which methods gRPC may retry, derived from the real contracts, and the service config."""

from __future__ import annotations

import json
from typing import Any

import pytest
from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor

from gatehouse.clients.mesh import SERVICE_DESCRIPTORS
from gatehouse.clients.retry import RetryPolicy, is_retryable, service_config

AUTH = SERVICE_DESCRIPTORS["auth"]
ACCESS = SERVICE_DESCRIPTORS["access"]
MONITORING = SERVICE_DESCRIPTORS["monitoring"]
PAYMENTS = SERVICE_DESCRIPTORS["payments"]


def method(service: ServiceDescriptor, name: str) -> MethodDescriptor:
    return service.methods_by_name[name]


@pytest.mark.parametrize(
    ("service", "name"),
    [
        (AUTH, "GetUser"),  # read verb, http get
        (AUTH, "ListUsers"),
        (AUTH, "GetJwks"),
        (AUTH, "IntrospectToken"),  # read verb although POST
        (ACCESS, "VerifyAuditLog"),  # read verb although POST
        (PAYMENTS, "CreatePayment"),  # mutating, with request_id
        (PAYMENTS, "RefundPayment"),
        (AUTH, "DeleteUser"),  # http delete, with request_id
    ],
)
def test_read_only_and_request_id_methods_are_retryable(
    service: ServiceDescriptor, name: str
) -> None:
    assert is_retryable(method(service, name))


def test_login_is_retryable_because_its_contract_gives_it_a_request_id() -> None:
    # LoginRequest.request_id (field 6) is "for idempotent retries": a repeated attempt with the
    # same id gets the first attempt's result, so the rule makes Login retryable.
    # RetryPolicy.never_retry is the switch for leaving it out anyway.
    login = method(AUTH, "Login")
    assert "request_id" in login.input_type.fields_by_name
    assert is_retryable(login)


@pytest.mark.parametrize(
    ("service", "name"),
    [
        (PAYMENTS, "WatchPayment"),  # server stream, read-only by name and http get
        (MONITORING, "StreamEvents"),
        (MONITORING, "ReportReadings"),  # client stream
        (MONITORING, "ConnectDevice"),  # bidi
    ],
)
def test_streams_are_never_retryable(service: ServiceDescriptor, name: str) -> None:
    assert not is_retryable(method(service, name))


def test_every_unary_rpc_of_the_mesh_is_retryable_as_the_conventions_require() -> None:
    # docs/api-conventions.md: every mutating RPC has `request_id`. A unary RPC showing up
    # here is mutating without one: add `request_id` to its request.
    not_retryable = [
        m.full_name
        for service in SERVICE_DESCRIPTORS.values()
        for m in service.methods
        if not (m.client_streaming or m.server_streaming) and not is_retryable(m)
    ]
    assert not_retryable == []


def synthetic_service() -> ServiceDescriptor:
    """A service the real contracts do not have: mutating methods without `request_id`."""
    pool = descriptor_pool.DescriptorPool()
    for dependency in (descriptor_pb2.DESCRIPTOR, http_pb2.DESCRIPTOR, annotations_pb2.DESCRIPTOR):
        proto = descriptor_pb2.FileDescriptorProto()
        dependency.CopyToProto(proto)
        pool.Add(proto)
    file = descriptor_pb2.FileDescriptorProto(
        name="gatehouse/testing/v1/retry.proto",
        package="gatehouse.testing.v1",
        syntax="proto3",
        dependency=["google/api/annotations.proto"],
    )
    plain = file.message_type.add(name="Plain")
    plain.field.add(name="name", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING)
    bytes_id = file.message_type.add(name="BytesRequestId")
    bytes_id.field.add(
        name="request_id", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_BYTES
    )
    service = file.service.add(name="TestingService")

    def add(name: str, request: str, **rule: str) -> None:
        added = service.method.add(
            name=name,
            input_type=f".gatehouse.testing.v1.{request}",
            output_type=".gatehouse.testing.v1.Plain",
        )
        http: Any = added.options.Extensions[annotations_pb2.http]  # type: ignore[index]
        for verb, path in rule.items():
            setattr(http, verb, path)

    add("Touch", "Plain", post="/v1/things:touch")
    add("Getaway", "Plain", post="/v1/things:getaway")
    add("Search", "Plain", get="/v1/things:search")
    add("Charge", "BytesRequestId", post="/v1/things:charge")
    pool.Add(file)
    return pool.FindServiceByName("gatehouse.testing.v1.TestingService")


@pytest.mark.parametrize(
    ("name", "retryable"),
    [
        ("Touch", False),  # mutating, no request_id: like a Login without one
        ("Getaway", False),  # "Get" only as a word prefix counts
        ("Search", True),  # read-only by its http `get`
        ("Charge", False),  # a bytes request_id is not the AIP-155 string
    ],
)
def test_rule_on_methods_the_real_contracts_lack(name: str, retryable: bool) -> None:
    assert is_retryable(synthetic_service().methods_by_name[name]) is retryable


def config_of(*services: ServiceDescriptor, policy: RetryPolicy | None) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(service_config(services, policy))
    return parsed


def test_service_config_names_exactly_the_retryable_methods() -> None:
    config = config_of(AUTH, PAYMENTS, policy=RetryPolicy())
    (entry,) = config["methodConfig"]
    names = {(n["service"], n["method"]) for n in entry["name"]}
    assert ("gatehouse.payments.v1.PaymentsService", "CreatePayment") in names
    assert ("gatehouse.auth.v1.AuthService", "GetUser") in names
    assert ("gatehouse.payments.v1.PaymentsService", "WatchPayment") not in names
    expected = {
        (s.full_name, m.name) for s in (AUTH, PAYMENTS) for m in s.methods if is_retryable(m)
    }
    assert names == expected


def test_service_config_retry_policy_shape() -> None:
    policy = RetryPolicy(
        max_attempts=3,
        initial_backoff_seconds=0.05,
        max_backoff_seconds=1.0,
        backoff_multiplier=1.5,
    )
    config = config_of(PAYMENTS, policy=policy)
    (entry,) = config["methodConfig"]
    assert entry["retryPolicy"] == {
        "maxAttempts": 3,
        "initialBackoff": "0.05s",
        "maxBackoff": "1s",
        "backoffMultiplier": 1.5,
        "retryableStatusCodes": ["UNAVAILABLE"],
    }
    assert "timeout" not in entry  # deadlines come from the interceptor, never for streams
    assert config["retryThrottling"] == {"maxTokens": 10, "tokenRatio": 0.1}


def test_never_retry_leaves_a_method_out() -> None:
    policy = RetryPolicy(never_retry=frozenset({"gatehouse.auth.v1.AuthService.Login"}))
    (entry,) = config_of(AUTH, policy=policy)["methodConfig"]
    methods = {n["method"] for n in entry["name"]}
    assert "Login" not in methods
    assert "Register" in methods


def test_without_services_or_without_a_policy_nothing_is_retried() -> None:
    assert config_of(policy=RetryPolicy()) == {"methodConfig": []}
    assert config_of(PAYMENTS, policy=None) == {"methodConfig": []}


@pytest.mark.parametrize(
    "bad",
    [
        {"max_attempts": 1},
        {"max_attempts": 6},
        {"initial_backoff_seconds": 0},
        {"backoff_multiplier": 0},
        {"retryable_status_codes": ()},
        {"retryable_status_codes": ("UNAVAILABLE", "NOT_A_CODE")},
        {"retryable_status_codes": ("OK",)},
    ],
)
def test_invalid_policies_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"."):
        RetryPolicy(**bad)
