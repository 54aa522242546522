"""RedisConnection without a server: construction does no I/O, failures are reported clearly."""

from __future__ import annotations

import socket
from datetime import timedelta

import pytest

from gatehouse.runtime.redis_connection import (
    DEFAULT_KEY_PREFIX,
    RedisConnection,
    RedisOptions,
    RedisUnavailableError,
    redact_url,
)


def _unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_building_a_connection_does_no_io() -> None:
    # Nothing listens there; construction must still succeed (redis-py connects lazily).
    connection = RedisConnection.from_url(f"redis://127.0.0.1:{_unused_port()}/0")
    assert connection.key_prefix == DEFAULT_KEY_PREFIX
    assert connection.key("lockout:alice") == "gatehouse:lockout:alice"
    await connection.aclose()


async def test_ping_without_a_server_raises_unavailable_with_redacted_url() -> None:
    url = f"redis://svc:s3cret@127.0.0.1:{_unused_port()}/0"
    options = RedisOptions(retries=1, backoff_base=timedelta(milliseconds=1))
    async with RedisConnection.from_url(url, options) as connection:
        with pytest.raises(RedisUnavailableError) as raised:
            await connection.ping(within=timedelta(seconds=5))
    message = str(raised.value)
    assert "s3cret" not in message
    assert "svc:***@127.0.0.1" in message


def test_max_block_stays_below_the_socket_timeout() -> None:
    connection = RedisConnection.from_url(
        "redis://127.0.0.1:6379/0", RedisOptions(socket_timeout=timedelta(seconds=4))
    )
    assert timedelta(0) < connection.max_block < timedelta(seconds=4)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://:pw@cache:6380/1", "redis://:***@cache:6380/1"),
        ("rediss://user:pw@[::1]:6379/0?ssl_cert_reqs=none", "rediss://user:***@[::1]:6379/0"),
        ("redis://cache/0?password=pw", "redis://cache/0"),
    ],
)
def test_redact_url_hides_passwords(url: str, expected: str) -> None:
    assert redact_url(url) == expected


@pytest.mark.parametrize(
    "bad",
    [
        {"socket_timeout": timedelta(0)},
        {"connect_timeout": timedelta(seconds=-1)},
        {"retries": -1},
        {"max_connections": 0},
    ],
)
def test_options_reject_nonsense(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="must be"):
        RedisOptions(**bad)  # type: ignore[arg-type]
