"""Composition root of the notifications service: the one place its parts are created and wired."""

from __future__ import annotations

from functools import partial

from gatehouse.notifications.grpc_api import NotificationsServicer
from gatehouse.notifications.v1 import notifications_pb2, notifications_pb2_grpc
from gatehouse.runtime.server import ServiceDefinition, answer_unimplemented
from gatehouse.runtime.service_context import ServiceContext

PENDING_ISSUE = "issue #9 (Notifications service: real SMTP and webhook delivery, ...)"


def create_service(context: ServiceContext) -> ServiceDefinition:
    database = context.database()
    servicer = NotificationsServicer()
    answer_unimplemented(
        servicer, notifications_pb2_grpc.NotificationsServiceServicer, issue=PENDING_ISSUE
    )
    return ServiceDefinition(
        name=context.name,
        descriptor=notifications_pb2.DESCRIPTOR.services_by_name["NotificationsService"],
        on_start=(database.start,),
        on_stop=(database.stop,),
        register=partial(
            notifications_pb2_grpc.add_NotificationsServiceServicer_to_server, servicer
        ),
    )
