"""Typed async clients for the Gatehouse services: what internal callers import.

Callers never build channels or metadata by hand. Say who you are and where the services are;
use the generated, fully typed stubs:

    from pathlib import Path

    from gatehouse.auth.v1 import auth_pb2
    from gatehouse.clients import (
        ClientCredentials, GatehouseClients, Targets, bearer_token, connect,
    )
    from gatehouse.payments.v1 import payments_pb2

    async def pay(token: str) -> None:
        credentials = ClientCredentials.from_directory(Path(".gatehouse/certs"), "client")
        async with GatehouseClients(
            credentials,
            targets=Targets.from_env(),          # GATEHOUSE_PAYMENTS_TARGET=host:port, ...
            token_provider=bearer_token(token),  # or an async callable that refreshes
        ) as mesh:
            created = await mesh.payments.CreatePayment(
                payments_pb2.CreatePaymentRequest(payment=...)  # request_id filled for you
            )
            async for change in mesh.payments.WatchPayment(
                payments_pb2.WatchPaymentRequest(name=created.payment.name)
            ):
                ...

    # Just one service (target from GATEHOUSE_AUTH_TARGET, else 127.0.0.1:50051):
    async with connect("auth", credentials) as auth:
        jwks = await auth.GetJwks(auth_pb2.GetJwksRequest())

`mesh.payments` is `PaymentsServiceAsyncStub`, so requests, responses and streams are checked
by mypy. `mesh.channel("payments")` is the raw channel, for health or reflection stubs.

Every call then gets:
- mTLS with the given identity, and `authorization: Bearer <token>` from the provider;
- a default deadline (10 s) on unary and client-streaming calls that set no `timeout`;
  server-streaming and bidirectional calls get none, as they are long-lived;
- an empty `request_id` filled with a UUID4, written into your message: resending the same
  message object is a retry (the server replays the first result), a new operation needs a
  new message;
- gRPC retries on UNAVAILABLE for the methods the contracts make safe to repeat (read-only,
  or with a `request_id`; see `is_retryable`), with exponential backoff inside the deadline.

Create and enter clients inside the running event loop (grpc/grpc#32480).
"""

from gatehouse.clients.channel import ChannelFactory, ClientCredentials
from gatehouse.clients.interceptors import TokenProvider, bearer_token
from gatehouse.clients.mesh import (
    DEFAULT_UNARY_TIMEOUT,
    GatehouseClients,
    ServiceName,
    Targets,
    connect,
)
from gatehouse.clients.retry import RetryPolicy, is_retryable, service_config

__all__ = [
    "DEFAULT_UNARY_TIMEOUT",
    "ChannelFactory",
    "ClientCredentials",
    "GatehouseClients",
    "RetryPolicy",
    "ServiceName",
    "Targets",
    "TokenProvider",
    "bearer_token",
    "connect",
    "is_retryable",
    "service_config",
]
