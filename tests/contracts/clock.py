"""A monotonic clock that moves only when a test says so."""

from __future__ import annotations

import asyncio
from datetime import timedelta


class FakeClock:
    """Callable like `time.monotonic`; `advance` moves it forward."""

    def __init__(self, start: float = 1_000.0) -> None:
        self._now = start

    def __call__(self) -> float:
        return self._now

    def advance(self, duration: timedelta) -> None:
        self._now += duration.total_seconds()

    async def let_time_pass(self, duration: timedelta) -> None:
        self.advance(duration)
        # Yield like a real wait would, so concurrent tasks interleave the same way.
        await asyncio.sleep(0)
