"""What auth's logs say about a session's life: one JSON line per RPC naming the method,
status, duration, trace and caller, and never a password or a token (ARCHITECTURE §9)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import grpc
import pytest

from gatehouse.auth.v1 import auth_pb2
from gatehouse.runtime.structured_logging import JsonFormatter
from tests.support.auth import PASSWORD, AuthHarness, bearer, unique_email


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """Everything every logger writes during the test, formatted as in production."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("auth"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


async def test_a_sessions_life_logs_every_rpc_and_no_secret(
    auth: AuthHarness, log_lines: io.StringIO
) -> None:
    email = unique_email()
    user = await auth.register(email)
    tokens = (await auth.login(email)).tokens
    with pytest.raises(grpc.aio.AioRpcError):
        await auth.login(email, "wrong horse battery")
    me = await auth.stub().GetCurrentUser(
        auth_pb2.GetCurrentUserRequest(), metadata=bearer(tokens.access_token)
    )
    refreshed = (
        await auth.stub().RefreshToken(
            auth_pb2.RefreshTokenRequest(refresh_token=tokens.refresh_token)
        )
    ).tokens
    new_password = "a much better passphrase"
    await auth.stub().ChangePassword(
        auth_pb2.ChangePasswordRequest(current_password=PASSWORD, new_password=new_password),
        metadata=bearer(refreshed.access_token),
    )
    with pytest.raises(grpc.aio.AioRpcError):
        await auth.stub().GetCurrentUser(
            auth_pb2.GetCurrentUserRequest(), metadata=bearer(tokens.access_token + "x")
        )

    text = log_lines.getvalue()
    for secret in (
        PASSWORD,
        "wrong horse battery",
        new_password,
        tokens.access_token,
        tokens.refresh_token,
        refreshed.access_token,
        refreshed.refresh_token,
    ):
        assert secret not in text
    lines = [json.loads(line) for line in text.splitlines()]
    rpcs = [line for line in lines if line["logger"] == "gatehouse.rpc"]
    methods = [line["rpc_method"].rsplit("/", 1)[1] for line in rpcs]
    assert methods == [
        "Register",
        "Login",
        "Login",
        "GetCurrentUser",
        "RefreshToken",
        "ChangePassword",
        "GetCurrentUser",
    ]
    codes = [line["grpc_code"] for line in rpcs]
    assert codes[2] != "OK"
    assert codes[-1] == "UNAUTHENTICATED"
    for line in rpcs:
        assert line["service"] == "auth"
        assert isinstance(line["duration_ms"], float)
        assert len(line["trace_id"]) == 32
        assert line["caller_peer"] == "spiffe://gatehouse/client"
    # An authenticated call names its user; the refused token names nobody.
    assert rpcs[3]["caller_user"] == me.user.name == user.name
    assert "caller_user" not in rpcs[-1]
