"""What a service's composition root is given: settings and the process's shared parts."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from gatehouse.runtime.bus import EventBus
from gatehouse.runtime.config import ServiceName, Settings
from gatehouse.runtime.db import Database, migrate
from gatehouse.runtime.kv import KeyValueStore
from gatehouse.runtime.server import Lifecycle

log = logging.getLogger("gatehouse.db")


class ServiceDatabase:
    """A service's database with its start/stop hooks: migrate (embedded mode), ping, dispose."""

    def __init__(
        self, url: str, *, migrations: Sequence[Path] = (), migrate_on_start: bool = True
    ) -> None:
        self.database = Database(url)
        self._url = url
        self._migrations = tuple(migrations)
        self._migrate_on_start = migrate_on_start

    async def start(self) -> None:
        if self._migrate_on_start:
            await migrate(self._url, self._migrations)
            log.info("migrated %r", self.database)
        # A service that cannot reach its database must not report SERVING.
        await self.database.ping()

    async def stop(self) -> None:
        await self.database.dispose()


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

    def database(self, migrations: Sequence[Path] = ()) -> ServiceDatabase:
        """This service's database; `migrations` are its own Alembic version folders (the
        runtime's chain is always included)."""
        return ServiceDatabase(
            self.database_url,
            migrations=migrations,
            migrate_on_start=self.settings.migrate_on_start,
        )
