"""gRPC entrypoint of the notifications service: a thin servicer, proto -> command -> handler ->
proto.

No RPC has behaviour yet; `app.create_service` makes each answer UNIMPLEMENTED naming the
issue that brings it.
"""

from __future__ import annotations

from gatehouse.notifications.v1 import notifications_pb2_grpc


class NotificationsServicer(notifications_pb2_grpc.NotificationsServiceServicer):
    """Email and webhook delivery, templates, preferences and delivery tracking."""
