from __future__ import annotations

import pytest

from gatehouse.runtime.config import ConfigurationError, load_settings


def test_bad_values_are_named_by_their_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEHOUSE_AUTH_PORT", "not-a-port")
    monkeypatch.setenv("GATEHOUSE_DATABASE_URL", "mysql://user:secret@db/x")
    with pytest.raises(ConfigurationError) as raised:
        load_settings(_env_file=None)
    message = str(raised.value)
    assert "GATEHOUSE_AUTH_PORT" in message
    assert "GATEHOUSE_DATABASE_URL" in message
    assert "secret" not in message


def test_database_url_defaults_to_one_sqlite_file_per_service(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = load_settings(_env_file=None, home="/tmp/gh")
    assert settings.database_url_for("auth") == "sqlite+aiosqlite:////tmp/gh/data/auth.db"


def test_database_url_template_is_formatted_per_service() -> None:
    settings = load_settings(
        _env_file=None, database_url="postgresql+asyncpg://db/gatehouse_{service}"
    )
    assert settings.database_url_for("payments") == "postgresql+asyncpg://db/gatehouse_payments"


def test_a_service_is_reached_at_its_target_else_locally(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEHOUSE_AUTH_TARGET", "auth.gatehouse.svc.cluster.local:50051")
    settings = load_settings(_env_file=None, host="0.0.0.0", payments_port=6000)
    assert settings.target_of("auth") == "auth.gatehouse.svc.cluster.local:50051"
    # A wildcard bind address is no address to call: loopback instead.
    assert settings.target_of("payments") == "127.0.0.1:6000"
    assert load_settings(_env_file=None, host="::").target_of("access") == "[::1]:50052"
    assert load_settings(_env_file=None, host="10.1.2.3").target_of("access") == "10.1.2.3:50052"
