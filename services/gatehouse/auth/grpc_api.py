"""gRPC entrypoint of the auth service: a thin servicer, proto -> command -> handler -> proto.

No RPC has behaviour yet; `app.create_service` makes each answer UNIMPLEMENTED naming the
issue that brings it.
"""

from __future__ import annotations

from gatehouse.auth.v1 import auth_pb2_grpc


class AuthServicer(auth_pb2_grpc.AuthServiceServicer):
    """Accounts, sessions, tokens, TOTP, roles and the security audit trail."""
