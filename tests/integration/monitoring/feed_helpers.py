"""Reading a building's live feed in tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from gatehouse.monitoring.v1 import monitoring_pb2
from tests.integration.monitoring.harness import MonitoringHarness


class FeedWatcher:
    """A StreamEvents call read in the background; items collected as they come."""

    def __init__(self, call: Any) -> None:
        self.call = call
        self.items: list[monitoring_pb2.FeedItem] = []
        self.heartbeats: list[Any] = []
        self.error: Exception | None = None
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for response in self.call:
                if response.HasField("event"):
                    self.items.append(response.event)
                else:
                    self.heartbeats.append(response.heartbeat)
                self._changed.set()
        except Exception as error:
            self.error = error
            self._changed.set()

    def types(self) -> list[str]:
        return [item.type for item in self.items]

    async def wait_for(
        self, predicate: Callable[[list[monitoring_pb2.FeedItem]], bool], timeout: float = 10.0
    ) -> list[monitoring_pb2.FeedItem]:
        async with asyncio.timeout(timeout):
            while not predicate(self.items):
                if self.error is not None:
                    raise self.error
                self._changed.clear()
                await self._changed.wait()
        return self.items

    async def wait_type(self, event_type: str, count: int = 1) -> list[monitoring_pb2.FeedItem]:
        items = await self.wait_for(lambda items: self.types().count(event_type) >= count)
        return [item for item in items if item.type == event_type]

    async def wait_error(self, timeout: float = 10.0) -> Exception:
        async with asyncio.timeout(timeout):
            await self._task
        assert self.error is not None
        return self.error

    def close(self) -> None:
        self.call.cancel()
        self._task.cancel()


async def watch(
    monitoring: MonitoringHarness, building: str, replica: int = 0, **fields: Any
) -> FeedWatcher:
    stub = await monitoring.stub(replica)
    call = stub.StreamEvents(monitoring_pb2.StreamEventsRequest(building=building, **fields))
    watcher = FeedWatcher(call)
    monitoring.stack.callback(watcher.close)
    # The subscription is live once the server has read the request: wait for its metadata.
    await call.initial_metadata()
    return watcher
