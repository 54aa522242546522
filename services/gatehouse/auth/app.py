"""Composition root of the auth service: the one place its parts are created and wired."""

from __future__ import annotations

from functools import partial

from gatehouse.auth.grpc_api import AuthServicer
from gatehouse.auth.v1 import auth_pb2, auth_pb2_grpc
from gatehouse.runtime.server import ServiceDefinition, answer_unimplemented
from gatehouse.runtime.service_context import ServiceContext

PENDING_ISSUE = "issue #4 (Auth service: accounts, argon2id, asymmetric JWT with JWKS, ...)"


def create_service(context: ServiceContext) -> ServiceDefinition:
    database = context.database()
    servicer = AuthServicer()
    answer_unimplemented(servicer, auth_pb2_grpc.AuthServiceServicer, issue=PENDING_ISSUE)
    return ServiceDefinition(
        name=context.name,
        descriptor=auth_pb2.DESCRIPTOR.services_by_name["AuthService"],
        on_start=(database.start,),
        on_stop=(database.stop,),
        register=partial(auth_pb2_grpc.add_AuthServiceServicer_to_server, servicer),
    )
