"""Devices: registration with their own credential, reads, and who a device caller is."""

from __future__ import annotations

import re

from gatehouse.monitoring import mapping
from gatehouse.monitoring.domain import names
from gatehouse.monitoring.domain.buildings import MAX_DISPLAY_NAME
from gatehouse.monitoring.domain.credentials import new_device_token, plausible_token, token_hash
from gatehouse.monitoring.domain.devices import MAX_FIRMWARE, Device, label_problems
from gatehouse.monitoring.domain.enums import CredentialType, DeviceKind, DeviceState
from gatehouse.monitoring.handlers.buildings import filters_of
from gatehouse.monitoring.handlers.common import (
    IdempotencyKey,
    LostIdempotencyRaceError,
    MonitoringDependencies,
    PageTokens,
    building_or_404,
    device_or_404,
    page_size,
    remember,
    replay,
)
from gatehouse.monitoring.handlers.ports import (
    DeviceQuery,
    LabelCondition,
    MonitoringUnitOfWork,
    UnitOfWorkFactory,
)
from gatehouse.monitoring.v1 import monitoring_pb2
from gatehouse.runtime.db import DuplicateKeyError
from gatehouse.runtime.errors import (
    AlreadyExists,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from gatehouse.runtime.identity import Caller
from gatehouse.runtime.ids import new_ulid

_KINDS = frozenset(int(kind) for kind in DeviceKind if kind)
_STATES = frozenset(int(state) for state in DeviceState if state)
_CREDENTIALS = frozenset(int(kind) for kind in CredentialType)
# `labels.zone = "lobby"`, `firmware_version != "2.4.1"`, joined by AND.
_CLAUSE = re.compile(
    r"\s*(labels\.[a-z0-9_-]{1,63}|firmware_version)\s*(=|!=)\s*"
    r"(\"(?:[^\"\\]|\\.)*\"|[A-Za-z0-9._:/-]+)\s*"
)
_AND = re.compile(r"\s+AND\s+")
MAX_FILTER = 1000


def _device_problems(request: monitoring_pb2.RegisterDeviceRequest) -> list[FieldViolation]:
    device = request.device
    problems = []
    if int(device.kind) not in _KINDS:
        problems.append(FieldViolation("device.kind", "is required"))
    if len(device.display_name) > MAX_DISPLAY_NAME:
        problems.append(
            FieldViolation("device.display_name", f"at most {MAX_DISPLAY_NAME} characters")
        )
    if len(device.firmware_version) > MAX_FIRMWARE:
        problems.append(
            FieldViolation("device.firmware_version", f"at most {MAX_FIRMWARE} characters")
        )
    problems.extend(
        FieldViolation("device.labels", problem) for problem in label_problems(device.labels)
    )
    if int(request.credential_type) not in _CREDENTIALS:
        problems.append(FieldViolation("credential_type", "is unknown"))
    if device.door and device.kind != monitoring_pb2.DEVICE_KIND_DOOR_CONTROLLER:
        problems.append(FieldViolation("device.door", "only door controllers control a door"))
    return problems


def _door_check(request: monitoring_pb2.RegisterDeviceRequest) -> None:
    device = request.device
    if device.kind != monitoring_pb2.DEVICE_KIND_DOOR_CONTROLLER:
        return
    if not device.door:
        raise InvalidArgument(
            [FieldViolation("device.door", "is required for a door controller")],
            reason="DOOR_REQUIRED",
        )
    door = names.door_ids(device.door)
    if door is None or f"buildings/{door[0]}" != request.parent:
        raise InvalidArgument(
            [FieldViolation("device.door", f"must be {request.parent}/doors/{{door}}")],
            reason="DOOR_NOT_IN_BUILDING",
        )


async def register_device(
    request: monitoring_pb2.RegisterDeviceRequest,
    key: IdempotencyKey | None,
    uow_factory: UnitOfWorkFactory,
    deps: MonitoringDependencies,
) -> monitoring_pb2.RegisterDeviceResponse:
    problems = _device_problems(request)
    if problems:
        raise InvalidArgument(problems)
    _door_check(request)
    building_id = names.building_id(request.parent)
    assert building_id is not None  # the path binding was validated
    credential = CredentialType(request.credential_type) or CredentialType.CERTIFICATE
    device = Device(
        id=new_ulid(),
        building_id=building_id,
        kind=DeviceKind(request.device.kind),
        credential_type=credential,
        create_time=deps.clock(),
        display_name=request.device.display_name.strip(),
        labels=dict(request.device.labels),
        firmware_version=request.device.firmware_version,
        door=request.device.door,
        state=DeviceState.UNKNOWN,
        state_change_time=deps.clock(),
    )
    token = new_device_token() if credential is CredentialType.TOKEN else ""
    parse = monitoring_pb2.RegisterDeviceResponse.FromString
    try:
        async with uow_factory() as uow:
            if (replayed := await replay(uow, deps, key, parse)) is not None:
                return replayed
            await building_or_404(uow, building_id)
            try:
                await uow.devices.add(device, token_hash(token) if token else None)
            except DuplicateKeyError:
                raise AlreadyExists(
                    f"{device.door} already has a door controller",
                    reason="DOOR_CONTROLLER_EXISTS",
                    metadata={"door": device.door},
                ) from None
            response = monitoring_pb2.RegisterDeviceResponse(
                device=mapping.device_to_proto(device), device_token=token
            )
            await remember(uow, deps, key, response)
            await uow.commit()
            return response
    except LostIdempotencyRaceError:
        async with uow_factory() as uow:
            replayed = await replay(uow, deps, key, parse)
            assert replayed is not None
            return replayed


async def get_device(name: str, uow_factory: UnitOfWorkFactory) -> monitoring_pb2.Device:
    ids = names.device_ids(name)
    assert ids is not None
    async with uow_factory() as uow:
        return mapping.device_to_proto(await device_or_404(uow, *ids))


def parse_filter(text: str) -> tuple[LabelCondition, ...]:
    """The AIP-160 subset ListDevices understands; INVALID_FILTER for anything else."""
    if not text.strip():
        return ()
    if len(text) > MAX_FILTER:
        raise _invalid_filter(f"at most {MAX_FILTER} characters")
    conditions = []
    for clause in _AND.split(text.strip()):
        match = _CLAUSE.fullmatch(clause)
        if match is None:
            raise _invalid_filter(
                f'cannot parse {clause[:60]!r}; use labels.<key> = "value" or '
                'firmware_version != "value", joined by AND'
            )
        field, operator, raw = match.groups()
        value = raw[1:-1].replace('\\"', '"').replace("\\\\", "\\") if raw[0] == '"' else raw
        conditions.append(LabelCondition(field=field, equal=operator == "=", value=value))
    return tuple(conditions)


def _invalid_filter(problem: str) -> InvalidArgument:
    return InvalidArgument([FieldViolation("filter", problem)], reason="INVALID_FILTER")


async def list_devices(
    request: monitoring_pb2.ListDevicesRequest,
    uow_factory: UnitOfWorkFactory,
    deps: MonitoringDependencies,
) -> monitoring_pb2.ListDevicesResponse:
    problems = []
    if request.kind and int(request.kind) not in _KINDS:
        problems.append(FieldViolation("kind", "is unknown"))
    if request.state and int(request.state) not in _STATES:
        problems.append(FieldViolation("state", "is unknown"))
    if request.door and names.door_ids(request.door) is None:
        problems.append(FieldViolation("door", "must look like buildings/{id}/doors/{id}"))
    if problems:
        raise InvalidArgument(problems)
    conditions = parse_filter(request.filter)
    building_id = names.building_id(request.parent)
    filters = filters_of(request.parent, request.kind, request.state, request.door, request.filter)
    tokens = PageTokens(deps.sealer, "devices")
    now = deps.clock()
    position = tokens.read(request.page_token, filters, now)
    limit = page_size(request.page_size)
    async with uow_factory() as uow:
        if building_id is not None:
            await building_or_404(uow, building_id)
        devices = await uow.devices.search(
            DeviceQuery(
                building_id=building_id,
                kind=DeviceKind(request.kind) if request.kind else None,
                state=DeviceState(request.state) if request.state else None,
                door=request.door or None,
                conditions=conditions,
                after=(position[0], position[1]) if position and len(position) == 2 else None,
                limit=limit + 1,
            )
        )
    response = monitoring_pb2.ListDevicesResponse(
        devices=[mapping.device_to_proto(device) for device in devices[:limit]]
    )
    if len(devices) > limit:
        last = devices[limit - 1]
        response.next_page_token = tokens.make([last.display_name, last.id], filters, now)
    return response


# --- device callers --------------------------------------------------------------------------


def _credentials_invalid() -> Unauthenticated:
    return Unauthenticated(
        "no valid device credential was presented", reason="DEVICE_CREDENTIALS_INVALID"
    )


def identity_mismatch() -> PermissionDenied:
    return PermissionDenied(
        "the device credential belongs to another device", reason="DEVICE_IDENTITY_MISMATCH"
    )


async def authenticate_device(name: str, caller: Caller, uow: MonitoringUnitOfWork) -> Device:
    """The device `name`, if the caller's credential is that device's own: its certificate
    (SPIFFE id = the device's name) and/or its token. A credential of another device is
    PERMISSION_DENIED whatever else is presented; one identity never acts for another."""
    ids = names.device_ids(name)
    if ids is None:
        raise InvalidArgument(
            [FieldViolation("name", "must look like buildings/{id}/devices/{id}")]
        )
    certified = names.device_of_spiffe_id(caller.device_spiffe_id)
    if certified is not None and certified != name:
        raise identity_mismatch()
    tokened: Device | None = None
    if caller.device_token is not None:
        token = caller.device_token.strip()
        if plausible_token(token):
            tokened = await uow.devices.get_by_token_hash(token_hash(token))
        if tokened is None:
            raise _credentials_invalid()
        if tokened.name != name:
            raise identity_mismatch()
    if certified is None and tokened is None:
        raise _credentials_invalid()
    device = tokened or await uow.devices.get(*ids)
    if device is None:
        if await uow.buildings.get(ids[0]) is None:
            raise NotFound(f"buildings/{ids[0]}", reason="BUILDING_NOT_FOUND")
        raise NotFound(name, reason="DEVICE_NOT_FOUND")
    # The credential type is fixed at registration: a token device cannot be reached with a
    # certificate alone, nor the other way round.
    if device.credential_type is CredentialType.TOKEN and tokened is None:
        raise _credentials_invalid()
    if device.credential_type is CredentialType.CERTIFICATE and certified is None:
        raise _credentials_invalid()
    return device
