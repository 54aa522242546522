"""gRPC entrypoint of the monitoring service: a thin servicer, proto -> command -> handler -> proto.

No RPC has behaviour yet; `app.create_service` makes each answer UNIMPLEMENTED naming the
issue that brings it.
"""

from __future__ import annotations

from gatehouse.monitoring.v1 import monitoring_pb2_grpc


class MonitoringServicer(monitoring_pb2_grpc.MonitoringServiceServicer):
    """Buildings, devices and their live sessions, alerts and the live event feed."""
