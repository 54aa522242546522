"""Configuration picks the backend: in-process by default, Redis with GATEHOUSE_REDIS_URL."""

from __future__ import annotations

import pytest

from gatehouse.events.v1.envelope_pb2 import Event
from gatehouse.runtime.config import Settings
from gatehouse.runtime.infrastructure import SharedInfrastructure
from gatehouse.runtime.redis_connection import RedisUnavailableError
from tests.integration.redis_fixtures import redis_prefix, redis_url

__all__ = ["redis_prefix", "redis_url"]


async def test_default_is_in_process(settings: Settings) -> None:
    infrastructure = SharedInfrastructure.from_settings(settings)
    await infrastructure.start()
    try:
        assert infrastructure.backend == "in-process"
        await infrastructure.bus.publish("feed", Event(id="e1", type="test.happened"))
        ((_, event),) = await infrastructure.bus.read("feed")
        assert event.id == "e1"
    finally:
        await infrastructure.close()


@pytest.mark.redis
async def test_redis_url_selects_redis_for_kv_and_bus(
    settings: Settings, redis_url: str, redis_prefix: str
) -> None:
    configured = settings.model_copy(
        update={"redis_url": redis_url, "key_prefix": f"{redis_prefix}infra:"}
    )
    infrastructure = SharedInfrastructure.from_settings(configured)
    await infrastructure.start()
    try:
        assert infrastructure.backend == "redis"
        await infrastructure.kv.set("k", b"v")
        assert infrastructure.redis is not None
        raw = await infrastructure.redis.client.get(f"{redis_prefix}infra:k")
        assert raw == b"v"
    finally:
        await infrastructure.close()


async def test_unreachable_redis_fails_fast_without_leaking_the_password(
    settings: Settings,
) -> None:
    configured = settings.model_copy(update={"redis_url": "redis://:s3cret@127.0.0.1:1/0"})
    infrastructure = SharedInfrastructure.from_settings(configured)
    with pytest.raises(RedisUnavailableError) as raised:
        await infrastructure.start()
    await infrastructure.close()
    assert "s3cret" not in str(raised.value)
