"""Resource names of the access service and the ids inside them."""

from __future__ import annotations

import re

_ID = r"[A-Za-z0-9._~-]{1,128}"
_BUILDING = re.compile(rf"buildings/({_ID})")
_DOOR = re.compile(rf"buildings/({_ID})/doors/({_ID})")
_SCHEDULE = re.compile(rf"buildings/({_ID})/doors/({_ID})/schedule")
_GRANT = re.compile(rf"buildings/({_ID})/grants/({_ID})")
_VISITOR = re.compile(rf"buildings/({_ID})/visitors/({_ID})")
_EMERGENCY = re.compile(rf"buildings/({_ID})/emergency")
_LOG_ENTRY = re.compile(rf"buildings/({_ID})/accessLogs/({_ID})")
_DEVICE = re.compile(rf"buildings/({_ID})/devices/({_ID})")
_ALERT = re.compile(rf"buildings/({_ID})/alerts/({_ID})")
_USER = re.compile(rf"users/({_ID})")
DEVICE_SPIFFE_PREFIX = "spiffe://gatehouse/"


def _one(pattern: re.Pattern[str], name: str) -> str | None:
    match = pattern.fullmatch(name)
    if match is None or match.group(1) == "-":
        return None
    return match.group(1)


def _two(pattern: re.Pattern[str], name: str) -> tuple[str, str] | None:
    match = pattern.fullmatch(name)
    if match is None or match.group(1) == "-":
        return None
    return match.group(1), match.group(2)


def building_id(name: str) -> str | None:
    return _one(_BUILDING, name)


def emergency_building_id(name: str) -> str | None:
    return _one(_EMERGENCY, name)


def door_ids(name: str) -> tuple[str, str] | None:
    return _two(_DOOR, name)


def schedule_door_ids(name: str) -> tuple[str, str] | None:
    return _two(_SCHEDULE, name)


def grant_ids(name: str) -> tuple[str, str] | None:
    return _two(_GRANT, name)


def visitor_ids(name: str) -> tuple[str, str] | None:
    return _two(_VISITOR, name)


def log_entry_ids(name: str) -> tuple[str, str] | None:
    return _two(_LOG_ENTRY, name)


def device_ids(name: str) -> tuple[str, str] | None:
    return _two(_DEVICE, name)


def alert_ids(name: str) -> tuple[str, str] | None:
    return _two(_ALERT, name)


def is_user(name: str) -> bool:
    return _USER.fullmatch(name) is not None


def building_name(building: str) -> str:
    return f"buildings/{building}"


def door_name(building: str, door: str) -> str:
    return f"buildings/{building}/doors/{door}"


def schedule_name(building: str, door: str) -> str:
    return f"buildings/{building}/doors/{door}/schedule"


def grant_name(building: str, grant: str) -> str:
    return f"buildings/{building}/grants/{grant}"


def visitor_name(building: str, visitor: str) -> str:
    return f"buildings/{building}/visitors/{visitor}"


def emergency_name(building: str) -> str:
    return f"buildings/{building}/emergency"


def log_entry_name(building: str, entry: str) -> str:
    return f"buildings/{building}/accessLogs/{entry}"


def device_of_spiffe_id(spiffe_id: str | None) -> tuple[str, str] | None:
    """`spiffe://gatehouse/buildings/b/devices/d` -> (`b`, `d`)."""
    if not spiffe_id or not spiffe_id.startswith(DEVICE_SPIFFE_PREFIX):
        return None
    return device_ids(spiffe_id[len(DEVICE_SPIFFE_PREFIX) :])
