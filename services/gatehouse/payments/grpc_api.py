"""gRPC entrypoint of the payments service: a thin servicer, proto -> command -> handler -> proto.

No RPC has behaviour yet; `app.create_service` makes each answer UNIMPLEMENTED naming the
issue that brings it.
"""

from __future__ import annotations

from gatehouse.payments.v1 import payments_pb2_grpc


class PaymentsServicer(payments_pb2_grpc.PaymentsServiceServicer):
    """Payments, their lifecycle, refunds, the provider adapter and the ledger."""
