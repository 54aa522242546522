"""Calling any method of any Gatehouse service from its descriptor, and reading rich errors."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, cast

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from gatehouse.access.v1 import access_pb2
from gatehouse.auth.v1 import auth_pb2
from gatehouse.monitoring.v1 import monitoring_pb2
from gatehouse.notifications.v1 import notifications_pb2
from gatehouse.payments.v1 import payments_pb2
from gatehouse.runtime.validation import http_rule, http_template

SERVICE_DESCRIPTORS: dict[str, ServiceDescriptor] = {
    "auth": auth_pb2.DESCRIPTOR.services_by_name["AuthService"],
    "access": access_pb2.DESCRIPTOR.services_by_name["AccessService"],
    "monitoring": monitoring_pb2.DESCRIPTOR.services_by_name["MonitoringService"],
    "payments": payments_pb2.DESCRIPTOR.services_by_name["PaymentsService"],
    "notifications": notifications_pb2.DESCRIPTOR.services_by_name["NotificationsService"],
}
_VARIABLE = re.compile(r"\{([a-z_][a-z0-9_.]*)(?:=([^}]*))?\}")


def valid_request(method: MethodDescriptor) -> Message:
    """A request that passes the contract's own rules: path-bound fields filled in."""
    request = message_factory.GetMessageClass(method.input_type)()
    rule = http_rule(method)
    assert rule is not None, f"{method.full_name} has no google.api.http annotation"
    for field_path, shape in _VARIABLE.findall(http_template(rule)):
        target: Any = request
        *parents, leaf = field_path.split(".")
        for parent in parents:
            target = getattr(target, parent)
        setattr(target, leaf, (shape or "*").replace("**", "x").replace("*", "x1"))
    return request


async def call(
    channel: grpc.aio.Channel,
    method: MethodDescriptor,
    request: Message,
    metadata: tuple[tuple[str, str], ...] = (),
) -> Any:
    """Invoke `method` whatever its streaming shape; return the responses."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    response_type = message_factory.GetMessageClass(method.output_type)
    serialize = type(request).SerializeToString
    if method.client_streaming:

        async def requests() -> Any:
            yield request

        if method.server_streaming:
            bidi = channel.stream_stream(path, serialize, response_type.FromString)(
                requests(), metadata=metadata
            )
            return [r async for r in bidi]
        return await channel.stream_unary(path, serialize, response_type.FromString)(
            requests(), metadata=metadata
        )
    if method.server_streaming:
        stream = channel.unary_stream(path, serialize, response_type.FromString)(
            request, metadata=metadata
        )
        return [r async for r in stream]
    return await channel.unary_unary(path, serialize, response_type.FromString)(
        request, metadata=metadata
    )


def all_methods() -> Iterator[tuple[str, MethodDescriptor]]:
    for name, service in SERVICE_DESCRIPTORS.items():
        for method in service.methods:
            yield name, method


def rich_status(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    status: status_pb2.Status | None = rpc_status.from_call(error)
    assert status is not None, "the error carries no google.rpc.Status details"
    return status


def detail(status: status_pb2.Status, message_type: type[Message]) -> Any:
    for packed in status.details:
        candidate = message_type()
        if packed.Is(cast("Descriptor", candidate.DESCRIPTOR)):
            packed.Unpack(candidate)
            return candidate
    raise AssertionError(f"no {message_type.__name__} in the status details")


def error_info(status: status_pb2.Status) -> error_details_pb2.ErrorInfo:
    info: error_details_pb2.ErrorInfo = detail(status, error_details_pb2.ErrorInfo)
    return info
