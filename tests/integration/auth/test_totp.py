"""The TOTP second factor: enrollment, the login challenge, replayed codes, recovery codes."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import grpc
import pyotp

from gatehouse.auth.v1 import auth_pb2, events_pb2
from gatehouse.runtime.config import Settings
from gatehouse.runtime.ids import new_ulid
from tests.support.auth import (
    PASSWORD,
    AuthHarness,
    bearer,
    fast_auth_settings,
    refused,
    running_auth,
)

STEP = dt.timedelta(seconds=30)


def code_now(auth: AuthHarness, secret: str) -> str:
    return pyotp.TOTP(secret).at(int(auth.clock().timestamp()))


async def enable_totp(auth: AuthHarness, access_token: str) -> tuple[str, list[str], auth_pb2.User]:
    stub = auth.stub()
    enrollment = await stub.EnrollTotp(
        auth_pb2.EnrollTotpRequest(password=PASSWORD), metadata=bearer(access_token)
    )
    confirmed = await stub.ConfirmTotp(
        auth_pb2.ConfirmTotpRequest(totp_code=code_now(auth, enrollment.secret)),
        metadata=bearer(access_token),
    )
    return enrollment.secret, list(confirmed.recovery_codes), confirmed.user


async def second_step(
    auth: AuthHarness, email: str, *, totp_code: str = "", recovery_code: str = ""
) -> auth_pb2.LoginResponse:
    first = await auth.login(email)
    assert first.HasField("challenge"), first
    request = auth_pb2.LoginRequest(challenge_token=first.challenge.challenge_token)
    if totp_code:
        request.totp_code = totp_code
    else:
        request.recovery_code = recovery_code
    response: auth_pb2.LoginResponse = await auth.stub().Login(request)
    return response


async def test_enroll_then_confirm_turns_totp_on_with_recovery_codes(auth: AuthHarness) -> None:
    user, tokens = await auth.signed_in()
    enrollment = await auth.stub().EnrollTotp(
        auth_pb2.EnrollTotpRequest(password=PASSWORD), metadata=bearer(tokens.access_token)
    )
    assert enrollment.otpauth_uri.startswith("otpauth://totp/Gatehouse:")
    assert f"secret={enrollment.secret}" in enrollment.otpauth_uri
    assert enrollment.expire_time.ToDatetime(tzinfo=dt.UTC) - auth.clock() == dt.timedelta(
        minutes=10
    )
    # Pending is not active: sign-in does not ask for a code yet.
    assert (await auth.login(user.email)).HasField("tokens")

    confirmed = await auth.stub().ConfirmTotp(
        auth_pb2.ConfirmTotpRequest(totp_code=code_now(auth, enrollment.secret)),
        metadata=bearer(tokens.access_token),
    )
    assert confirmed.user.totp_enabled
    assert len(confirmed.recovery_codes) == 10
    assert all(len(code) == 9 and code[4] == "-" for code in confirmed.recovery_codes)
    await refused(
        auth.stub().EnrollTotp(
            auth_pb2.EnrollTotpRequest(password=PASSWORD), metadata=bearer(tokens.access_token)
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "TOTP_ALREADY_ENABLED",
    )
    kinds = [r.security_event.type for r in await auth.security_events()]
    assert auth_pb2.SECURITY_EVENT_TYPE_TOTP_ENABLED in kinds


async def test_enrollment_refusals(auth: AuthHarness) -> None:
    _, tokens = await auth.signed_in()
    me = bearer(tokens.access_token)
    stub = auth.stub()
    await refused(
        stub.EnrollTotp(auth_pb2.EnrollTotpRequest(password="wrong password"), metadata=me),
        grpc.StatusCode.PERMISSION_DENIED,
        "INVALID_CREDENTIALS",
    )
    await refused(
        stub.ConfirmTotp(auth_pb2.ConfirmTotpRequest(totp_code="123456"), metadata=me),
        grpc.StatusCode.FAILED_PRECONDITION,
        "TOTP_NOT_ENROLLED",
    )
    enrollment = await stub.EnrollTotp(auth_pb2.EnrollTotpRequest(password=PASSWORD), metadata=me)
    await refused(
        stub.ConfirmTotp(auth_pb2.ConfirmTotpRequest(totp_code="12345"), metadata=me),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_FIELD",
    )
    wrong = "000000" if code_now(auth, enrollment.secret) != "000000" else "111111"
    await refused(
        stub.ConfirmTotp(auth_pb2.ConfirmTotpRequest(totp_code=wrong), metadata=me),
        grpc.StatusCode.PERMISSION_DENIED,
        "TOTP_INVALID",
    )
    auth.clock.advance(dt.timedelta(minutes=11))
    await refused(
        stub.ConfirmTotp(
            auth_pb2.ConfirmTotpRequest(totp_code=code_now(auth, enrollment.secret)), metadata=me
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "TOTP_NOT_ENROLLED",
    )


async def test_login_asks_for_the_code_and_refuses_wrong_and_replayed_ones(
    auth: AuthHarness,
) -> None:
    user, tokens = await auth.signed_in()
    secret, _, _ = await enable_totp(auth, tokens.access_token)

    first = await auth.login(user.email)
    assert not first.HasField("tokens")
    assert list(first.challenge.methods) == [
        auth_pb2.SECOND_FACTOR_TYPE_TOTP,
        auth_pb2.SECOND_FACTOR_TYPE_RECOVERY_CODE,
    ]
    wrong = "000000" if code_now(auth, secret) != "000000" else "111111"
    await refused(
        second_step(auth, user.email, totp_code=wrong),
        grpc.StatusCode.UNAUTHENTICATED,
        "TOTP_INVALID",
    )
    # The code that confirmed the enrollment was used in this step: a replay.
    await refused(
        second_step(auth, user.email, totp_code=code_now(auth, secret)),
        grpc.StatusCode.UNAUTHENTICATED,
        "TOTP_INVALID",
    )
    auth.clock.advance(STEP)
    fresh = code_now(auth, secret)
    signed_in = await second_step(auth, user.email, totp_code=fresh)
    assert signed_in.HasField("tokens")
    assert signed_in.user == user.name
    await refused(
        second_step(auth, user.email, totp_code=fresh),
        grpc.StatusCode.UNAUTHENTICATED,
        "TOTP_INVALID",
    )
    (login, *_) = [e for e in await auth.outbox("user.login")][-1:]
    payload = events_pb2.UserLoggedIn()
    login.data.Unpack(payload)
    assert payload.second_factor == auth_pb2.SECOND_FACTOR_TYPE_TOTP


async def test_recovery_codes_work_once_each(auth: AuthHarness) -> None:
    user, tokens = await auth.signed_in()
    _, codes, _ = await enable_totp(auth, tokens.access_token)
    typed = codes[0].replace("-", "").upper()  # dashes and case are ignored
    assert (await second_step(auth, user.email, recovery_code=typed)).HasField("tokens")
    await refused(
        second_step(auth, user.email, recovery_code=codes[0]),
        grpc.StatusCode.UNAUTHENTICATED,
        "TOTP_INVALID",
    )
    assert (await second_step(auth, user.email, recovery_code=codes[1])).HasField("tokens")
    await refused(
        second_step(auth, user.email, recovery_code="zzzz-zzzz"),
        grpc.StatusCode.UNAUTHENTICATED,
        "TOTP_INVALID",
    )
    kinds = [r.security_event.type for r in await auth.security_events()]
    assert kinds.count(auth_pb2.SECURITY_EVENT_TYPE_RECOVERY_CODE_USED) == 2


async def test_a_challenge_allows_few_attempts_and_expires(
    settings: Settings, certs_dir: Path, database_url: str
) -> None:
    async with running_auth(
        settings,
        certs_dir,
        database_url,
        auth_settings=fast_auth_settings(challenge_max_attempts=3),
    ) as auth:
        user, tokens = await auth.signed_in()
        secret, _, _ = await enable_totp(auth, tokens.access_token)
        auth.clock.advance(STEP)
        challenge = (await auth.login(user.email)).challenge.challenge_token
        wrong = "000000" if code_now(auth, secret) != "000000" else "111111"

        async def answer(code: str) -> None:
            await auth.stub().Login(
                auth_pb2.LoginRequest(challenge_token=challenge, totp_code=code)
            )

        for _ in range(3):
            await refused(answer(wrong), grpc.StatusCode.UNAUTHENTICATED, "TOTP_INVALID")
        await refused(
            answer(code_now(auth, secret)), grpc.StatusCode.UNAUTHENTICATED, "CHALLENGE_INVALID"
        )
        late = (await auth.login(user.email)).challenge.challenge_token
        auth.clock.advance(dt.timedelta(minutes=6))
        await refused(
            auth.stub().Login(
                auth_pb2.LoginRequest(challenge_token=late, totp_code=code_now(auth, secret))
            ),
            grpc.StatusCode.UNAUTHENTICATED,
            "CHALLENGE_INVALID",
        )
        await refused(
            auth.stub().Login(auth_pb2.LoginRequest(challenge_token="made-up", totp_code="123456")),
            grpc.StatusCode.UNAUTHENTICATED,
            "CHALLENGE_INVALID",
        )


async def test_change_password_with_totp_needs_a_code(auth: AuthHarness) -> None:
    _, tokens = await auth.signed_in()
    secret, _, _ = await enable_totp(auth, tokens.access_token)
    change = auth_pb2.ChangePasswordRequest(
        current_password=PASSWORD, new_password="another passphrase!"
    )
    await refused(
        auth.stub().ChangePassword(change, metadata=bearer(tokens.access_token)),
        grpc.StatusCode.FAILED_PRECONDITION,
        "TOTP_REQUIRED",
    )
    change.totp_code = code_now(auth, secret)  # the step the confirmation used: a replay
    await refused(
        auth.stub().ChangePassword(change, metadata=bearer(tokens.access_token)),
        grpc.StatusCode.PERMISSION_DENIED,
        "TOTP_INVALID",
    )
    auth.clock.advance(STEP)
    change.totp_code = code_now(auth, secret)
    await auth.stub().ChangePassword(change, metadata=bearer(tokens.access_token))


async def test_disabling_totp_yourself_takes_the_password_and_a_code(auth: AuthHarness) -> None:
    user, tokens = await auth.signed_in()
    secret, codes, _ = await enable_totp(auth, tokens.access_token)
    me = bearer(tokens.access_token)
    stub = auth.stub()
    await refused(
        stub.DisableTotp(
            auth_pb2.DisableTotpRequest(name="users/me/totp", password=PASSWORD), metadata=me
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "TOTP_REQUIRED",
    )
    await refused(
        stub.DisableTotp(
            auth_pb2.DisableTotpRequest(
                name="users/me/totp", password="wrong password", recovery_code=codes[0]
            ),
            metadata=me,
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        "INVALID_CREDENTIALS",
    )
    disabled = await stub.DisableTotp(
        auth_pb2.DisableTotpRequest(
            name=f"{user.name}/totp", password=PASSWORD, recovery_code=codes[0]
        ),
        metadata=me,
    )
    assert not disabled.user.totp_enabled
    assert (await auth.login(user.email)).HasField("tokens")
    await refused(
        stub.DisableTotp(
            auth_pb2.DisableTotpRequest(
                name="users/me/totp", password=PASSWORD, totp_code="123456"
            ),
            metadata=me,
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "TOTP_NOT_ENABLED",
    )
    del secret


async def test_an_administrator_may_disable_another_users_totp(auth: AuthHarness) -> None:
    admin_user, admin_tokens = await auth.admin()
    user, tokens = await auth.signed_in()
    _, bystander_tokens = await auth.signed_in()
    await enable_totp(auth, tokens.access_token)
    request = auth_pb2.DisableTotpRequest(name=f"{user.name}/totp")
    await refused(
        auth.stub().DisableTotp(request, metadata=bearer(bystander_tokens.access_token)),
        grpc.StatusCode.PERMISSION_DENIED,
        "PERMISSION_MISSING",
    )
    response = await auth.stub().DisableTotp(request, metadata=bearer(admin_tokens.access_token))
    assert not response.user.totp_enabled
    await refused(
        auth.stub().DisableTotp(
            auth_pb2.DisableTotpRequest(name=f"users/{new_ulid()}/totp"),
            metadata=bearer(admin_tokens.access_token),
        ),
        grpc.StatusCode.NOT_FOUND,
        "USER_NOT_FOUND",
    )
    await refused(
        auth.stub().DisableTotp(
            auth_pb2.DisableTotpRequest(name="users/not-an-id/totp"),
            metadata=bearer(admin_tokens.access_token),
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_NAME",
    )
    kinds = [r.security_event for r in await auth.security_events()]
    disabled = [e for e in kinds if e.type == auth_pb2.SECURITY_EVENT_TYPE_TOTP_DISABLED]
    # The actor is the administrator, the subject the user whose factor went.
    assert [(e.actor.user, e.subject) for e in disabled] == [(admin_user.name, user.name)]
