"""GATEHOUSE_PAYMENTS_* settings: durations in seconds, currencies, consistency checks."""

from __future__ import annotations

from datetime import timedelta

import pytest

from gatehouse.payments.settings import load_payments_settings
from gatehouse.runtime.config import ConfigurationError


def test_defaults_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = load_payments_settings(_env_file=None)
    assert defaults.provider == "sandbox"
    assert defaults.idempotency_ttl >= timedelta(hours=24)
    assert defaults.enabled_currencies is None
    monkeypatch.setenv("GATEHOUSE_PAYMENTS_PROVIDER_TIMEOUT", "2.5")
    monkeypatch.setenv("GATEHOUSE_PAYMENTS_RECONCILE_AFTER", "PT1M")
    monkeypatch.setenv("GATEHOUSE_PAYMENTS_CURRENCIES", "usd, JPY")
    configured = load_payments_settings(_env_file=None)
    assert configured.provider_timeout == timedelta(seconds=2.5)
    assert configured.reconcile_after == timedelta(minutes=1)
    assert configured.enabled_currencies == frozenset({"USD", "JPY"})


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("CURRENCIES", "USD,XXX", "GATEHOUSE_PAYMENTS_CURRENCIES"),
        ("IDEMPOTENCY_TTL", "3600", "GATEHOUSE_PAYMENTS_IDEMPOTENCY_TTL"),
        ("PROVIDER_TIMEOUT", "0", "GATEHOUSE_PAYMENTS_PROVIDER_TIMEOUT"),
        ("RECONCILE_AFTER", "1", "reconcile_after must be longer than provider_timeout"),
    ],
)
def test_bad_values_are_named(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, problem: str
) -> None:
    monkeypatch.setenv(f"GATEHOUSE_PAYMENTS_{name}", value)
    with pytest.raises(ConfigurationError, match=problem):
        load_payments_settings(_env_file=None)
