"""GetJwks, key rotation, IntrospectToken, forged tokens, and the security audit trail."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
from pathlib import Path

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf import json_format

from gatehouse.auth.v1 import auth_pb2
from gatehouse.common.v1 import common_pb2
from gatehouse.runtime.config import ConfigurationError, Settings
from gatehouse.runtime.identity import JWKS_KEY
from tests.support.auth import (
    AuthHarness,
    bearer,
    fast_auth_settings,
    refused,
    running_auth,
)
from tests.support.grpc_calls import error_info, rich_status


async def test_get_jwks_json_is_a_jwk_set_and_is_what_the_store_holds(auth: AuthHarness) -> None:
    response = await auth.stub().GetJwks(auth_pb2.GetJwksRequest())
    document = json_format.MessageToDict(response)
    (key,) = document["keys"]
    assert set(key) == {"kty", "crv", "x", "kid", "use", "alg"}
    assert (key["kty"], key["crv"], key["alg"], key["use"]) == ("OKP", "Ed25519", "EdDSA", "sig")
    key_set = jwt.PyJWKSet.from_dict(document)
    _, tokens = await auth.signed_in()
    assert jwt.decode(
        tokens.access_token, key_set[key["kid"]], algorithms=["EdDSA"], audience="gatehouse"
    )
    published = await auth.kv.get(JWKS_KEY)
    assert published is not None
    assert json.loads(published) == document


async def test_rotation_keeps_old_tokens_valid_and_signs_new_ones_with_the_new_key(
    auth: AuthHarness,
) -> None:
    user, before = await auth.signed_in()
    old_kid = jwt.get_unverified_header(before.access_token)["kid"]
    new_kid = (await auth.app.rotate_keys(immediately=True)).kid
    assert new_kid != old_kid

    jwks = await auth.stub().GetJwks(auth_pb2.GetJwksRequest())
    assert [k.kid for k in jwks.keys] == [new_kid, old_kid]
    after = (await auth.login(user.email)).tokens
    assert jwt.get_unverified_header(after.access_token)["kid"] == new_kid
    for tokens in (before, after):
        me = await auth.stub().GetCurrentUser(
            auth_pb2.GetCurrentUserRequest(), metadata=bearer(tokens.access_token)
        )
        assert me.user.name == user.name
    refreshed = (
        await auth.stub().RefreshToken(
            auth_pb2.RefreshTokenRequest(refresh_token=before.refresh_token)
        )
    ).tokens
    assert jwt.get_unverified_header(refreshed.access_token)["kid"] == new_kid


async def test_a_rotation_publishes_the_next_key_before_any_token_carries_it(
    auth: AuthHarness,
) -> None:
    user, before = await auth.signed_in()
    old_kid = jwt.get_unverified_header(before.access_token)["kid"]
    upcoming = await auth.app.rotate_keys()
    prepublish = auth.app.settings.signing_key_prepublish
    assert upcoming.activates_at == auth.clock() + prepublish
    # Published at once (in the store every service reads, and over GetJwks for Envoy)...
    jwks = await auth.stub().GetJwks(auth_pb2.GetJwksRequest())
    assert [k.kid for k in jwks.keys] == [old_kid, upcoming.kid]
    published = await auth.kv.get(JWKS_KEY)
    assert published is not None
    assert [k["kid"] for k in json.loads(published)["keys"]] == [old_kid, upcoming.kid]
    # ...while tokens are still signed with the old key until every cache has seen it.
    during = (await auth.login(user.email)).tokens
    assert jwt.get_unverified_header(during.access_token)["kid"] == old_kid
    auth.clock.advance(prepublish)
    after = (await auth.login(user.email)).tokens
    assert jwt.get_unverified_header(after.access_token)["kid"] == upcoming.kid


async def test_a_due_key_is_succeeded_by_a_prepublished_one_exactly_once(
    settings: Settings, certs_dir: Path, database_url: str
) -> None:
    rotation = dt.timedelta(days=30)
    quick = fast_auth_settings(signing_key_rotation=rotation)
    async with running_auth(settings, certs_dir, database_url, auth_settings=quick) as auth:
        (first,) = (await auth.stub().GetJwks(auth_pb2.GetJwksRequest())).keys
        auth.clock.advance(rotation)
        # Every replica's refresher may find the key due; the first adds a successor, the
        # others see it published and add none.
        for _ in range(3):
            await auth.app.refresh_keys()
        keys = (await auth.stub().GetJwks(auth_pb2.GetJwksRequest())).keys
        assert len(keys) == 2
        assert keys[0].kid == first.kid
        assert auth.app.key_ring.current_kid == first.kid
        auth.clock.advance(quick.signing_key_prepublish)
        await auth.app.refresh_keys()
        keys = (await auth.stub().GetJwks(auth_pb2.GetJwksRequest())).keys
        assert [k.kid for k in keys] == [auth.app.key_ring.current_kid, first.kid]
        assert keys[0].kid != first.kid


async def test_the_signing_key_survives_a_restart(
    settings: Settings, certs_dir: Path, database_url: str
) -> None:
    kek = b"k" * 32
    async with running_auth(settings, certs_dir, database_url, kek=kek) as first:
        kid = (await first.stub().GetJwks(auth_pb2.GetJwksRequest())).keys[0].kid
    async with running_auth(settings, certs_dir, database_url, kek=kek) as second:
        again = (await second.stub().GetJwks(auth_pb2.GetJwksRequest())).keys[0].kid
    assert again == kid


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def _forgeries(auth: AuthHarness, good: str) -> dict[str, tuple[str, int]]:
    """Bad tokens -> (the runtime verifier's reason, IntrospectToken's inactive reason)."""
    head, body, signature = good.split(".")
    claims = jwt.decode(good, options={"verify_signature": False})
    kid = jwt.get_unverified_header(good)["kid"]
    stranger = Ed25519PrivateKey.generate()
    now = int(auth.clock().timestamp())
    return {
        "not-a-jwt": ("TOKEN_MALFORMED", auth_pb2.TOKEN_INACTIVE_REASON_MALFORMED),
        f"{_b64({'alg': 'none', 'kid': kid})}.{body}.": (
            "TOKEN_INVALID",
            auth_pb2.TOKEN_INACTIVE_REASON_MALFORMED,
        ),
        jwt.encode(claims, stranger, "EdDSA", headers={"kid": "another-kid"}): (
            "TOKEN_KEY_UNKNOWN",
            auth_pb2.TOKEN_INACTIVE_REASON_UNKNOWN_KEY,
        ),
        jwt.encode(claims, stranger, "EdDSA", headers={"kid": kid}): (
            "TOKEN_INVALID",
            auth_pb2.TOKEN_INACTIVE_REASON_INVALID_SIGNATURE,
        ),
        f"{head}.{_b64({**claims, 'permissions': ['*']})}.{signature}": (
            "TOKEN_INVALID",
            auth_pb2.TOKEN_INACTIVE_REASON_INVALID_SIGNATURE,
        ),
        auth.app.key_ring.sign({**claims, "exp": now - 60, "iat": now - 1000}): (
            "TOKEN_EXPIRED",
            auth_pb2.TOKEN_INACTIVE_REASON_EXPIRED,
        ),
        auth.app.key_ring.sign({**claims, "aud": "elsewhere"}): (
            "TOKEN_INVALID",
            auth_pb2.TOKEN_INACTIVE_REASON_WRONG_AUDIENCE,
        ),
    }


async def test_forged_and_expired_tokens_are_unauthenticated_never_internal(
    auth: AuthHarness,
) -> None:
    _, tokens = await auth.signed_in()
    for token, (reason, _) in _forgeries(auth, tokens.access_token).items():
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await auth.stub().GetCurrentUser(
                auth_pb2.GetCurrentUserRequest(), metadata=bearer(token)
            )
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED, token
        assert error_info(rich_status(raised.value)).reason == reason, token
    # Refused before any handler ran: nothing was written.
    assert [r.security_event.type for r in await auth.security_events()][-1] == (
        auth_pb2.SECURITY_EVENT_TYPE_LOGIN_SUCCEEDED
    )


async def test_introspection_describes_tokens_for_mesh_services_only(auth: AuthHarness) -> None:
    user, tokens = await auth.signed_in()
    payments = auth.stub("payments")
    active = await payments.IntrospectToken(
        auth_pb2.IntrospectTokenRequest(token=tokens.access_token)
    )
    claims = jwt.decode(tokens.access_token, options={"verify_signature": False})
    assert active.active
    assert (active.subject, active.token_id, active.session_id) == (
        user.name,
        claims["jti"],
        claims["sid"],
    )
    assert list(active.roles) == ["roles/visitor"]
    assert active.expire_time.seconds == claims["exp"]

    for token, (_, inactive) in _forgeries(auth, tokens.access_token).items():
        result = await payments.IntrospectToken(auth_pb2.IntrospectTokenRequest(token=token))
        assert (result.active, result.inactive_reason) == (False, inactive), token
        assert result.subject == ""
    rejected = [
        r.security_event
        for r in await auth.security_events()
        if r.security_event.type == auth_pb2.SECURITY_EVENT_TYPE_TOKEN_REJECTED
    ]
    assert {e.reason for e in rejected} == {"MALFORMED", "UNKNOWN_KEY", "INVALID_SIGNATURE"}
    assert all(e.actor.service == "spiffe://gatehouse/payments" for e in rejected)

    # End users and the edge are not mesh services.
    for identity in ("client", "envoy"):
        await refused(
            auth.stub(identity).IntrospectToken(
                auth_pb2.IntrospectTokenRequest(token=tokens.access_token),
                metadata=bearer(tokens.access_token),
            ),
            grpc.StatusCode.PERMISSION_DENIED,
            "INTERNAL_ONLY",
        )
    await refused(
        payments.IntrospectToken(auth_pb2.IntrospectTokenRequest(token="")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_FIELD",
    )


async def test_introspection_sees_revocation_role_changes_and_deletion_at_once(
    auth: AuthHarness,
) -> None:
    _, admin = await auth.admin()
    user, tokens = await auth.signed_in()
    payments = auth.stub("payments")
    await auth.stub().AssignRole(
        auth_pb2.AssignRoleRequest(name=user.name, role="roles/resident"),
        metadata=bearer(admin.access_token),
    )
    live = await payments.IntrospectToken(
        auth_pb2.IntrospectTokenRequest(token=tokens.access_token)
    )
    assert list(live.roles) == ["roles/resident", "roles/visitor"]
    assert "access.pins.issue" in live.permissions

    await auth.stub().Logout(auth_pb2.LogoutRequest(), metadata=bearer(tokens.access_token))
    revoked = await payments.IntrospectToken(
        auth_pb2.IntrospectTokenRequest(token=tokens.access_token)
    )
    assert revoked.inactive_reason == auth_pb2.TOKEN_INACTIVE_REASON_REVOKED

    other = (await auth.login(user.email)).tokens
    await auth.stub().DeleteUser(
        auth_pb2.DeleteUserRequest(name=user.name), metadata=bearer(admin.access_token)
    )
    gone = await payments.IntrospectToken(auth_pb2.IntrospectTokenRequest(token=other.access_token))
    assert gone.inactive_reason in (
        auth_pb2.TOKEN_INACTIVE_REASON_REVOKED,
        auth_pb2.TOKEN_INACTIVE_REASON_USER_INACTIVE,
    )


async def test_introspection_callers_are_configurable(
    settings: Settings, certs_dir: Path, database_url: str
) -> None:
    only_access = fast_auth_settings(introspect_callers=["spiffe://gatehouse/access"])
    async with running_auth(settings, certs_dir, database_url, auth_settings=only_access) as auth:
        _, tokens = await auth.signed_in()
        await refused(
            auth.stub("payments").IntrospectToken(
                auth_pb2.IntrospectTokenRequest(token=tokens.access_token)
            ),
            grpc.StatusCode.PERMISSION_DENIED,
            "CALLER_NOT_ALLOWED",
        )
        allowed = await auth.stub("access").IntrospectToken(
            auth_pb2.IntrospectTokenRequest(token=tokens.access_token)
        )
        assert allowed.active


async def test_security_events_are_filtered_and_paged(auth: AuthHarness) -> None:
    admin_user, admin = await auth.admin()
    me = bearer(admin.access_token)
    user = await auth.register()
    for _ in range(3):
        with contextlib.suppress(grpc.aio.AioRpcError):
            await auth.login(user.email, "wrong password!!")
    stub = auth.stub()
    failures = await stub.ListSecurityEvents(
        auth_pb2.ListSecurityEventsRequest(
            user=user.name, types=[auth_pb2.SECURITY_EVENT_TYPE_LOGIN_FAILED]
        ),
        metadata=me,
    )
    assert len(failures.security_events) == 3
    assert all(e.subject == user.name for e in failures.security_events)
    assert all(e.details["email"] == user.email for e in failures.security_events)

    everything: list[auth_pb2.SecurityEvent] = []
    token = ""
    while True:
        page = await stub.ListSecurityEvents(
            auth_pb2.ListSecurityEventsRequest(page_size=2, page_token=token, order_by="time"),
            metadata=me,
        )
        everything += page.security_events
        token = page.next_page_token
        if not token:
            break
    names = [e.name for e in everything]
    assert names == sorted(names)
    assert len(set(names)) == len(names)
    newest_first = await stub.ListSecurityEvents(auth_pb2.ListSecurityEventsRequest(), metadata=me)
    assert [e.name for e in newest_first.security_events] == list(reversed(names))

    outcomes = await stub.ListSecurityEvents(
        auth_pb2.ListSecurityEventsRequest(
            outcome=auth_pb2.SECURITY_EVENT_OUTCOME_SUCCESS, client_address="127.0.0.1"
        ),
        metadata=me,
    )
    assert {e.type for e in outcomes.security_events} == {
        auth_pb2.SECURITY_EVENT_TYPE_USER_REGISTERED,
        auth_pb2.SECURITY_EVENT_TYPE_LOGIN_SUCCEEDED,
    }
    assert admin_user.name in {e.subject for e in outcomes.security_events}
    later = common_pb2.TimeRange()
    later.start_time.FromDatetime(auth.clock() + dt.timedelta(hours=1))
    none = await stub.ListSecurityEvents(
        auth_pb2.ListSecurityEventsRequest(time_range=later), metadata=me
    )
    assert list(none.security_events) == []
    serious = await stub.ListSecurityEvents(
        auth_pb2.ListSecurityEventsRequest(min_severity=common_pb2.SEVERITY_HIGH), metadata=me
    )
    assert list(serious.security_events) == []

    backwards = common_pb2.TimeRange()
    backwards.start_time.FromDatetime(auth.clock())
    backwards.end_time.FromDatetime(auth.clock() - dt.timedelta(hours=1))
    for bad in (
        auth_pb2.ListSecurityEventsRequest(time_range=backwards),
        auth_pb2.ListSecurityEventsRequest(order_by="severity"),
        auth_pb2.ListSecurityEventsRequest(user="bob"),
        auth_pb2.ListSecurityEventsRequest(types=[99]),  # type: ignore[list-item]
    ):
        await refused(
            stub.ListSecurityEvents(bad, metadata=me),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_FIELD",
        )
    first = await stub.ListSecurityEvents(
        auth_pb2.ListSecurityEventsRequest(page_size=1), metadata=me
    )
    await refused(
        stub.ListSecurityEvents(
            auth_pb2.ListSecurityEventsRequest(
                page_size=1, page_token=first.next_page_token, user=user.name
            ),
            metadata=me,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_PAGE_TOKEN",
    )


async def test_starting_with_another_key_encryption_key_is_a_clear_error(
    settings: Settings, certs_dir: Path, database_url: str
) -> None:
    async with running_auth(settings, certs_dir, database_url, kek=b"a" * 32):
        pass
    with pytest.raises(ConfigurationError, match="key-encryption key does not open"):
        async with running_auth(settings, certs_dir, database_url, kek=b"b" * 32):
            pass
