"""Client interceptors and the typed entry point, without a server."""

from __future__ import annotations

import uuid

import grpc
import pytest

from gatehouse.auth.v1 import auth_pb2
from gatehouse.clients import ClientCredentials, GatehouseClients, Targets, bearer_token
from gatehouse.clients.channel import ChannelFactory
from gatehouse.clients.interceptors import (
    BearerToken,
    CallConcern,
    DefaultDeadline,
    IdempotencyKey,
    interceptors_for,
)
from gatehouse.payments.v1 import payments_pb2

INTERCEPTOR_KINDS = (
    grpc.aio.UnaryUnaryClientInterceptor,
    grpc.aio.UnaryStreamClientInterceptor,
    grpc.aio.StreamUnaryClientInterceptor,
    grpc.aio.StreamStreamClientInterceptor,
)
CREDENTIALS = ClientCredentials(ca=b"ca", certificate_chain=b"cert", private_key=b"secret-key")


def details(
    timeout: float | None = None, metadata: grpc.aio.Metadata | None = None
) -> grpc.aio.ClientCallDetails:
    return grpc.aio.ClientCallDetails("/gatehouse.x.v1.X/Y", timeout, metadata, None, None)


def kinds_of(concern: CallConcern) -> list[type]:
    found: list[type] = []
    for interceptor in interceptors_for([concern]):
        # grpc.aio files an interceptor under the FIRST kind it implements (grpc/grpc#31442),
        # so each must implement exactly one.
        (kind,) = [k for k in INTERCEPTOR_KINDS if isinstance(interceptor, k)]
        found.append(kind)
    return found


def test_a_concern_for_all_kinds_becomes_one_interceptor_per_kind() -> None:
    assert kinds_of(BearerToken(bearer_token("t"))) == list(INTERCEPTOR_KINDS)


def test_default_deadline_never_applies_to_streamed_responses() -> None:
    assert kinds_of(DefaultDeadline(5)) == [
        grpc.aio.UnaryUnaryClientInterceptor,
        grpc.aio.StreamUnaryClientInterceptor,
    ]


async def test_default_deadline_fills_in_only_a_missing_timeout() -> None:
    deadline = DefaultDeadline(5)
    assert (await deadline.prepare(details(), None)).timeout == 5
    assert (await deadline.prepare(details(timeout=60), None)).timeout == 60
    with pytest.raises(ValueError, match="positive"):
        DefaultDeadline(0)


async def test_bearer_token_adds_the_token_but_keeps_a_forwarded_one() -> None:
    concern = BearerToken(bearer_token("mine"))
    added = await concern.prepare(details(), None)
    assert added.metadata is not None
    assert added.metadata.get_all("authorization") == ["Bearer mine"]
    forwarded = grpc.aio.Metadata(("authorization", "Bearer end-user"))
    kept = await concern.prepare(details(metadata=forwarded), None)
    assert kept.metadata is not None
    assert kept.metadata.get_all("authorization") == ["Bearer end-user"]


async def test_bearer_token_sends_nothing_when_the_provider_has_no_token() -> None:
    async def no_token() -> str | None:
        return None

    assert (await BearerToken(no_token).prepare(details(), None)).metadata is None


async def test_idempotency_key_fills_an_empty_request_id_once() -> None:
    key = IdempotencyKey()
    request = payments_pb2.CreatePaymentRequest()
    await key.prepare(details(), request)
    first = request.request_id
    assert uuid.UUID(first).version == 4
    # Sending the same message again is a retry: it keeps its id.
    await key.prepare(details(), request)
    assert request.request_id == first


async def test_idempotency_key_keeps_a_callers_id_and_ignores_other_messages() -> None:
    key = IdempotencyKey()
    chosen = payments_pb2.CreatePaymentRequest(request_id="00000000-0000-4000-8000-000000000000")
    await key.prepare(details(), chosen)
    assert chosen.request_id == "00000000-0000-4000-8000-000000000000"
    read = auth_pb2.GetUserRequest(name="users/u1")
    await key.prepare(details(), read)
    assert read == auth_pb2.GetUserRequest(name="users/u1")
    await key.prepare(details(), None)  # a client stream: nothing to fill


def test_targets_default_to_the_embedded_ports_and_read_the_environment() -> None:
    assert Targets().of("auth") == "127.0.0.1:50051"
    assert Targets().of("notifications") == "127.0.0.1:50055"
    targets = Targets.from_env(
        {"GATEHOUSE_PAYMENTS_TARGET": "payments.svc:443", "GATEHOUSE_AUTH_TARGET": "  "}
    )
    assert targets.of("payments") == "payments.svc:443"
    assert targets.of("auth") == "127.0.0.1:50051"  # blank means unset


async def test_clients_are_usable_only_inside_async_with() -> None:
    clients = GatehouseClients(CREDENTIALS, targets=Targets())
    with pytest.raises(RuntimeError, match="not entered"):
        _ = clients.auth
    await clients.close()  # closing what never opened is harmless


def test_channels_are_refused_outside_the_running_loop() -> None:
    with pytest.raises(RuntimeError, match="running event loop"):
        ChannelFactory(CREDENTIALS).channel("127.0.0.1:1")


def test_credentials_never_show_the_private_key() -> None:
    assert "secret-key" not in repr(CREDENTIALS)
