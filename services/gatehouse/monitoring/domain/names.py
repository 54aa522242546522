"""Resource names (`buildings/{building}/devices/{device}`, ...) and the ids inside them."""

from __future__ import annotations

import re

_ID = r"[A-Za-z0-9._~-]+"
_BUILDING = re.compile(rf"buildings/({_ID})")
_DEVICE = re.compile(rf"buildings/({_ID})/devices/({_ID})")
_ALERT = re.compile(rf"buildings/({_ID})/alerts/({_ID})")
_DOOR = re.compile(rf"buildings/({_ID})/doors/({_ID})")
_STATUS = re.compile(rf"buildings/({_ID})/status")
_IN_BUILDING = re.compile(rf"buildings/({_ID})/.+")

ALL_BUILDINGS = "buildings/-"
DEVICE_SPIFFE_PREFIX = "spiffe://gatehouse/"


def building_name(building_id: str) -> str:
    return f"buildings/{building_id}"


def device_name(building_id: str, device_id: str) -> str:
    return f"buildings/{building_id}/devices/{device_id}"


def alert_name(building_id: str, alert_id: str) -> str:
    return f"buildings/{building_id}/alerts/{alert_id}"


def building_id(name: str) -> str | None:
    """`buildings/b1` -> `b1`; None for anything else (`buildings/-` included)."""
    match = _BUILDING.fullmatch(name)
    return match.group(1) if match and match.group(1) != "-" else None


def device_ids(name: str) -> tuple[str, str] | None:
    """`buildings/b1/devices/d1` -> (`b1`, `d1`)."""
    match = _DEVICE.fullmatch(name)
    return (match.group(1), match.group(2)) if match else None


def alert_ids(name: str) -> tuple[str, str] | None:
    match = _ALERT.fullmatch(name)
    return (match.group(1), match.group(2)) if match else None


def door_ids(name: str) -> tuple[str, str] | None:
    match = _DOOR.fullmatch(name)
    return (match.group(1), match.group(2)) if match else None


def status_building_id(name: str) -> str | None:
    """`buildings/b1/status` -> `b1`."""
    match = _STATUS.fullmatch(name)
    return match.group(1) if match else None


def building_of(resource: str) -> str | None:
    """The building id of any resource under a building (`buildings/b1/doors/x` -> `b1`)."""
    match = _BUILDING.fullmatch(resource) or _IN_BUILDING.fullmatch(resource)
    return match.group(1) if match else None


def device_of_spiffe_id(spiffe_id: str | None) -> str | None:
    """The device a device certificate speaks for (`spiffe://gatehouse/buildings/b/devices/d`
    -> `buildings/b/devices/d`), or None when the peer is not a device."""
    if not spiffe_id or not spiffe_id.startswith(DEVICE_SPIFFE_PREFIX):
        return None
    name = spiffe_id.removeprefix(DEVICE_SPIFFE_PREFIX)
    return name if device_ids(name) is not None else None
