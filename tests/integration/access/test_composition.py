"""The composition root in the real mesh: `create_service` with the access behaviour, its key
created under the home, its consumer started, and monitoring (buildings, doors) reached over
mTLS with access's own identity: while monitoring is unreachable, calls that need it answer
UNAVAILABLE with RetryInfo, never INTERNAL."""

from __future__ import annotations

import uuid
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2

from gatehouse.access import app as access_app
from gatehouse.access.v1 import access_pb2, access_pb2_grpc
from gatehouse.mesh.runner import Mesh
from gatehouse.runtime.config import Settings
from gatehouse.runtime.identity import JWKS_KEY
from gatehouse.runtime.telemetry import create_tracer_provider
from tests.support.grpc_calls import detail, error_info, rich_status
from tests.support.mesh import channel_to
from tests.support.tokens import TestIssuer


async def test_the_mesh_serves_access_and_reports_monitoring_unreachable(
    settings: Settings, certs_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nothing listens there: the refused connection must become UNAVAILABLE.
    monkeypatch.setenv("GATEHOUSE_ACCESS_MONITORING_TARGET", "127.0.0.1:1")
    issuer = TestIssuer()
    mesh = Mesh(
        settings.model_copy(update={"home": tmp_path}),
        ["access"],
        tracer_provider=create_tracer_provider("access-mesh"),
    )
    server = mesh.servers["access"]
    app = server.definition.on_start[0].__self__  # type: ignore[attr-defined]
    assert isinstance(app, access_app.AccessApp)
    ports = await mesh.start()
    try:
        assert (tmp_path / "keys" / "access.key").is_file()
        await mesh.infrastructure.kv.set(JWKS_KEY, issuer.jwks_json())
        async with channel_to(certs_dir)(ports["access"]) as channel:
            stub = access_pb2_grpc.AccessServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.IssuePin(
                    access_pb2.IssuePinRequest(
                        parent="buildings/b1",
                        grant=access_pb2.Grant(
                            holder="users/ana", doors=["buildings/b1/doors/main"]
                        ),
                        request_id=str(uuid.uuid4()),
                    ),
                    metadata=issuer.bearer(permissions=["access.*"]),
                )
    finally:
        await mesh.stop(grace=0)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    status = rich_status(raised.value)
    assert error_info(status).reason == "DIRECTORY_UNAVAILABLE"
    assert detail(status, error_details_pb2.RetryInfo).retry_delay.seconds > 0
