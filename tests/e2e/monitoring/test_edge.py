"""The monitoring service behind the real Envoy edge: the live feed over REST (NDJSON, read
line by line, resumable), and a device session (bidirectional gRPC) through the edge."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import queue
import socket
import ssl
import threading
from typing import Any

import grpc
import pytest

from gatehouse.monitoring.simulator import SimulatedDevice
from gatehouse.monitoring.v1 import monitoring_pb2
from gatehouse.runtime.tls import issue_device_certificate
from tests.e2e.edge.conftest import Edge, StartEdge, issuer, mesh, start_edge
from tests.support.tokens import TestIssuer

__all__ = ["issuer", "mesh", "start_edge"]


@pytest.fixture
async def edge(start_edge: StartEdge) -> Edge:
    return await start_edge()


class NdjsonReader:
    """A REST stream read line by line in a thread (as the docs show), lines into a queue."""

    def __init__(self, edge: Edge, path: str, token: str) -> None:
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        context = ssl.create_default_context(cafile=str(edge.certs / "ca.pem"))
        self.connection = http.client.HTTPSConnection(
            "localhost", edge.port, context=context, timeout=30
        )
        self.connection.request("GET", path, headers={"authorization": f"Bearer {token}"})
        self.response = self.connection.getresponse()
        self.status = self.response.status
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for line in self.response:
                if line.strip():
                    self.lines.put(json.loads(line))
        except Exception:
            pass
        self.lines.put(None)

    async def next_event(self, timeout: float = 20.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                message = await asyncio.to_thread(self.lines.get, True, timeout)
                assert message is not None, "the stream ended"
                if "event" in message:
                    event: dict[str, Any] = message["event"]
                    return event

    async def close(self) -> None:
        # Shut the socket down first: that wakes the reading thread. Closing the connection
        # alone would wait for the thread's read (and block the event loop the services share
        # with this test until the next heartbeat).
        sock = self.connection.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        await asyncio.to_thread(self._thread.join, 5)
        self.connection.close()


async def _raise(edge: Edge, token: str, building: str, summary: str) -> dict[str, Any]:
    response = await edge.rest(
        "POST",
        f"/v1/{building}/alerts:raise",
        json.dumps({"severity": "SEVERITY_HIGH", "summary": summary}),
        token=token,
    )
    assert response.status == 200, response.body
    alert: dict[str, Any] = response.json()["alert"]
    return alert


async def test_live_feed_over_rest_is_ndjson_and_resumes(edge: Edge, issuer: TestIssuer) -> None:
    token = issuer.token(permissions=["monitoring.*"])
    created = await edge.rest(
        "POST",
        "/v1/buildings",
        json.dumps({"displayName": "Edge tower", "timeZone": "Europe/Madrid"}),
        token=token,
    )
    assert created.status == 200, created.body
    building = created.json()["building"]["name"]
    path = f"/v1/{building}/events:stream"
    reader = await asyncio.to_thread(NdjsonReader, edge, path, token)
    try:
        assert reader.status == 200
        first = await _raise(edge, token, building, "first")
        second = await _raise(edge, token, building, "second")
        seen = [await reader.next_event(), await reader.next_event()]
    finally:
        await reader.close()
    assert [item["type"] for item in seen] == ["alert.triggered", "alert.triggered"]
    assert [item["summary"] for item in seen] == ["Alert: first", "Alert: second"]
    assert seen[0]["severity"] == "SEVERITY_HIGH"
    assert seen[0]["data"]["alert"]["name"] == first["name"]
    # Reconnect after the first item: the second comes again, then what is new.
    resumed = await asyncio.to_thread(
        NdjsonReader, edge, f"{path}?resumeAfter={seen[0]['id']}", token
    )
    try:
        third = await _raise(edge, token, building, "third")
        again = [await resumed.next_event(), await resumed.next_event()]
    finally:
        await resumed.close()
    assert [item["data"]["alert"]["name"] for item in again] == [second["name"], third["name"]]
    # A resume point from nowhere: an ordinary REST error before the stream starts.
    refused = await edge.rest("GET", f"{path}?resumeAfter=01ARZ3NDEKTSV4RRFFQ69G5FAV", token=token)
    assert refused.status == 400
    assert refused.json()["details"][0]["reason"] == "RESUME_POINT_UNAVAILABLE"


async def test_device_session_through_the_edge(edge: Edge, issuer: TestIssuer) -> None:
    token = issuer.token(permissions=["monitoring.*"])
    created = await edge.rest(
        "POST",
        "/v1/buildings",
        json.dumps({"displayName": "Edge tower", "timeZone": "UTC"}),
        token=token,
    )
    building = created.json()["building"]["name"]
    # RegisterDevice's body is the device; the credential type rides in the query string.
    registered = await edge.rest(
        "POST",
        f"/v1/{building}/devices?credentialType=DEVICE_CREDENTIAL_TYPE_TOKEN",
        json.dumps({"kind": "DEVICE_KIND_CAMERA"}),
        token=token,
    )
    assert registered.status == 200, registered.body
    body = registered.json()
    device, device_token = body["device"]["name"], body["deviceToken"]
    async with edge.channel() as channel:
        simulated = SimulatedDevice(channel, device, token=device_token)
        welcome = await simulated.connect()
        assert welcome.session_id
        await simulated.heartbeat()
        await simulated.event(monitoring_pb2.DEVICE_EVENT_KIND_TAMPER)

        async def alerted() -> bool:
            listed = await edge.rest("GET", f"/v1/{building}/alerts", token=token)
            return bool(listed.json().get("alerts"))

        for _ in range(200):  # up to 20 s
            if await alerted():
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail("the tamper alert never showed up")
        await simulated.close()
        assert await simulated.wait_ended() is None


def _device_channel(edge: Edge, device: str) -> grpc.aio.Channel:
    """A channel to the edge presenting `device`'s own certificate (the dev CA's)."""
    paths = issue_device_certificate(edge.certs, device)
    ca, chain, key = paths.read()
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=chain
    )
    return grpc.aio.secure_channel(f"localhost:{edge.port}", credentials)


async def test_a_device_certificate_shown_to_the_edge_identifies_the_device(
    edge: Edge, issuer: TestIssuer
) -> None:
    token = issuer.token(permissions=["monitoring.*"])
    created = await edge.rest(
        "POST",
        "/v1/buildings",
        json.dumps({"displayName": "Certified tower", "timeZone": "UTC"}),
        token=token,
    )
    building = created.json()["building"]["name"]
    # The default credential: the device's certificate, no token.
    registered = await edge.rest(
        "POST", f"/v1/{building}/devices", json.dumps({"kind": "DEVICE_KIND_SENSOR"}), token=token
    )
    assert registered.status == 200, registered.body
    device = registered.json()["device"]["name"]
    async with _device_channel(edge, device) as channel:
        simulated = SimulatedDevice(channel, device)
        welcome = await simulated.connect()
        assert welcome.session_id
        await simulated.heartbeat()
        await simulated.close()
    # Envoy vouches for the certificate it verified, and for nothing else: another device's
    # certificate does not make its holder this device.
    async with _device_channel(edge, f"{building}/devices/impostor") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await SimulatedDevice(channel, device).connect()
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
