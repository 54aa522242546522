"""Waiting helpers that tolerate a slow, noisy machine: generous deadlines, no tight bounds."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import timedelta

# How long anything that "should happen soon" may take before a test calls it broken. Far
# above any real latency, so a loaded 2-core CI box never turns into a flaky failure.
PATIENCE = timedelta(seconds=10)


async def eventually(
    condition: Callable[[], Awaitable[bool]],
    *,
    step: Callable[[], Awaitable[None]],
    what: str,
    patience: timedelta = PATIENCE,
) -> None:
    """Await `condition()` until it holds, calling `step()` between tries; fail after `patience`.

    `step` lets time pass: a real sleep against Redis, a fake-clock advance in memory.
    """
    give_up_at = time.monotonic() + patience.total_seconds()
    while not await condition():
        if time.monotonic() > give_up_at:
            raise AssertionError(f"not within {patience.total_seconds():g}s: {what}")
        await step()
