"""Composition root of the monitoring service: the one place its parts are created and wired."""

from __future__ import annotations

from functools import partial

from gatehouse.monitoring.grpc_api import MonitoringServicer
from gatehouse.monitoring.v1 import monitoring_pb2, monitoring_pb2_grpc
from gatehouse.runtime.server import ServiceDefinition, answer_unimplemented
from gatehouse.runtime.service_context import ServiceContext

PENDING_ISSUE = "issue #7 (Monitoring service: buildings and devices, device sessions, ...)"


def create_service(context: ServiceContext) -> ServiceDefinition:
    database = context.database()
    servicer = MonitoringServicer()
    answer_unimplemented(
        servicer, monitoring_pb2_grpc.MonitoringServiceServicer, issue=PENDING_ISSUE
    )
    return ServiceDefinition(
        name=context.name,
        descriptor=monitoring_pb2.DESCRIPTOR.services_by_name["MonitoringService"],
        on_start=(database.start,),
        on_stop=(database.stop,),
        register=partial(monitoring_pb2_grpc.add_MonitoringServiceServicer_to_server, servicer),
    )
