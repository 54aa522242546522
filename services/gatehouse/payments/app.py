"""Composition root of the payments service: the one place its parts are created and wired."""

from __future__ import annotations

from functools import partial

from gatehouse.payments.grpc_api import PaymentsServicer
from gatehouse.payments.v1 import payments_pb2, payments_pb2_grpc
from gatehouse.runtime.server import ServiceDefinition, answer_unimplemented
from gatehouse.runtime.service_context import ServiceContext

PENDING_ISSUE = "issue #8 (Payments service: idempotent payments, a strict lifecycle, ...)"


def create_service(context: ServiceContext) -> ServiceDefinition:
    database = context.database()
    servicer = PaymentsServicer()
    answer_unimplemented(servicer, payments_pb2_grpc.PaymentsServiceServicer, issue=PENDING_ISSUE)
    return ServiceDefinition(
        name=context.name,
        descriptor=payments_pb2.DESCRIPTOR.services_by_name["PaymentsService"],
        on_start=(database.start,),
        on_stop=(database.stop,),
        register=partial(payments_pb2_grpc.add_PaymentsServiceServicer_to_server, servicer),
    )
