"""Buildings: create, read, list, and the status snapshot."""

from __future__ import annotations

import json
from datetime import timedelta

from gatehouse.monitoring import mapping
from gatehouse.monitoring.domain.buildings import (
    MAX_DISPLAY_NAME,
    Building,
    is_time_zone,
    window_problems,
)
from gatehouse.monitoring.domain.enums import AlertRule, DeviceKind, Severity
from gatehouse.monitoring.handlers.common import (
    IdempotencyKey,
    LostIdempotencyRaceError,
    MonitoringDependencies,
    PageTokens,
    building_or_404,
    page_size,
    remember,
    replay,
)
from gatehouse.monitoring.handlers.ports import UnitOfWorkFactory
from gatehouse.monitoring.v1 import monitoring_pb2
from gatehouse.runtime.errors import FieldViolation, InvalidArgument
from gatehouse.runtime.ids import new_ulid

_SEVERITIES = frozenset(int(severity) for severity in Severity)
_RULES = frozenset(int(rule) for rule in AlertRule if rule)


def _building_problems(message: monitoring_pb2.Building) -> tuple[list[FieldViolation], bool]:
    """Field violations of a building to create, and whether the time zone is unknown."""
    problems = []
    name = message.display_name.strip()
    if not name:
        problems.append(FieldViolation("building.display_name", "is required"))
    elif len(name) > MAX_DISPLAY_NAME:
        problems.append(
            FieldViolation("building.display_name", f"at most {MAX_DISPLAY_NAME} characters")
        )
    unknown_zone = False
    if not message.time_zone:
        problems.append(FieldViolation("building.time_zone", "is required"))
    elif not is_time_zone(message.time_zone):
        unknown_zone = True
        problems.append(
            FieldViolation("building.time_zone", "is not an IANA time zone name (Europe/Madrid)")
        )
    policy = message.lockdown_policy
    if int(policy.min_severity) not in _SEVERITIES:
        problems.append(FieldViolation("building.lockdown_policy.min_severity", "is unknown"))
    if any(int(rule) not in _RULES for rule in policy.rules):
        problems.append(FieldViolation("building.lockdown_policy.rules", "holds an unknown rule"))
    settings = message.alert_rule_settings
    for field in ("door_held_open_threshold", "device_offline_threshold"):
        if settings.HasField(field):
            value = mapping.from_duration(settings, field, getattr(settings, field))
            if value is None or value <= timedelta(0):
                problems.append(
                    FieldViolation(f"building.alert_rule_settings.{field}", "must be positive")
                )
    return problems, unknown_zone


async def create_building(
    request: monitoring_pb2.CreateBuildingRequest,
    key: IdempotencyKey | None,
    uow_factory: UnitOfWorkFactory,
    deps: MonitoringDependencies,
) -> monitoring_pb2.CreateBuildingResponse:
    problems, unknown_zone = _building_problems(request.building)
    if not problems:
        building = mapping.building_from_proto(request.building, new_ulid(), deps.clock())
        problems = [
            FieldViolation(f"building.alert_rule_settings.{problem.split(':')[0]}", problem)
            for problem in window_problems(building.alert_rule_settings.occupied_hours)
        ]
    if problems:
        raise InvalidArgument(problems, reason="UNKNOWN_TIME_ZONE" if unknown_zone else None)
    parse = monitoring_pb2.CreateBuildingResponse.FromString
    try:
        async with uow_factory() as uow:
            if (replayed := await replay(uow, deps, key, parse)) is not None:
                return replayed
            await uow.buildings.add(building)
            response = monitoring_pb2.CreateBuildingResponse(
                building=mapping.building_to_proto(building)
            )
            await remember(uow, deps, key, response)
            await uow.commit()
            return response
    except LostIdempotencyRaceError:
        async with uow_factory() as uow:
            replayed = await replay(uow, deps, key, parse)
            assert replayed is not None
            return replayed


async def get_building(building_id: str, uow_factory: UnitOfWorkFactory) -> monitoring_pb2.Building:
    async with uow_factory() as uow:
        return mapping.building_to_proto(await building_or_404(uow, building_id))


async def list_buildings(
    request: monitoring_pb2.ListBuildingsRequest,
    uow_factory: UnitOfWorkFactory,
    deps: MonitoringDependencies,
) -> monitoring_pb2.ListBuildingsResponse:
    tokens = PageTokens(deps.sealer, "buildings")
    now = deps.clock()
    position = tokens.read(request.page_token, "", now)
    after = (position[0], position[1]) if position and len(position) == 2 else None
    limit = page_size(request.page_size)
    async with uow_factory() as uow:
        buildings: list[Building] = await uow.buildings.page(after, limit + 1)
    response = monitoring_pb2.ListBuildingsResponse(
        buildings=[mapping.building_to_proto(b) for b in buildings[:limit]]
    )
    if len(buildings) > limit:
        last = buildings[limit - 1]
        response.next_page_token = tokens.make([last.display_name, last.id], "", now)
    return response


async def get_building_status(
    building_id: str, uow_factory: UnitOfWorkFactory, deps: MonitoringDependencies
) -> monitoring_pb2.BuildingStatus:
    # The feed's head first: every item up to it was committed before the counts below are
    # read, so resuming after it can only repeat changes, never miss one.
    head = await deps.feed.head(building_id)
    async with uow_factory() as uow:
        building = await building_or_404(uow, building_id)
        by_kind = await uow.devices.counts(building_id)
        alerts = await uow.alerts.unresolved_counts(building_id)
    total = monitoring_pb2.DeviceCounts()
    status = monitoring_pb2.BuildingStatus(name=f"{building.name}/status", devices=total)
    for kind in sorted(by_kind):
        counts = by_kind[kind]
        total.online_count += counts.online
        total.offline_count += counts.offline
        total.unknown_count += counts.unknown
        status.devices_by_kind.add(
            kind=monitoring_pb2.DeviceKind.ValueType(DeviceKind(kind)),
            counts=monitoring_pb2.DeviceCounts(
                online_count=counts.online,
                offline_count=counts.offline,
                unknown_count=counts.unknown,
            ),
        )
    status.devices.CopyFrom(total)
    for severity in sorted(alerts, reverse=True):
        opened, acknowledged = alerts[severity]
        status.unresolved_alerts.add(
            severity=int(severity),
            open_count=opened,
            acknowledged_count=acknowledged,
        )
    emergency = building.emergency
    status.emergency.CopyFrom(
        monitoring_pb2.EmergencyState(
            active=emergency.active,
            kind=emergency.kind,
            start_time=mapping.timestamp(emergency.start_time),
            trigger_event_id=emergency.trigger_event_id,
        )
    )
    if head is not None:
        status.last_event_id = head.event_id
        status.last_event_time.FromDatetime(head.time)
    return status


def filters_of(*parts: object) -> str:
    return json.dumps([str(part) for part in parts], separators=(",", ":"))
