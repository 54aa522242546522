"""What a service's composition root is given: settings and the process's shared parts."""

from __future__ import annotations

from dataclasses import dataclass

from gatehouse.runtime.bus import EventBus
from gatehouse.runtime.config import ServiceName, Settings
from gatehouse.runtime.kv import KeyValueStore
from gatehouse.runtime.server import Lifecycle


@dataclass(frozen=True)
class ServiceContext:
    name: ServiceName
    settings: Settings
    lifecycle: Lifecycle
    kv: KeyValueStore
    bus: EventBus

    @property
    def database_url(self) -> str:
        return self.settings.database_url_for(self.name)
