"""RefreshToken rotation and the reuse attack; Logout and the shared revocation list."""

from __future__ import annotations

import datetime as dt

import grpc
import jwt

from gatehouse.auth.v1 import auth_pb2
from tests.support.auth import AuthHarness, bearer, refused, request_id


async def _refresh(auth: AuthHarness, token: str, rid: str = "") -> auth_pb2.Tokens:
    response = await auth.stub().RefreshToken(
        auth_pb2.RefreshTokenRequest(refresh_token=token, request_id=rid)
    )
    return response.tokens


async def _me(auth: AuthHarness, access_token: str) -> auth_pb2.GetCurrentUserResponse:
    response: auth_pb2.GetCurrentUserResponse = await auth.stub().GetCurrentUser(
        auth_pb2.GetCurrentUserRequest(), metadata=bearer(access_token)
    )
    return response


async def test_refresh_rotates_both_tokens_within_the_session(auth: AuthHarness) -> None:
    _, tokens = await auth.signed_in()
    rotated = await _refresh(auth, tokens.refresh_token)

    assert rotated.refresh_token != tokens.refresh_token
    assert rotated.access_token != tokens.access_token
    old, new = (
        jwt.decode(t.access_token, options={"verify_signature": False}) for t in (tokens, rotated)
    )
    assert new["sid"] == old["sid"]
    assert new["jti"] != old["jti"]
    # The session's absolute expiry is kept.
    assert rotated.refresh_expire_time == tokens.refresh_expire_time
    await _me(auth, rotated.access_token)
    # And the new refresh token rotates again.
    await _refresh(auth, rotated.refresh_token)


async def test_a_reused_refresh_token_revokes_the_whole_family(auth: AuthHarness) -> None:
    user, stolen = await auth.signed_in()
    legitimate = await _refresh(auth, stolen.refresh_token)

    # The thief replays the spent token: refused, and the session ends for everyone.
    await refused(
        _refresh(auth, stolen.refresh_token),
        grpc.StatusCode.UNAUTHENTICATED,
        "REFRESH_TOKEN_REUSED",
    )
    await refused(
        _refresh(auth, legitimate.refresh_token),
        grpc.StatusCode.UNAUTHENTICATED,
        "REFRESH_TOKEN_INVALID",
    )
    # The session's live access tokens are on the shared revocation list.
    for access_token in (stolen.access_token, legitimate.access_token):
        await refused(_me(auth, access_token), grpc.StatusCode.UNAUTHENTICATED, "TOKEN_REVOKED")
    reuse = [
        recorded.security_event
        for recorded in await auth.security_events()
        if recorded.security_event.type == auth_pb2.SECURITY_EVENT_TYPE_REFRESH_TOKEN_REUSED
    ]
    assert len(reuse) == 1
    assert reuse[0].subject == user.name
    assert reuse[0].severity >= 4  # HIGH
    assert reuse[0].outcome == auth_pb2.SECURITY_EVENT_OUTCOME_DENIED
    # Other sessions of the same user are untouched.
    other = (await auth.login(user.email)).tokens
    await _me(auth, other.access_token)


async def test_a_retry_with_the_same_request_id_is_not_reuse(auth: AuthHarness) -> None:
    _, tokens = await auth.signed_in()
    rid = request_id()
    first = await _refresh(auth, tokens.refresh_token, rid)
    second = await _refresh(auth, tokens.refresh_token, rid)  # the first reply was lost
    assert first == second
    await _me(auth, first.access_token)
    await _refresh(auth, first.refresh_token)
    # The replayed reply is stored sealed: no refresh token in clear in the database.
    async with auth.app.database.database.engine.connect() as connection:
        from sqlalchemy import text  # noqa: PLC0415

        stored = (await connection.execute(text("SELECT response FROM idempotency_records"))).all()
    assert stored
    assert all(first.refresh_token.encode() not in row[0] for row in stored)
    # Without the request id, presenting it again is reuse.
    await refused(
        _refresh(auth, tokens.refresh_token),
        grpc.StatusCode.UNAUTHENTICATED,
        "REFRESH_TOKEN_REUSED",
    )


async def test_expired_unknown_and_malformed_refresh_tokens(auth: AuthHarness) -> None:
    _, tokens = await auth.signed_in()
    await refused(
        _refresh(auth, "no-such-token"), grpc.StatusCode.UNAUTHENTICATED, "REFRESH_TOKEN_INVALID"
    )
    await refused(_refresh(auth, ""), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD")
    await refused(_refresh(auth, "x" * 1000), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD")
    auth.clock.advance(dt.timedelta(days=31))
    await refused(
        _refresh(auth, tokens.refresh_token),
        grpc.StatusCode.UNAUTHENTICATED,
        "REFRESH_TOKEN_EXPIRED",
    )


async def test_role_changes_reach_the_refreshed_access_token(auth: AuthHarness) -> None:
    _, admin_tokens = await auth.admin()
    user, tokens = await auth.signed_in()
    await auth.stub().AssignRole(
        auth_pb2.AssignRoleRequest(name=user.name, role="roles/resident"),
        metadata=bearer(admin_tokens.access_token),
    )
    claims = jwt.decode(
        (await _refresh(auth, tokens.refresh_token)).access_token,
        options={"verify_signature": False},
    )
    assert claims["roles"] == ["roles/resident", "roles/visitor"]
    assert "access.pins.issue" in claims["permissions"]


async def test_logout_revokes_the_session_and_its_access_token_everywhere(
    auth: AuthHarness,
) -> None:
    user, tokens = await auth.signed_in()
    other = (await auth.login(user.email)).tokens
    response = await auth.stub().Logout(
        auth_pb2.LogoutRequest(), metadata=bearer(tokens.access_token)
    )
    assert response.revoked_session_count == 1
    jti = jwt.decode(tokens.access_token, options={"verify_signature": False})["jti"]
    # Every service's verifier reads the same list.
    assert await auth.verifier._revocations.is_revoked(jti)
    await refused(_me(auth, tokens.access_token), grpc.StatusCode.UNAUTHENTICATED, "TOKEN_REVOKED")
    await refused(
        _refresh(auth, tokens.refresh_token),
        grpc.StatusCode.UNAUTHENTICATED,
        "REFRESH_TOKEN_INVALID",
    )
    # The other session lives on.
    await _me(auth, other.access_token)
    logouts = [
        r.security_event
        for r in await auth.security_events()
        if r.security_event.type == auth_pb2.SECURITY_EVENT_TYPE_LOGOUT
    ]
    assert [e.subject for e in logouts] == [user.name]


async def test_logout_with_the_refresh_token_alone_and_of_every_session(
    auth: AuthHarness,
) -> None:
    user, first = await auth.signed_in()
    second = (await auth.login(user.email)).tokens
    third = (await auth.login(user.email)).tokens

    # An expired access token is not sent: the refresh token proves the session.
    ended = await auth.stub().Logout(auth_pb2.LogoutRequest(refresh_token=first.refresh_token))
    assert ended.revoked_session_count == 1
    again = await auth.stub().Logout(auth_pb2.LogoutRequest(refresh_token=first.refresh_token))
    assert again.revoked_session_count == 0  # already ended: still a success

    everything = await auth.stub().Logout(
        auth_pb2.LogoutRequest(all_sessions=True), metadata=bearer(second.access_token)
    )
    assert everything.revoked_session_count == 2
    for tokens in (second, third):
        await refused(
            _me(auth, tokens.access_token), grpc.StatusCode.UNAUTHENTICATED, "TOKEN_REVOKED"
        )


async def test_logout_needs_a_credential(auth: AuthHarness) -> None:
    await refused(
        auth.stub().Logout(auth_pb2.LogoutRequest()),
        grpc.StatusCode.UNAUTHENTICATED,
        "TOKEN_MISSING",
    )
    await refused(
        auth.stub().Logout(auth_pb2.LogoutRequest(refresh_token="unknown")),
        grpc.StatusCode.UNAUTHENTICATED,
        "REFRESH_TOKEN_INVALID",
    )
