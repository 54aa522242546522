"""gRPC entrypoint of the access service: a thin servicer, proto -> command -> handler -> proto.

No RPC has behaviour yet; `app.create_service` makes each answer UNIMPLEMENTED naming the
issue that brings it.
"""

from __future__ import annotations

from gatehouse.access.v1 import access_pb2_grpc


class AccessServicer(access_pb2_grpc.AccessServiceServicer):
    """PINs, visitors, door schedules, remote opening, emergencies and the tamper-evident access
    log.
    """
