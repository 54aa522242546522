"""Fixtures for tests against a real Redis: where it is, and a key namespace for this run.

Import them into a test module (`from tests.integration.redis_fixtures import redis_prefix,
redis_url`). Without a Redis answering, dependent tests skip with a loud reason; with
`CI=true` they fail instead, so CI can never go green by silently skipping them.

The fixtures use redis-py's synchronous client on purpose: they may be requested from inside
a running event loop (`request.getfixturevalue` in an async fixture), where the asyncio client
could not be driven to completion.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest
import redis
from redis.exceptions import RedisError

from gatehouse.runtime.redis_connection import redact_url

DEFAULT_TEST_REDIS_URL = "redis://127.0.0.1:6379/0"
START_REDIS = (
    'redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no'
)


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


def _sync_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The Redis to test against (`GATEHOUSE_TEST_REDIS_URL`), checked to answer PING."""
    url = os.environ.get("GATEHOUSE_TEST_REDIS_URL", DEFAULT_TEST_REDIS_URL)
    client = _sync_client(url)
    try:
        client.ping()
    except (RedisError, OSError) as error:
        reason = (
            f"REDIS NOT AVAILABLE: {redact_url(url)} did not answer PING ({error}). "
            f"Redis tests did NOT run. Start one with `{START_REDIS}` or point "
            "GATEHOUSE_TEST_REDIS_URL at one."
        )
        if _in_ci():
            pytest.fail(f"{reason} (CI=true: a missing Redis is a failure)", pytrace=False)
        pytest.skip(reason)
    finally:
        client.close()
    return url


@pytest.fixture(scope="session")
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix unique to this test run; every key under it is deleted at the end."""
    prefix = f"gatehouse-test:{secrets.token_hex(8)}:"
    yield prefix
    client = _sync_client(redis_url)
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"{prefix}*", count=500):
            batch.append(key)
            if len(batch) >= 500:
                client.unlink(*batch)
                batch.clear()
        if batch:
            client.unlink(*batch)
    finally:
        client.close()
