"""One Redis client per process, built from a URL, shared by every Redis adapter.

The adapters (`RedisKeyValueStore`, `RedisStreamsEventBus`) borrow a `RedisConnection`; the
process that built it closes it. Keys are namespaced by `key_prefix` (`gatehouse:` by default,
a random one per test run) so several deployments or test runs can share one Redis.

Retries: a command that fails with a connection error or a socket timeout is retried a few
times with exponential backoff on a fresh connection. That makes a Redis restart or failover
invisible to callers, at the price that a write whose reply was lost may be applied twice
(an extra INCR, a duplicated stream entry); event consumers deduplicate on the envelope id
and counters tolerate an occasional extra step (ARCHITECTURE §7: at-least-once).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta
from types import TracebackType
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_KEY_PREFIX = "gatehouse:"
DEFAULT_SOCKET_TIMEOUT = timedelta(seconds=5)


class RedisUnavailableError(Exception):
    """Redis did not answer a ping in time. The message names the (redacted) URL and cause."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RedisOptions:
    """Connection policy. The defaults suit a service next to its Redis (same zone)."""

    key_prefix: str = DEFAULT_KEY_PREFIX
    # Bounds every reply wait, so a hung Redis turns into an error instead of a stuck RPC.
    socket_timeout: timedelta = DEFAULT_SOCKET_TIMEOUT
    connect_timeout: timedelta = timedelta(seconds=2)
    # A connection idle longer than this is PINGed before use: catches connections a
    # load balancer or a Redis restart silently dropped, before a real command hits them.
    # Zero turns the check off.
    health_check_interval: timedelta = timedelta(seconds=15)
    retries: int = 3
    backoff_base: timedelta = timedelta(milliseconds=50)
    backoff_cap: timedelta = timedelta(seconds=2)
    # Bounded so a burst cannot exhaust Redis' maxclients across replicas; callers beyond
    # the bound wait (up to `pool_timeout`) for a connection instead of failing at once.
    max_connections: int = 64
    pool_timeout: timedelta = timedelta(seconds=5)
    client_name: str | None = "gatehouse"

    def __post_init__(self) -> None:
        if self.socket_timeout <= timedelta(0) or self.connect_timeout <= timedelta(0):
            raise ValueError("socket_timeout and connect_timeout must be positive")
        if self.retries < 0:
            raise ValueError("retries must be >= 0")
        if self.max_connections < 1:
            raise ValueError("max_connections must be >= 1")


class RedisConnection:
    """A `redis.asyncio.Redis` client plus the key prefix its adapters apply.

    Building one does no I/O: redis-py connects on the first command. Use `ping()` for a
    readiness check and `aclose()` (or `async with`) on shutdown.
    """

    def __init__(
        self,
        client: Redis,
        *,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        socket_timeout: timedelta | None = DEFAULT_SOCKET_TIMEOUT,
        description: str = "redis",
    ) -> None:
        self._client = client
        self._key_prefix = key_prefix
        self._socket_timeout = socket_timeout
        self._description = description

    @classmethod
    def from_url(cls, url: str, options: RedisOptions | None = None) -> RedisConnection:
        """Build a client for `url` (`redis://`, `rediss://` or `unix://`)."""
        opts = options or RedisOptions()
        retry = Retry(
            ExponentialBackoff(
                cap=opts.backoff_cap.total_seconds(), base=opts.backoff_base.total_seconds()
            ),
            retries=opts.retries,
            supported_errors=(RedisConnectionError, RedisTimeoutError),
        )
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=opts.max_connections,
            timeout=opts.pool_timeout.total_seconds(),
            socket_timeout=opts.socket_timeout.total_seconds(),
            socket_connect_timeout=opts.connect_timeout.total_seconds(),
            socket_keepalive=True,
            health_check_interval=opts.health_check_interval.total_seconds(),
            retry=retry,
            client_name=opts.client_name,
            # Values are opaque bytes (serialized protobuf, counters); never decode them.
            decode_responses=False,
        )
        return cls(
            Redis.from_pool(pool),
            key_prefix=opts.key_prefix,
            socket_timeout=opts.socket_timeout,
            description=redact_url(url),
        )

    @property
    def client(self) -> Redis:
        return self._client

    @property
    def key_prefix(self) -> str:
        return self._key_prefix

    @property
    def max_block(self) -> timedelta:
        """Longest single blocking command (XREAD BLOCK) that stays clear of the socket timeout.

        A blocking command that outlives the socket timeout fails as a timeout and would be
        retried; callers that want to wait longer loop in slices of this length.
        """
        if self._socket_timeout is None:
            return timedelta(seconds=30)
        return self._socket_timeout / 2

    def key(self, name: str) -> str:
        """The Redis key for `name` in this deployment's namespace."""
        return self._key_prefix + name

    async def ping(self, within: timedelta = timedelta(seconds=2)) -> None:
        """Raise `RedisUnavailableError` unless Redis answers PING within `within`.

        The bound covers the client's own retries, so a readiness probe returns on time.
        """
        try:
            async with asyncio.timeout(within.total_seconds()):
                await self._client.ping()
        except (RedisError, OSError, TimeoutError) as error:
            cause = str(error) or type(error).__name__
            raise RedisUnavailableError(
                f"{self._description} did not answer PING within {within.total_seconds():g}s: "
                f"{cause}"
            ) from error

    async def aclose(self) -> None:
        """Close the client and every pooled connection. Idempotent."""
        await self._client.aclose()

    async def __aenter__(self) -> RedisConnection:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"RedisConnection({self._description!r}, key_prefix={self._key_prefix!r})"


def redact_url(url: str) -> str:
    """`url` without its password or query (which may carry one), safe for logs and errors."""
    parts = urlsplit(url)._replace(query="", fragment="")
    if parts.password is None:
        return urlunsplit(parts)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
