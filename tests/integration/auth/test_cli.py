"""`gatehouse auth create-admin` and `gatehouse auth rotate-keys` against a real database."""

from __future__ import annotations

import argparse
import asyncio
import io
from pathlib import Path

import pytest

from gatehouse.auth import cli
from gatehouse.auth.app import AuthApp, resolve_kek
from gatehouse.auth.handlers.accounts import get_user
from gatehouse.auth.settings import load_auth_settings
from gatehouse.runtime.bus import InProcessEventBus
from gatehouse.runtime.config import Settings
from gatehouse.runtime.kv import InMemoryKeyValueStore
from gatehouse.runtime.live import LiveHub
from gatehouse.runtime.server import Lifecycle
from gatehouse.runtime.service_context import ServiceContext
from tests.support.auth import PASSWORD, unique_email


@pytest.fixture
def cli_settings(
    settings: Settings, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    monkeypatch.setenv("GATEHOUSE_AUTH_ARGON2_TIME_COST", "1")
    monkeypatch.setenv("GATEHOUSE_AUTH_ARGON2_MEMORY_KIB", "64")
    return settings.model_copy(update={"home": tmp_path, "database_url": database_url})


def _run(settings: Settings, *argv: str, stdin: str = "") -> tuple[int, str, str]:
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command"))
    out, err = io.StringIO(), io.StringIO()
    code = cli.run(
        parser.parse_args(argv), settings, stdin=io.StringIO(stdin), stdout=out, stderr=err
    )
    return code, out.getvalue(), err.getvalue()


async def _inspect(settings: Settings, user_name: str) -> tuple[list[str], bool, int]:
    bus = InProcessEventBus()
    context = ServiceContext(
        name="auth",
        settings=settings,
        lifecycle=Lifecycle(),
        kv=InMemoryKeyValueStore(),
        bus=bus,
        live=LiveHub(bus),
    )
    auth_settings = load_auth_settings()
    app = AuthApp(
        context, auth_settings, kek=resolve_kek(auth_settings, settings.home), outbox_relay=False
    )
    await app.start()
    try:
        user = await get_user(user_name, app.uow())
        check = await app.hasher.verify(user.password_hash, PASSWORD)
        return list(user.roles), check.ok, len(app.key_ring.public_keys())
    finally:
        await app.stop()


def test_create_admin_reads_the_password_from_stdin(cli_settings: Settings) -> None:
    email = unique_email("root")
    code, out, err = _run(
        cli_settings, "auth", "create-admin", "--email", email, stdin=PASSWORD + "\n"
    )
    assert code == 0, err
    assert PASSWORD not in out + err
    assert f"<{email}> with roles/admin" in out
    user_name = out.split()[1]
    roles, password_ok, keys = asyncio.run(_inspect(cli_settings, user_name))
    assert (roles, password_ok, keys) == (["admin"], True, 1)

    code, _, err = _run(cli_settings, "auth", "create-admin", "--email", email, stdin=PASSWORD)
    assert code == 1
    assert "exists" in err
    code, _, err = _run(
        cli_settings, "auth", "create-admin", "--email", unique_email(), stdin="password123\n"
    )
    assert code == 1
    assert "password" in err
    assert "password123" not in err
    code, _, err = _run(cli_settings, "auth", "create-admin", "--email", unique_email(), stdin="")
    assert code == 2
    assert "no password" in err


def test_rotate_keys_publishes_the_next_key_before_it_signs(cli_settings: Settings) -> None:
    code, out, err = _run(
        cli_settings, "auth", "create-admin", "--email", unique_email(), stdin=PASSWORD
    )
    assert code == 0, err
    code, rotated, err = _run(cli_settings, "auth", "rotate-keys")
    assert code == 0, err
    assert rotated.startswith("published key ")
    assert "signing with it from " in rotated
    _, _, keys = asyncio.run(_inspect(cli_settings, out.split()[1]))
    assert keys == 2
    code, rotated, err = _run(cli_settings, "auth", "rotate-keys", "--now")
    assert code == 0, err
    assert rotated.startswith("signing with key ")
    assert " now;" in rotated
    _, _, keys = asyncio.run(_inspect(cli_settings, out.split()[1]))
    assert keys == 3
