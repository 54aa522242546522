"""ChangePassword and the password reset: single use, expiry, sessions revoked, lockout."""

from __future__ import annotations

import contextlib
import datetime as dt

import grpc
from google.rpc import error_details_pb2

from gatehouse.auth.v1 import auth_pb2, events_pb2
from tests.support.auth import PASSWORD, AuthHarness, bearer, refused, unique_email
from tests.support.grpc_calls import detail

NEW_PASSWORD = "a brand new passphrase"


async def _change(
    auth: AuthHarness, access_token: str, current: str, new: str, totp_code: str = ""
) -> auth_pb2.ChangePasswordResponse:
    response: auth_pb2.ChangePasswordResponse = await auth.stub().ChangePassword(
        auth_pb2.ChangePasswordRequest(
            current_password=current, new_password=new, totp_code=totp_code
        ),
        metadata=bearer(access_token),
    )
    return response


async def test_change_password_keeps_this_session_and_ends_the_others(
    auth: AuthHarness,
) -> None:
    user, tokens = await auth.signed_in()
    other = (await auth.login(user.email)).tokens

    response = await _change(auth, tokens.access_token, PASSWORD, NEW_PASSWORD)

    assert response.revoked_session_count == 1
    await auth.stub().GetCurrentUser(
        auth_pb2.GetCurrentUserRequest(), metadata=bearer(tokens.access_token)
    )
    await refused(
        auth.stub().GetCurrentUser(
            auth_pb2.GetCurrentUserRequest(), metadata=bearer(other.access_token)
        ),
        grpc.StatusCode.UNAUTHENTICATED,
        "TOKEN_REVOKED",
    )
    await refused(auth.login(user.email), grpc.StatusCode.UNAUTHENTICATED, "INVALID_CREDENTIALS")
    assert (await auth.login(user.email, NEW_PASSWORD)).HasField("tokens")
    (event,) = await auth.outbox("user.password_changed")
    changed = events_pb2.UserPasswordChanged()
    event.data.Unpack(changed)
    assert (changed.user, changed.method) == (user.name, events_pb2.PASSWORD_CHANGE_METHOD_CHANGE)


async def test_change_password_refusals(auth: AuthHarness) -> None:
    user, tokens = await auth.signed_in()
    access = tokens.access_token
    await refused(
        _change(auth, access, PASSWORD, "short"), grpc.StatusCode.INVALID_ARGUMENT, "WEAK_PASSWORD"
    )
    status = await refused(
        _change(auth, access, PASSWORD, PASSWORD),
        grpc.StatusCode.INVALID_ARGUMENT,
        "WEAK_PASSWORD",
    )
    assert "differ" in detail(status, error_details_pb2.BadRequest).field_violations[0].description
    await refused(
        _change(auth, access, "", NEW_PASSWORD), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD"
    )
    # A wrong current password is PERMISSION_DENIED (the session stays) and counts toward
    # the account's lockout, like a failed sign-in.
    for _ in range(4):
        await refused(
            _change(auth, access, "not my password", NEW_PASSWORD),
            grpc.StatusCode.PERMISSION_DENIED,
            "INVALID_CREDENTIALS",
        )
    await refused(
        _change(auth, access, "not my password", NEW_PASSWORD),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "ACCOUNT_LOCKED",
    )
    await refused(
        _change(auth, access, PASSWORD, NEW_PASSWORD),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "ACCOUNT_LOCKED",
    )
    await refused(
        auth.stub().ChangePassword(auth_pb2.ChangePasswordRequest()),
        grpc.StatusCode.UNAUTHENTICATED,
        "TOKEN_MISSING",
    )
    assert await auth.outbox("user.password_changed") == []
    denied = [
        r.security_event
        for r in await auth.security_events()
        if r.security_event.type == auth_pb2.SECURITY_EVENT_TYPE_PERMISSION_DENIED
    ]
    assert {e.reason for e in denied} >= {"INVALID_CREDENTIALS"}
    assert all(e.subject == user.name for e in denied)


async def _request_reset(auth: AuthHarness, email: str) -> None:
    await auth.stub().RequestPasswordReset(auth_pb2.RequestPasswordResetRequest(email=email))


async def _reset_tokens(auth: AuthHarness) -> list[events_pb2.PasswordResetRequested]:
    found = []
    for event in await auth.outbox("password_reset.requested"):
        payload = events_pb2.PasswordResetRequested()
        event.data.Unpack(payload)
        found.append(payload)
    return found


async def _reset(auth: AuthHarness, token: str, password: str = NEW_PASSWORD) -> str:
    response = await auth.stub().ResetPassword(
        auth_pb2.ResetPasswordRequest(reset_token=token, new_password=password)
    )
    return response.user


async def test_reset_token_is_single_use_and_revokes_every_session(auth: AuthHarness) -> None:
    user, tokens = await auth.signed_in()
    await _request_reset(auth, user.email.upper())
    (requested,) = await _reset_tokens(auth)
    assert (requested.user, requested.email) == (user.name, user.email)
    assert requested.client_address == "127.0.0.1"
    expires = requested.expire_time.ToDatetime(tzinfo=dt.UTC)
    assert expires - auth.clock() == dt.timedelta(minutes=30)
    # Stored hashed: the token itself is nowhere in the database.
    async with auth.app.database.database.engine.connect() as connection:
        from sqlalchemy import text  # noqa: PLC0415

        hashes = (
            await connection.execute(text("SELECT token_hash FROM auth_password_resets"))
        ).all()
    assert requested.reset_token not in {row[0] for row in hashes}

    await refused(
        _reset(auth, requested.reset_token, "short"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "WEAK_PASSWORD",
    )
    assert await _reset(auth, requested.reset_token) == user.name
    await refused(
        _reset(auth, requested.reset_token, "yet another passphrase"),
        grpc.StatusCode.UNAUTHENTICATED,
        "RESET_TOKEN_INVALID",
    )
    await refused(
        auth.stub().GetCurrentUser(
            auth_pb2.GetCurrentUserRequest(), metadata=bearer(tokens.access_token)
        ),
        grpc.StatusCode.UNAUTHENTICATED,
        "TOKEN_REVOKED",
    )
    assert (await auth.login(user.email, NEW_PASSWORD)).HasField("tokens")
    (event,) = await auth.outbox("user.password_changed")
    changed = events_pb2.UserPasswordChanged()
    event.data.Unpack(changed)
    assert changed.method == events_pb2.PASSWORD_CHANGE_METHOD_RESET


async def test_reset_tokens_expire_and_only_the_newest_works(auth: AuthHarness) -> None:
    user = await auth.register()
    await _request_reset(auth, user.email)
    await _request_reset(auth, user.email)
    older, newer = await _reset_tokens(auth)
    await refused(
        _reset(auth, older.reset_token), grpc.StatusCode.UNAUTHENTICATED, "RESET_TOKEN_INVALID"
    )
    auth.clock.advance(dt.timedelta(minutes=31))
    await refused(
        _reset(auth, newer.reset_token), grpc.StatusCode.UNAUTHENTICATED, "RESET_TOKEN_EXPIRED"
    )
    await refused(
        _reset(auth, "never-issued"), grpc.StatusCode.UNAUTHENTICATED, "RESET_TOKEN_INVALID"
    )
    await refused(_reset(auth, ""), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD")


async def test_reset_answers_alike_whether_or_not_the_account_exists(auth: AuthHarness) -> None:
    unknown = await auth.stub().RequestPasswordReset(
        auth_pb2.RequestPasswordResetRequest(email=unique_email("nobody"))
    )
    user = await auth.register()
    known = await auth.stub().RequestPasswordReset(
        auth_pb2.RequestPasswordResetRequest(email=user.email)
    )
    assert unknown == known == auth_pb2.RequestPasswordResetResponse()
    assert len(await _reset_tokens(auth)) == 1
    await refused(
        _request_reset(auth, "not an email"), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_EMAIL"
    )


async def test_reset_requests_are_limited_per_email(auth: AuthHarness) -> None:
    user = await auth.register()
    for _ in range(3):
        await _request_reset(auth, user.email)
    status = await refused(
        _request_reset(auth, user.email), grpc.StatusCode.RESOURCE_EXHAUSTED, "TOO_MANY_ATTEMPTS"
    )
    assert detail(status, error_details_pb2.RetryInfo).retry_delay.seconds > 0


async def test_a_reset_lifts_the_lockout(auth: AuthHarness) -> None:
    user = await auth.register()
    for _ in range(5):
        with contextlib.suppress(grpc.aio.AioRpcError):
            await auth.login(user.email, "wrong password!!")
    await refused(auth.login(user.email), grpc.StatusCode.RESOURCE_EXHAUSTED, "ACCOUNT_LOCKED")
    await _request_reset(auth, user.email)
    (requested,) = await _reset_tokens(auth)
    await _reset(auth, requested.reset_token)
    assert (await auth.login(user.email, NEW_PASSWORD)).HasField("tokens")
