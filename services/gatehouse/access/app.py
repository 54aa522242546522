"""Composition root of the access service: the one place its parts are created and wired."""

from __future__ import annotations

from functools import partial

from gatehouse.access.grpc_api import AccessServicer
from gatehouse.access.v1 import access_pb2, access_pb2_grpc
from gatehouse.runtime.server import ServiceDefinition, answer_unimplemented
from gatehouse.runtime.service_context import ServiceContext

PENDING_ISSUE = "issue #6 (Access service: PINs, visitors, door schedules, ...)"


def create_service(context: ServiceContext) -> ServiceDefinition:
    database = context.database()
    servicer = AccessServicer()
    answer_unimplemented(servicer, access_pb2_grpc.AccessServiceServicer, issue=PENDING_ISSUE)
    return ServiceDefinition(
        name=context.name,
        descriptor=access_pb2.DESCRIPTOR.services_by_name["AccessService"],
        on_start=(database.start,),
        on_stop=(database.stop,),
        register=partial(access_pb2_grpc.add_AccessServiceServicer_to_server, servicer),
    )
