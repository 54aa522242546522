"""The parts one process shares among the services it runs: the KV store, the event bus and
the live hub that fans bus streams out to streaming RPCs.

Configuration picks the backend (ARCHITECTURE §2): with `GATEHOUSE_REDIS_URL` both are Redis,
shared by every replica; without it both are in-process, shared by the services of one
`gatehouse up` process (so events flow between them exactly as they would through Redis).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gatehouse.runtime.bus import GroupEventBus, InProcessEventBus, RedisStreamsEventBus
from gatehouse.runtime.config import Settings
from gatehouse.runtime.kv import InMemoryKeyValueStore, KeyValueStore, RedisKeyValueStore
from gatehouse.runtime.live import LiveHub
from gatehouse.runtime.redis_connection import RedisConnection, RedisOptions


@dataclass
class SharedInfrastructure:
    kv: KeyValueStore
    bus: GroupEventBus
    redis: RedisConnection | None = None
    live: LiveHub = field(init=False)

    def __post_init__(self) -> None:
        # One hub per process: N streaming RPCs over a stream cost one bus reader, not N.
        self.live = LiveHub(self.bus)

    @classmethod
    def from_settings(cls, settings: Settings) -> SharedInfrastructure:
        """Builds clients only; nothing connects until `start`."""
        if settings.redis_url is None:
            return cls(kv=InMemoryKeyValueStore(), bus=InProcessEventBus())
        redis = RedisConnection.from_url(
            settings.redis_url, RedisOptions(key_prefix=settings.key_prefix)
        )
        return cls(kv=RedisKeyValueStore(redis), bus=RedisStreamsEventBus(redis), redis=redis)

    @property
    def backend(self) -> str:
        return "redis" if self.redis else "in-process"

    async def start(self) -> None:
        """Fail fast with a clear error when Redis is configured but unreachable."""
        if self.redis is not None:
            await self.redis.ping()
        await self.live.start()

    async def close(self) -> None:
        # The hub's readers use the bus: stop them before the bus goes away.
        await self.live.stop()
        await self.bus.close()
        if self.redis is not None:
            await self.redis.aclose()
