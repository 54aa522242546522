"""The template cache on the key-value store (Redis in production, in-memory embedded).

Latest versions are cached under a per-template generation number that every create and
update bumps, so an update invalidates at once on every replica: a reader that loaded an
older version concurrently can only store it under the old generation, which nobody reads
again. Entries also expire, which bounds what a lost invalidation (a store outage) costs.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from gatehouse.notifications.adapters import codec
from gatehouse.notifications.domain.templates import Template
from gatehouse.runtime.kv import KeyValueStore

log = logging.getLogger("gatehouse.notifications.cache")
_PREFIX = "notifications:templates"


class KeyValueTemplateCache:
    def __init__(self, kv: KeyValueStore, ttl: timedelta = timedelta(minutes=5)) -> None:
        self._kv = kv
        self._ttl = ttl

    async def _generation(self, template_id: str) -> str:
        value = await self._kv.get(f"{_PREFIX}:{template_id}:gen")
        return "0" if value is None else value.decode()

    async def latest(self, template_id: str) -> Template | None:
        try:
            generation = await self._generation(template_id)
            body = await self._kv.get(f"{_PREFIX}:{template_id}:{generation}")
        except Exception:
            # A cache outage must never fail a send: the database has the truth.
            log.warning("template cache unavailable", exc_info=True)
            return None
        return None if body is None else codec.template_from(codec.loads(body))

    async def remember(self, template: Template) -> None:
        try:
            generation = await self._generation(template.template_id)
            await self._kv.set(
                f"{_PREFIX}:{template.template_id}:{generation}",
                codec.dumps(codec.template_doc(template)).encode(),
                self._ttl,
            )
        except Exception:
            log.warning("template cache unavailable", exc_info=True)

    async def invalidate(self, template_id: str) -> None:
        try:
            await self._kv.increment(f"{_PREFIX}:{template_id}:gen")
        except Exception:
            log.warning("could not invalidate the template cache", exc_info=True)

    async def rendered(self, key: str) -> bytes | None:
        try:
            return await self._kv.get(f"{_PREFIX}:rendered:{key}")
        except Exception:
            return None

    async def remember_rendered(self, key: str, body: bytes) -> None:
        try:
            await self._kv.set(f"{_PREFIX}:rendered:{key}", body, self._ttl)
        except Exception:
            log.warning("template cache unavailable", exc_info=True)
