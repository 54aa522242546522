"""Register: normalised unique emails, the password policy, idempotency, limits."""

from __future__ import annotations

from pathlib import Path

import grpc
from google.rpc import error_details_pb2

from gatehouse.auth.v1 import auth_pb2, events_pb2
from gatehouse.runtime.config import Settings
from tests.support.auth import (
    PASSWORD,
    AuthHarness,
    fast_auth_settings,
    refused,
    request_id,
    running_auth,
    unique_email,
)
from tests.support.grpc_calls import detail


async def test_register_creates_an_active_visitor_and_emits_user_registered(
    auth: AuthHarness,
) -> None:
    email = unique_email()
    user = await auth.register(f"  {email.upper()} ", display_name="Ana García")

    assert user.email == email
    assert user.display_name == "Ana García"
    assert list(user.roles) == ["roles/visitor"]
    assert user.state == auth_pb2.USER_STATE_ACTIVE
    assert not user.totp_enabled
    assert user.name.startswith("users/")
    assert user.HasField("password_update_time")
    (event,) = await auth.outbox("user.registered")
    payload = events_pb2.UserRegistered()
    event.data.Unpack(payload)
    assert (event.subject, event.source) == (user.name, "auth")
    assert payload.email == email
    assert list(payload.roles) == ["roles/visitor"]
    assert payload.client_address == "127.0.0.1"
    (recorded,) = await auth.security_events()
    assert recorded.security_event.type == auth_pb2.SECURITY_EVENT_TYPE_USER_REGISTERED
    assert recorded.security_event.subject == user.name


async def test_a_taken_email_is_already_exists_whatever_its_case(auth: AuthHarness) -> None:
    email = unique_email()
    await auth.register(email)
    await refused(auth.register(email.upper()), grpc.StatusCode.ALREADY_EXISTS, "EMAIL_TAKEN")
    assert len(await auth.outbox("user.registered")) == 1


async def test_weak_passwords_are_refused_naming_the_rule(auth: AuthHarness) -> None:
    email = unique_email("anagarcia")
    local = email.partition("@")[0]
    cases = {
        "short1!": "at least 12 characters",
        "x" * 129 + "yz": "at most 128 characters",
        f"my {local.upper()} stuff": "must not contain your email",
        "Password123456": "too common",
        "qwertyuiop123": "too common",
    }
    for password, rule in cases.items():
        status = await refused(
            auth.register(email, password=password),
            grpc.StatusCode.INVALID_ARGUMENT,
            "WEAK_PASSWORD",
        )
        violations = detail(status, error_details_pb2.BadRequest).field_violations
        assert [v.field for v in violations] == ["password"]
        assert rule in violations[0].description
        assert password not in status.message
    assert await auth.outbox() == []


async def test_bad_input_is_invalid_argument_and_writes_nothing(auth: AuthHarness) -> None:
    stub = auth.stub()

    async def register(**fields: str) -> None:
        request = {"email": unique_email(), "password": PASSWORD, "display_name": "Ana"}
        request.update(fields)
        await stub.Register(auth_pb2.RegisterRequest(**request))

    for email in ("not-an-email", "ana@", "a b@example.com", "x" * 250 + "@example.com", ""):
        status = await refused(
            register(email=email), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_EMAIL"
        )
        field_violations = detail(status, error_details_pb2.BadRequest).field_violations
        assert field_violations[0].field == "email"
    for display_name in ("", "   ", "x" * 101, "bad\x07name"):
        await refused(
            register(display_name=display_name), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD"
        )
    await refused(
        register(request_id="not-a-uuid"), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD"
    )
    await refused(register(password=""), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD")
    assert await auth.outbox() == []


async def test_a_retry_with_the_same_request_id_returns_the_first_user(
    auth: AuthHarness,
) -> None:
    request = auth_pb2.RegisterRequest(
        email=unique_email(), password=PASSWORD, display_name="Ana", request_id=request_id()
    )
    first = await auth.stub().Register(request)
    second = await auth.stub().Register(request)
    assert first == second
    assert len(await auth.outbox("user.registered")) == 1

    other = auth_pb2.RegisterRequest()
    other.CopyFrom(request)
    other.display_name = "Someone else"
    await refused(auth.stub().Register(other), grpc.StatusCode.ALREADY_EXISTS, "REQUEST_ID_REUSED")


async def test_registration_can_be_turned_off(
    settings: Settings, certs_dir: Path, database_url: str
) -> None:
    async with running_auth(
        settings,
        certs_dir,
        database_url,
        auth_settings=fast_auth_settings(registration_enabled=False),
    ) as auth:
        await refused(auth.register(), grpc.StatusCode.PERMISSION_DENIED, "REGISTRATION_DISABLED")


async def test_registrations_per_client_address_are_limited(
    settings: Settings, certs_dir: Path, database_url: str
) -> None:
    async with running_auth(
        settings, certs_dir, database_url, auth_settings=fast_auth_settings(register_per_address=2)
    ) as auth:
        await auth.register()
        await auth.register()
        status = await refused(
            auth.register(), grpc.StatusCode.RESOURCE_EXHAUSTED, "TOO_MANY_ATTEMPTS"
        )
        retry = detail(status, error_details_pb2.RetryInfo)
        assert retry.retry_delay.seconds > 0
