"""A `request_id` for every mutating call, chosen once so that every retry repeats it.

The contracts give each mutating RPC a `string request_id` (AIP-155): the server remembers the
first result under it and replays that for a retry, so a retry never causes a second side
effect. That only holds if the id is chosen *before* the first attempt and never again.
"""

from __future__ import annotations

import uuid
from typing import cast

import grpc
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from gatehouse.clients.interceptors.base import CallConcern, CallKind

REQUEST_ID_FIELD = "request_id"


def carries_request_id(message_type: Descriptor) -> bool:
    """Whether messages of this type have a singular string `request_id` field."""
    field = message_type.fields_by_name.get(REQUEST_ID_FIELD)
    return field is not None and field.type == FieldDescriptor.TYPE_STRING and not field.is_repeated


class IdempotencyKey(CallConcern):
    """Fills an empty `request_id` of the request with a fresh UUID4 before it is sent.

    The id is written into the caller's message itself. gRPC's own retries resend the bytes
    serialized once, and an application that retries by sending the *same message object*
    again sends the same id, so both are recognised as retries. Build a new message for a new
    operation. A `request_id` the caller set is never changed.
    """

    kinds = frozenset({CallKind.UNARY_UNARY, CallKind.UNARY_STREAM})

    def __repr__(self) -> str:
        return "IdempotencyKey()"

    async def prepare(
        self, details: grpc.aio.ClientCallDetails, request: object | None
    ) -> grpc.aio.ClientCallDetails:
        if not isinstance(request, Message):
            return details
        # The stubs type DESCRIPTOR as either backend's class; at run time they are one class.
        if carries_request_id(cast("Descriptor", request.DESCRIPTOR)) and not getattr(
            request, REQUEST_ID_FIELD
        ):
            setattr(request, REQUEST_ID_FIELD, str(uuid.uuid4()))
        return details
