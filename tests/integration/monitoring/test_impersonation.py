"""One device identity can never act for another device."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from gatehouse.monitoring.simulator import SimulatedDevice, random_readings
from gatehouse.monitoring.v1 import monitoring_pb2, monitoring_pb2_grpc
from tests.integration.monitoring.harness import MonitoringHarness
from tests.support.grpc_calls import error_info, rich_status


def reason(error: Exception | None) -> tuple[grpc.StatusCode, str]:
    assert isinstance(error, grpc.aio.AioRpcError), error
    return error.code(), error_info(rich_status(error)).reason


async def _refused(simulated: SimulatedDevice) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await simulated.connect()
    return raised.value


async def test_device_certificate_cannot_connect_as_another_device(
    monitoring: MonitoringHarness,
) -> None:
    building = await monitoring.building()
    d1, _ = await monitoring.register(building.name)
    d2, _ = await monitoring.register(building.name)
    channel = await monitoring.device_channel(d1.name)
    error = await _refused(SimulatedDevice(channel, d2.name))
    assert reason(error) == (grpc.StatusCode.PERMISSION_DENIED, "DEVICE_IDENTITY_MISMATCH")
    assert (await monitoring.get_device(d2.name)).state == monitoring_pb2.DEVICE_STATE_UNKNOWN


async def test_device_token_cannot_connect_as_another_device(
    monitoring: MonitoringHarness,
) -> None:
    building = await monitoring.building()
    d1, token1 = await monitoring.register(building.name, token=True)
    d2, _ = await monitoring.register(building.name, token=True)
    channel = await monitoring.channel()
    error = await _refused(SimulatedDevice(channel, d2.name, token=token1))
    assert reason(error) == (grpc.StatusCode.PERMISSION_DENIED, "DEVICE_IDENTITY_MISMATCH")
    # The token does work for its own device.
    own = SimulatedDevice(channel, d1.name, token=token1)
    await own.connect()
    await own.close()


async def test_certificate_and_token_of_different_devices(monitoring: MonitoringHarness) -> None:
    building = await monitoring.building()
    d1, _ = await monitoring.register(building.name)
    d2, token2 = await monitoring.register(building.name, token=True)
    channel = await monitoring.device_channel(d1.name)
    for name in (d1.name, d2.name):
        error = await _refused(SimulatedDevice(channel, name, token=token2))
        assert reason(error) == (grpc.StatusCode.PERMISSION_DENIED, "DEVICE_IDENTITY_MISMATCH")


async def test_unknown_or_wrong_kind_of_credential(monitoring: MonitoringHarness) -> None:
    building = await monitoring.building()
    cert_device, _ = await monitoring.register(building.name)
    token_device, _ = await monitoring.register(building.name, token=True)
    channel = await monitoring.channel()
    for name, token in (
        (token_device.name, "gdt_not-a-real-token"),
        (token_device.name, "garbage"),
        # A certificate device cannot use a token at all (it has none).
        (cert_device.name, "gdt_" + "x" * 43),
    ):
        error = await _refused(SimulatedDevice(channel, name, token=token))
        assert reason(error) == (grpc.StatusCode.UNAUTHENTICATED, "DEVICE_CREDENTIALS_INVALID")
    # A token device cannot get in with a certificate alone.
    cert_channel = await monitoring.device_channel(token_device.name)
    error = await _refused(SimulatedDevice(cert_channel, token_device.name))
    assert reason(error) == (grpc.StatusCode.UNAUTHENTICATED, "DEVICE_CREDENTIALS_INVALID")


async def test_unregistered_device_certificate(monitoring: MonitoringHarness) -> None:
    building = await monitoring.building()
    ghost = f"{building.name}/devices/ghost"
    channel = await monitoring.device_channel(ghost)
    error = await _refused(SimulatedDevice(channel, ghost))
    assert reason(error) == (grpc.StatusCode.NOT_FOUND, "DEVICE_NOT_FOUND")


async def test_readings_cannot_be_reported_for_another_device(
    monitoring: MonitoringHarness,
) -> None:
    building = await monitoring.building()
    d1, _token1 = await monitoring.register(building.name, monitoring_pb2.DEVICE_KIND_SENSOR)
    d2, _ = await monitoring.register(building.name, monitoring_pb2.DEVICE_KIND_SENSOR)
    channel = await monitoring.device_channel(d1.name)
    stub = monitoring_pb2_grpc.MonitoringServiceStub(channel)

    async def as_d2() -> AsyncIterator[monitoring_pb2.ReportReadingsRequest]:
        yield monitoring_pb2.ReportReadingsRequest(name=d2.name, batch=random_readings(3))

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ReportReadings(as_d2())
    assert reason(raised.value) == (grpc.StatusCode.PERMISSION_DENIED, "DEVICE_IDENTITY_MISMATCH")

    async def switching() -> AsyncIterator[monitoring_pb2.ReportReadingsRequest]:
        yield monitoring_pb2.ReportReadingsRequest(name=d1.name, batch=random_readings(3))
        yield monitoring_pb2.ReportReadingsRequest(name=d2.name, batch=random_readings(3))

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ReportReadings(switching())
    assert reason(raised.value) == (grpc.StatusCode.PERMISSION_DENIED, "DEVICE_IDENTITY_MISMATCH")


async def test_a_user_token_is_not_a_device_credential(monitoring: MonitoringHarness) -> None:
    building = await monitoring.building()
    device, _ = await monitoring.register(building.name)
    channel = await monitoring.channel()
    stub = monitoring_pb2_grpc.MonitoringServiceStub(channel)

    async def hello() -> AsyncIterator[monitoring_pb2.ConnectDeviceRequest]:
        yield monitoring_pb2.ConnectDeviceRequest(
            name=device.name, message_id="m", hello=monitoring_pb2.DeviceHello()
        )

    call = stub.ConnectDevice(hello(), metadata=monitoring.admin_metadata("*"))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for _ in call:
            pass
    assert reason(raised.value) == (grpc.StatusCode.UNAUTHENTICATED, "DEVICE_IDENTITY_MISSING")
