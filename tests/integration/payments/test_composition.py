"""The composition root in the real mesh: `create_service` with the payments behaviour,
settings from the environment, and the reconciler started and stopped with the service."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from gatehouse.mesh.runner import Mesh
from gatehouse.payments import app as payments_app
from gatehouse.payments.v1 import payments_pb2, payments_pb2_grpc
from gatehouse.runtime.config import Settings
from gatehouse.runtime.identity import JWKS_KEY
from gatehouse.runtime.telemetry import create_tracer_provider
from tests.integration.payments.harness import STAFF_PERMISSIONS, TIMEOUT, card_payment
from tests.support.mesh import channel_to
from tests.support.tokens import TestIssuer


async def test_the_mesh_serves_payments_and_runs_the_reconciler(
    settings: Settings, certs_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {
        "PROVIDER_TIMEOUT": "0.2",
        "RECONCILE_AFTER": "0.3",
        "RECONCILE_INTERVAL": "0.1",
    }.items():
        monkeypatch.setenv(f"GATEHOUSE_PAYMENTS_{name}", value)
    issuer = TestIssuer()
    mesh = Mesh(
        settings.model_copy(update={"home": tmp_path}),
        ["payments"],
        tracer_provider=create_tracer_provider("payments-mesh"),
    )
    server = mesh.servers["payments"]
    app = server.definition.on_start[0].__self__  # type: ignore[attr-defined]
    assert isinstance(app, payments_app.PaymentsApp)
    ports = await mesh.start()
    try:
        assert app._reconciler is not None
        assert not app._reconciler.done()
        await mesh.infrastructure.kv.set(JWKS_KEY, issuer.jwks_json())
        metadata = issuer.bearer(subject="users/staff", permissions=list(STAFF_PERMISSIONS))
        async with channel_to(certs_dir)(ports["payments"]) as channel:
            stub = payments_pb2_grpc.PaymentsServiceStub(channel)
            created = await stub.CreatePayment(
                payments_pb2.CreatePaymentRequest(
                    payment=card_payment(card=TIMEOUT), request_id=str(uuid.uuid4())
                ),
                metadata=metadata,
            )
            processed = await stub.ProcessPayment(
                payments_pb2.ProcessPaymentRequest(
                    name=created.payment.name, request_id=str(uuid.uuid4())
                ),
                metadata=metadata,
            )
            assert processed.payment.status == payments_pb2.PAYMENT_STATUS_PROCESSING
            status = processed.payment.status
            for _ in range(100):
                await asyncio.sleep(0.05)
                got = await stub.GetPayment(
                    payments_pb2.GetPaymentRequest(name=created.payment.name), metadata=metadata
                )
                status = got.payment.status
                if status == payments_pb2.PAYMENT_STATUS_COMPLETED:
                    break
            assert status == payments_pb2.PAYMENT_STATUS_COMPLETED
    finally:
        reconciler = app._reconciler
        await mesh.stop(grace=0)
    assert reconciler is not None
    assert reconciler.done()
    assert app._reconciler is None
