"""Login: tokens and their claims, the constant-time failure path, lockout, rehashing."""

from __future__ import annotations

import datetime as dt
import secrets
from pathlib import Path
from typing import Any

import grpc
import jwt
from google.rpc import error_details_pb2
from sqlalchemy import text

from gatehouse.auth.handlers.ports import PasswordCheck
from gatehouse.auth.v1 import auth_pb2, events_pb2
from gatehouse.runtime.config import Settings
from gatehouse.runtime.kv import InMemoryKeyValueStore
from tests.support.auth import (
    PASSWORD,
    AuthHarness,
    TestClock,
    bearer,
    fast_auth_settings,
    refused,
    running_auth,
    unique_email,
)
from tests.support.grpc_calls import detail


async def test_login_issues_tokens_whose_claims_carry_roles_and_permissions(
    auth: AuthHarness,
) -> None:
    user = await auth.register()
    response = await auth.login(user.email)

    assert response.user == user.name
    tokens = response.tokens
    assert tokens.token_type == "Bearer"
    assert tokens.expires_in.seconds == 900
    assert tokens.refresh_token
    assert len(tokens.refresh_token) >= 43
    header = jwt.get_unverified_header(tokens.access_token)
    assert header["alg"] == "EdDSA"
    jwks = await auth.stub().GetJwks(auth_pb2.GetJwksRequest())
    assert header["kid"] == jwks.keys[0].kid
    claims = jwt.decode(tokens.access_token, options={"verify_signature": False})
    assert claims["sub"] == user.name
    assert (claims["iss"], claims["aud"]) == ("gatehouse", "gatehouse")
    assert claims["exp"] - claims["iat"] == 900
    assert claims["exp"] == tokens.expire_time.seconds
    assert claims["roles"] == ["roles/visitor"]
    assert claims["permissions"] == ["payments.create", "payments.process"]
    assert claims["jti"]
    assert claims["sid"]
    refresh_expiry = tokens.refresh_expire_time.ToDatetime(tzinfo=dt.UTC)
    assert refresh_expiry - auth.clock() == dt.timedelta(days=30)

    (event,) = await auth.outbox("user.login")
    login = events_pb2.UserLoggedIn()
    event.data.Unpack(login)
    assert (login.user, login.client_address, login.session_id) == (
        user.name,
        "127.0.0.1",
        claims["sid"],
    )
    assert login.second_factor == auth_pb2.SECOND_FACTOR_TYPE_UNSPECIFIED
    me = await auth.stub().GetCurrentUser(
        auth_pb2.GetCurrentUserRequest(), metadata=bearer(tokens.access_token)
    )
    assert me.user.HasField("last_login_time")
    assert list(me.permissions) == ["payments.create", "payments.process"]


async def test_unknown_email_and_wrong_password_fail_alike_and_cost_the_same(
    auth: AuthHarness, monkeypatch: Any
) -> None:
    user = await auth.register()
    verified: list[bool] = []
    real_verify = auth.app.hasher.verify

    async def counting_verify(password_hash: str | None, password: str) -> PasswordCheck:
        verified.append(password_hash is None)
        return await real_verify(password_hash, password)

    monkeypatch.setattr(auth.app.hasher, "verify", counting_verify)
    wrong = await refused(
        auth.login(user.email, "not the password!"),
        grpc.StatusCode.UNAUTHENTICATED,
        "INVALID_CREDENTIALS",
    )
    unknown = await refused(
        auth.login(unique_email(), "not the password!"),
        grpc.StatusCode.UNAUTHENTICATED,
        "INVALID_CREDENTIALS",
    )
    assert wrong.message == unknown.message
    # Both paths ran one argon2 verification: the unknown email against the dummy hash.
    assert verified == [False, True]
    failures = [
        recorded.security_event
        for recorded in await auth.security_events()
        if recorded.security_event.type == auth_pb2.SECURITY_EVENT_TYPE_LOGIN_FAILED
    ]
    assert [f.subject for f in failures] == [user.name, ""]
    assert all(f.reason == "INVALID_CREDENTIALS" for f in failures)
    assert all(f.actor.client_address == "127.0.0.1" for f in failures)


async def test_repeated_failures_lock_the_account_exponentially_and_the_lock_lifts(
    auth: AuthHarness,
) -> None:
    _admin, admin_tokens = await auth.admin()
    user = await auth.register()
    for _ in range(4):
        await refused(
            auth.login(user.email, "wrong password!!"),
            grpc.StatusCode.UNAUTHENTICATED,
            "INVALID_CREDENTIALS",
        )
    status = await refused(
        auth.login(user.email, "wrong password!!"),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "ACCOUNT_LOCKED",
    )
    assert detail(status, error_details_pb2.RetryInfo).retry_delay.seconds == 60
    # Locked means locked: even the right password is refused until it lifts.
    await refused(auth.login(user.email), grpc.StatusCode.RESOURCE_EXHAUSTED, "ACCOUNT_LOCKED")
    seen = await auth.stub().GetUser(
        auth_pb2.GetUserRequest(name=user.name), metadata=bearer(admin_tokens.access_token)
    )
    assert seen.user.state == auth_pb2.USER_STATE_LOCKED
    assert seen.user.lock_expire_time.seconds == int(
        (auth.clock() + dt.timedelta(seconds=60)).timestamp()
    )
    (event,) = await auth.outbox("user.locked")
    locked = events_pb2.UserLocked()
    event.data.Unpack(locked)
    assert (locked.user, locked.email, locked.failed_attempts) == (user.name, user.email, 5)
    assert locked.lock_duration.seconds == 60
    assert locked.client_address == "127.0.0.1"

    # The attacker keeps going once it lifts: the next lock lasts twice as long.
    auth.clock.advance(dt.timedelta(seconds=61))
    for _ in range(4):
        await refused(
            auth.login(user.email, "wrong password!!"),
            grpc.StatusCode.UNAUTHENTICATED,
            "INVALID_CREDENTIALS",
        )
    status = await refused(
        auth.login(user.email, "wrong password!!"),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "ACCOUNT_LOCKED",
    )
    assert detail(status, error_details_pb2.RetryInfo).retry_delay.seconds == 120
    auth.clock.advance(dt.timedelta(seconds=121))
    # The owner signs in once it lifts, which clears the failure count.
    assert (await auth.login(user.email)).HasField("tokens")
    lock_events = [
        recorded.security_event
        for recorded in await auth.security_events()
        if recorded.security_event.type == auth_pb2.SECURITY_EVENT_TYPE_LOCKED
    ]
    assert [e.details["lock_seconds"] for e in lock_events] == ["60", "120"]
    assert all(e.details["scope"] == "account" for e in lock_events)


async def test_unknown_emails_lock_too_but_announce_nothing(auth: AuthHarness) -> None:
    email = unique_email("nobody")
    for _ in range(4):
        await refused(
            auth.login(email, "guess guess guess"),
            grpc.StatusCode.UNAUTHENTICATED,
            "INVALID_CREDENTIALS",
        )
    await refused(
        auth.login(email, "guess guess guess"), grpc.StatusCode.RESOURCE_EXHAUSTED, "ACCOUNT_LOCKED"
    )
    assert await auth.outbox("user.locked") == []


async def test_many_failures_from_one_address_lock_the_address(
    settings: Settings, certs_dir: Path, database_url: str
) -> None:
    async with running_auth(
        settings, certs_dir, database_url, auth_settings=fast_auth_settings(address_max_failures=3)
    ) as auth:
        user = await auth.register()
        for _ in range(2):
            await refused(
                auth.login(unique_email(), "guess guess guess"),
                grpc.StatusCode.UNAUTHENTICATED,
                "INVALID_CREDENTIALS",
            )
        status = await refused(
            auth.login(unique_email(), "guess guess guess"),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "TOO_MANY_ATTEMPTS",
        )
        assert detail(status, error_details_pb2.RetryInfo).retry_delay.seconds == 60
        # Every account is out of reach from that address while it lasts.
        await refused(
            auth.login(user.email), grpc.StatusCode.RESOURCE_EXHAUSTED, "TOO_MANY_ATTEMPTS"
        )
        auth.clock.advance(dt.timedelta(minutes=2))
        assert (await auth.login(user.email)).HasField("tokens")


async def test_login_rehashes_when_the_argon2_parameters_changed(
    settings: Settings, certs_dir: Path, database_url: str
) -> None:
    kek, clock = secrets.token_bytes(32), TestClock()
    kv = InMemoryKeyValueStore(clock=clock.monotonic)
    common: dict[str, Any] = {"kek": kek, "clock": clock, "kv": kv}
    async with running_auth(settings, certs_dir, database_url, **common) as before:
        user = await before.register()
    stronger = fast_auth_settings(argon2_time_cost=2, argon2_memory_kib=128)
    async with running_auth(
        settings, certs_dir, database_url, auth_settings=stronger, **common
    ) as after:
        async with after.app.database.database.engine.connect() as connection:
            old_hash = (
                await connection.execute(text("SELECT password_hash FROM auth_users"))
            ).scalar_one()
        assert ",t=1," in old_hash
        assert (await after.login(user.email)).HasField("tokens")
        async with after.app.database.database.engine.connect() as connection:
            new_hash = (
                await connection.execute(text("SELECT password_hash FROM auth_users"))
            ).scalar_one()
        assert new_hash.startswith("$argon2id$")
        assert "m=128,t=2,p=1" in new_hash
        # Same password, new hash: it still signs in.
        assert (await after.login(user.email)).HasField("tokens")


async def test_malformed_login_requests_are_invalid_argument(auth: AuthHarness) -> None:
    stub = auth.stub()
    for request, reason in (
        (auth_pb2.LoginRequest(), "INVALID_FIELD"),
        (auth_pb2.LoginRequest(email="a@example.com"), "INVALID_FIELD"),
        (auth_pb2.LoginRequest(email="a@example.com", password="x" * 2000), "INVALID_FIELD"),
        (
            auth_pb2.LoginRequest(email="a@example.com", password=PASSWORD, challenge_token="c"),
            "INVALID_FIELD",
        ),
        (auth_pb2.LoginRequest(challenge_token="c"), "TOTP_REQUIRED"),
        (auth_pb2.LoginRequest(totp_code="123456"), "INVALID_FIELD"),
    ):
        await refused(stub.Login(request), grpc.StatusCode.INVALID_ARGUMENT, reason)
    assert await auth.outbox() == []
