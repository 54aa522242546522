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
