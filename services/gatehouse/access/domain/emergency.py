"""A building's emergency: unlock everything (evacuation) or lock everything down."""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from datetime import datetime

from gatehouse.access.domain.grants import Actor


class EmergencyMode(enum.IntEnum):
    """Numbered like the contract's EmergencyMode."""

    UNLOCK_ALL = 1
    LOCKDOWN = 2


@dataclass(frozen=True, slots=True)
class Emergency:
    """The active emergency of a building, or the last one once cleared."""

    building_id: str
    active: bool
    mode: EmergencyMode
    reason: str
    triggered_by: Actor
    trigger_time: datetime
    source_alert: str = ""
    cleared_by: Actor | None = None
    clear_time: datetime | None = None
    clear_reason: str = ""

    @property
    def lockdown(self) -> bool:
        return self.active and self.mode is EmergencyMode.LOCKDOWN

    def cleared(self, now: datetime, actor: Actor, reason: str) -> Emergency:
        return replace(self, active=False, cleared_by=actor, clear_time=now, clear_reason=reason)
