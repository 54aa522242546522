"""Lockout and revocation on a real Redis, as production runs them: shared by replicas."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import jwt
import pytest

from gatehouse.auth.v1 import auth_pb2
from gatehouse.runtime.config import Settings
from gatehouse.runtime.identity import KeyValueRevocationList
from gatehouse.runtime.kv import RedisKeyValueStore
from gatehouse.runtime.redis_connection import RedisConnection, RedisOptions
from tests.integration.redis_fixtures import redis_prefix, redis_url  # noqa: F401
from tests.support.auth import TestClock, bearer, refused, running_auth

pytestmark = pytest.mark.redis


@pytest.fixture
async def redis_kv(redis_url: str, redis_prefix: str) -> AsyncIterator[RedisKeyValueStore]:  # noqa: F811
    options = RedisOptions(key_prefix=f"{redis_prefix}{secrets.token_hex(4)}:")
    async with RedisConnection.from_url(redis_url, options) as connection:
        yield RedisKeyValueStore(connection)


async def test_failures_on_two_replicas_add_up_and_the_lock_lifts_with_the_clock(
    settings: Settings, certs_dir: Path, database_url: str, redis_kv: RedisKeyValueStore
) -> None:
    clock, kek = TestClock(), secrets.token_bytes(32)
    shared = {"kv": redis_kv, "clock": clock, "kek": kek}
    async with (
        running_auth(settings, certs_dir, database_url, **shared) as first,  # type: ignore[arg-type]
        running_auth(settings, certs_dir, database_url, **shared) as second,  # type: ignore[arg-type]
    ):
        user = await first.register()
        for replica in (first, second, first, second):
            await refused(
                replica.login(user.email, "wrong password!!"),
                grpc.StatusCode.UNAUTHENTICATED,
                "INVALID_CREDENTIALS",
            )
        await refused(
            second.login(user.email, "wrong password!!"),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "ACCOUNT_LOCKED",
        )
        await refused(first.login(user.email), grpc.StatusCode.RESOURCE_EXHAUSTED, "ACCOUNT_LOCKED")
        clock.advance(dt.timedelta(seconds=61))
        assert (await first.login(user.email)).HasField("tokens")


async def test_revocations_reach_every_service_through_redis(
    settings: Settings, certs_dir: Path, database_url: str, redis_kv: RedisKeyValueStore
) -> None:
    async with running_auth(settings, certs_dir, database_url, kv=redis_kv) as auth:
        user, tokens = await auth.signed_in()
        stolen = (await auth.login(user.email)).tokens
        # Another service: its own revocation list reader on the same Redis.
        elsewhere = KeyValueRevocationList(redis_kv)

        await auth.stub().Logout(auth_pb2.LogoutRequest(), metadata=bearer(tokens.access_token))
        logged_out = jwt.decode(tokens.access_token, options={"verify_signature": False})["jti"]
        assert await elsewhere.is_revoked(logged_out)
        remaining = await redis_kv.ttl(f"auth:revoked:{logged_out}")
        assert remaining is not None
        assert dt.timedelta(minutes=14) < remaining <= dt.timedelta(minutes=15)

        # A refresh-token replay revokes that family's access tokens too.
        await auth.stub().RefreshToken(
            auth_pb2.RefreshTokenRequest(refresh_token=stolen.refresh_token)
        )
        await refused(
            auth.stub().RefreshToken(
                auth_pb2.RefreshTokenRequest(refresh_token=stolen.refresh_token)
            ),
            grpc.StatusCode.UNAUTHENTICATED,
            "REFRESH_TOKEN_REUSED",
        )
        reused = jwt.decode(stolen.access_token, options={"verify_signature": False})["jti"]
        assert await elsewhere.is_revoked(reused)
