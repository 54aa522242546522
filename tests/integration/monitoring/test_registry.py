"""Buildings and devices: create, read, list, device credentials."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from gatehouse.common.v1 import common_pb2
from gatehouse.monitoring.v1 import monitoring_pb2
from tests.integration.monitoring.harness import MonitoringHarness, request_id
from tests.support.grpc_calls import error_info, rich_status


async def test_create_and_get_building(monitoring: MonitoringHarness) -> None:
    building = await monitoring.building(display_name="Harbour Tower", time_zone="Europe/Madrid")
    assert building.name.startswith("buildings/")
    stub = await monitoring.stub()
    got = (await stub.GetBuilding(monitoring_pb2.GetBuildingRequest(name=building.name))).building
    assert got == building


async def test_unknown_time_zone_is_refused(monitoring: MonitoringHarness) -> None:
    stub = await monitoring.stub()
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.CreateBuilding(
            monitoring_pb2.CreateBuildingRequest(
                building=monitoring_pb2.Building(display_name="X", time_zone="Mars/Olympus")
            )
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(rich_status(raised.value)).reason == "UNKNOWN_TIME_ZONE"


async def test_register_token_device_and_replay(monitoring: MonitoringHarness) -> None:
    building = await monitoring.building()
    stub = await monitoring.stub()
    request = monitoring_pb2.RegisterDeviceRequest(
        parent=building.name,
        device=monitoring_pb2.Device(kind=monitoring_pb2.DEVICE_KIND_SENSOR, display_name="T1"),
        credential_type=monitoring_pb2.DEVICE_CREDENTIAL_TYPE_TOKEN,
        request_id=request_id(),
    )
    first = await stub.RegisterDevice(request)
    assert first.device_token.startswith("gdt_")
    again = await stub.RegisterDevice(request)
    assert again == first


async def test_create_building_validation_and_request_id_reuse(
    monitoring: MonitoringHarness,
) -> None:
    stub = await monitoring.stub()
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.CreateBuilding(
            monitoring_pb2.CreateBuildingRequest(
                building=monitoring_pb2.Building(time_zone="Europe/Madrid")
            )
        )
    assert error_info(rich_status(raised.value)).reason == "INVALID_FIELD"
    request = monitoring_pb2.CreateBuildingRequest(
        building=monitoring_pb2.Building(display_name="A", time_zone="UTC"),
        request_id=request_id(),
    )
    first = await stub.CreateBuilding(request)
    assert (await stub.CreateBuilding(request)) == first
    request.building.display_name = "B"
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.CreateBuilding(request)
    assert raised.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert error_info(rich_status(raised.value)).reason == "REQUEST_ID_REUSED"


async def test_building_settings_round_trip(monitoring: MonitoringHarness) -> None:
    window = monitoring_pb2.WeeklyWindow(day=5)
    window.start_time.hours = 22
    window.end_time.hours = 6  # into Saturday
    settings = monitoring_pb2.AlertRuleSettings(
        occupied_hours=[window], motion_alert_zones=["lobby", "garage"]
    )
    settings.door_held_open_threshold.FromSeconds(45)
    building = await monitoring.building(
        alert_rule_settings=settings,
        lockdown_policy=monitoring_pb2.LockdownPolicy(
            enabled=True,
            min_severity=common_pb2.SEVERITY_HIGH,
            rules=[monitoring_pb2.ALERT_RULE_TAMPER],
        ),
        address={"region_code": "ES", "locality": "Madrid", "address_lines": ["Calle 1"]},
    )
    assert building.alert_rule_settings == settings
    assert building.lockdown_policy.rules == [monitoring_pb2.ALERT_RULE_TAMPER]
    assert building.address.locality == "Madrid"
    assert list(building.address.address_lines) == ["Calle 1"]
    assert building.HasField("create_time")


async def test_list_buildings_pages_by_display_name(monitoring: MonitoringHarness) -> None:
    for name in ("Delta", "alpha", "Charlie", "Bravo", "Echo"):
        await monitoring.building(display_name=name)
    stub = await monitoring.stub()
    seen: list[str] = []
    token = ""
    while True:
        response = await stub.ListBuildings(
            monitoring_pb2.ListBuildingsRequest(page_size=2, page_token=token)
        )
        seen.extend(b.display_name for b in response.buildings)
        token = response.next_page_token
        if not token:
            break
    assert seen == sorted(seen)
    assert set(seen) == {"Delta", "alpha", "Charlie", "Bravo", "Echo"}
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ListBuildings(monitoring_pb2.ListBuildingsRequest(page_token="forged.token"))
    assert error_info(rich_status(raised.value)).reason == "INVALID_PAGE_TOKEN"


async def test_register_device_errors(monitoring: MonitoringHarness) -> None:
    building = await monitoring.building()
    other = await monitoring.building(display_name="Other")
    stub = await monitoring.stub()
    controller = monitoring_pb2.DEVICE_KIND_DOOR_CONTROLLER
    cases = [
        (building.name, monitoring_pb2.Device(), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD"),
        (
            building.name,
            monitoring_pb2.Device(kind=controller),
            grpc.StatusCode.INVALID_ARGUMENT,
            "DOOR_REQUIRED",
        ),
        (
            building.name,
            monitoring_pb2.Device(kind=controller, door=f"{other.name}/doors/x"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "DOOR_NOT_IN_BUILDING",
        ),
        (
            building.name,
            monitoring_pb2.Device(kind=monitoring_pb2.DEVICE_KIND_CAMERA, labels={"Bad Key": "x"}),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_FIELD",
        ),
        (
            "buildings/none",
            monitoring_pb2.Device(kind=monitoring_pb2.DEVICE_KIND_CAMERA),
            grpc.StatusCode.NOT_FOUND,
            "BUILDING_NOT_FOUND",
        ),
    ]
    for parent, device, code, expected in cases:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.RegisterDevice(
                monitoring_pb2.RegisterDeviceRequest(parent=parent, device=device)
            )
        assert (raised.value.code(), error_info(rich_status(raised.value)).reason) == (
            code,
            expected,
        ), device
    door = f"{building.name}/doors/main"
    await monitoring.register(building.name, controller, door=door)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await monitoring.register(building.name, controller, door=door)
    assert raised.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert error_info(rich_status(raised.value)).reason == "DOOR_CONTROLLER_EXISTS"


async def test_device_tokens_are_stored_hashed(monitoring: MonitoringHarness) -> None:
    from sqlalchemy import select  # noqa: PLC0415

    from gatehouse.monitoring.adapters.orm import DeviceRow  # noqa: PLC0415

    building = await monitoring.building()
    device, token = await monitoring.register(building.name, token=True)
    async with monitoring.app.uow() as uow:
        stored = (await uow.session.scalars(select(DeviceRow.token_hash))).one()
    assert stored is not None
    assert len(stored) == 64
    assert token not in stored
    assert device.credential_type == monitoring_pb2.DEVICE_CREDENTIAL_TYPE_TOKEN


async def test_get_and_list_devices(monitoring: MonitoringHarness) -> None:
    building = await monitoring.building()
    other = await monitoring.building(display_name="Other")
    cam_a, _ = await monitoring.register(
        building.name, display_name="A cam", labels={"zone": "lobby"}, firmware_version="2.4.1"
    )
    cam_b, _ = await monitoring.register(
        building.name, display_name="B cam", labels={"zone": "yard"}, firmware_version="2.5.0"
    )
    sensor, _ = await monitoring.register(
        building.name, monitoring_pb2.DEVICE_KIND_SENSOR, display_name="C sensor"
    )
    door = f"{building.name}/doors/main"
    controller, _ = await monitoring.register(
        building.name, monitoring_pb2.DEVICE_KIND_DOOR_CONTROLLER, door=door, display_name="D"
    )
    foreign, _ = await monitoring.register(other.name, display_name="Z cam")
    stub = await monitoring.stub()
    got = await monitoring.get_device(cam_a.name)
    assert got.state == monitoring_pb2.DEVICE_STATE_UNKNOWN
    assert got.labels["zone"] == "lobby"

    async def names(**filters: Any) -> list[str]:
        seen: list[str] = []
        token = ""
        while True:
            response = await stub.ListDevices(
                monitoring_pb2.ListDevicesRequest(page_size=1, page_token=token, **filters)
            )
            seen.extend(device.name for device in response.devices)
            token = response.next_page_token
            if not token:
                return seen

    assert await names(parent=building.name) == [
        cam_a.name,
        cam_b.name,
        sensor.name,
        controller.name,
    ]
    assert await names(parent=building.name, kind=monitoring_pb2.DEVICE_KIND_CAMERA) == [
        cam_a.name,
        cam_b.name,
    ]
    assert await names(parent=building.name, filter='labels.zone = "yard"') == [cam_b.name]
    assert await names(
        parent=building.name, filter='firmware_version != "2.4.1" AND labels.zone = "yard"'
    ) == [cam_b.name]
    assert await names(parent=building.name, door=door) == [controller.name]
    assert await names(parent="buildings/-", kind=monitoring_pb2.DEVICE_KIND_CAMERA) == [
        cam_a.name,
        cam_b.name,
        foreign.name,
    ]
    for bad in ("labels.zone ~ 'x'", "zone = lobby", 'labels.zone = "a" OR labels.zone = "b"'):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.ListDevices(
                monitoring_pb2.ListDevicesRequest(parent=building.name, filter=bad)
            )
        assert error_info(rich_status(raised.value)).reason == "INVALID_FILTER", bad
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.GetDevice(monitoring_pb2.GetDeviceRequest(name=f"{building.name}/devices/x"))
    assert error_info(rich_status(raised.value)).reason == "DEVICE_NOT_FOUND"
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ListDevices(monitoring_pb2.ListDevicesRequest(parent="buildings/none"))
    assert error_info(rich_status(raised.value)).reason == "BUILDING_NOT_FOUND"


async def test_permissions_are_enforced(monitoring: MonitoringHarness) -> None:
    from gatehouse.monitoring.v1 import monitoring_pb2_grpc  # noqa: PLC0415

    building = await monitoring.building()
    channel = await monitoring.channel()
    stub = monitoring_pb2_grpc.MonitoringServiceStub(channel)
    reader = monitoring.issuer.bearer(permissions=["monitoring.buildings.read"])
    await stub.GetBuilding(monitoring_pb2.GetBuildingRequest(name=building.name), metadata=reader)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.RaiseAlert(
            monitoring_pb2.RaiseAlertRequest(
                parent=building.name, severity=common_pb2.SEVERITY_HIGH, summary="x"
            ),
            metadata=reader,
        )
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert (
        error_info(rich_status(raised.value)).metadata["permission"] == "monitoring.alerts.manage"
    )
