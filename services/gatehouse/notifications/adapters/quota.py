"""Each caller's SendNotification quota, on the key-value store (shared by replicas): a fixed
window per caller, counted with one INCR."""

from __future__ import annotations

import hashlib
import logging
import time
from datetime import timedelta

from gatehouse.runtime.kv import KeyValueStore

log = logging.getLogger("gatehouse.notifications.quota")


class KeyValueSendQuota:
    def __init__(
        self, kv: KeyValueStore, limit: int, window: timedelta = timedelta(minutes=1)
    ) -> None:
        self._kv = kv
        self._limit = limit
        self._window = window

    async def take(self, caller: str) -> timedelta | None:
        """None when the call may go; otherwise how long until the caller's window reopens."""
        if self._limit <= 0:
            return None
        seconds = self._window.total_seconds()
        slot = int(time.time() // seconds)
        who = hashlib.sha256(caller.encode()).hexdigest()[:32]
        key = f"notifications:quota:{who}:{slot}"
        try:
            used = await self._kv.increment(key, ttl_on_create=self._window * 2)
        except Exception:
            # A quota that cannot be counted must not stop messages (some may be urgent).
            log.warning("send quota unavailable; not enforced for now", exc_info=True)
            return None
        if used <= self._limit:
            return None
        return timedelta(seconds=(slot + 1) * seconds - time.time())
