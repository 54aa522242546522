"""Stored documents round-trip; settings are read and checked like the other services'."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest

from gatehouse.notifications.adapters import codec
from gatehouse.notifications.domain.addresses import Address, AddressKind, Channel
from gatehouse.notifications.domain.defaults import DEFAULT_TEMPLATES
from gatehouse.notifications.domain.notifications import (
    Attempt,
    Category,
    HoldReason,
    Notification,
    Outcome,
    Priority,
    RecipientSpec,
    Status,
    TemplateUse,
)
from gatehouse.notifications.domain.preferences import ChannelPreference, Preferences, QuietHours
from gatehouse.notifications.domain.templates import Actor, Template, validate_content
from gatehouse.notifications.settings import load_notifications_settings
from gatehouse.runtime.config import ConfigurationError

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_notification_round_trip() -> None:
    n = Notification(
        id="01J0000000000000000000000A",
        recipient=RecipientSpec(role="roles/operator"),
        user="users/a",
        address=Address(AddressKind.PHONE, "+34600123456"),
        channel=Channel.SMS,
        template=TemplateUse("templates/t", 3, "es", (("code", "[redacted]"),)),
        subject="",
        text_body="hola",
        priority=Priority.HIGH,
        category=Category.ALERT,
        status=Status.SCHEDULED,
        hold_reason=HoldReason.RATE_LIMITED,
        suppression_reason=None,
        schedule_time=None,
        next_attempt_time=T0 + timedelta(minutes=1),
        sender=Actor(service="spiffe://gatehouse/notifications"),
        batch_id="01J0000000000000000000000B",
        related_resource="buildings/b1",
        create_time=T0,
        update_time=T0,
        attempts=(
            Attempt(
                1,
                T0,
                T0,
                Outcome.TRANSIENT_FAILURE,
                "webhook:sms",
                "HTTP 503",
                "",
                "WEBHOOK_HTTP_ERROR",
                "x",
            ),
        ),
        version=4,
    )
    assert codec.notification_from(codec.loads(codec.dumps(codec.notification_doc(n)))) == n


def test_template_and_preferences_round_trip() -> None:
    _, content = DEFAULT_TEMPLATES[0]
    template = Template("welcome-email", content, 2, T0, T0, Actor(user="users/op"))
    assert codec.template_from(codec.loads(codec.dumps(codec.template_doc(template)))) == template
    prefs = Preferences(
        "users/a",
        channels=(
            ChannelPreference(Channel.SMS, False, Address(AddressKind.PHONE, "+34600123456")),
        ),
        quiet_hours=QuietHours(time(22, 30), time(7), "Europe/Madrid"),
        marketing_opt_in=True,
        preferred_locale="es-AR",
        version=3,
        update_time=T0,
    )
    assert codec.preferences_from(codec.loads(codec.dumps(codec.preferences_doc(prefs)))) == prefs


def test_default_templates_are_valid() -> None:
    for _, content in DEFAULT_TEMPLATES:
        validate_content(content)


def test_settings_defaults_and_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEHOUSE_NOTIFICATIONS_RATE_LIMIT_WINDOW", "30")
    monkeypatch.setenv(
        "GATEHOUSE_NOTIFICATIONS_WEBHOOK_ALLOWED_HOSTS", "Hooks.Example.com, *.slack.com"
    )
    settings = load_notifications_settings(_env_file=None)
    assert settings.rate_limit_window == timedelta(seconds=30)
    assert settings.webhook_allowed_hosts == ["hooks.example.com", "*.slack.com"]
    assert settings.rate_limit_count == 1
    assert settings.retry_max_attempts == 5
    assert "secret" not in repr(settings.smtp_password)


def test_bad_settings_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEHOUSE_NOTIFICATIONS_IDEMPOTENCY_TTL", "60")
    with pytest.raises(ConfigurationError) as refused:
        load_notifications_settings(_env_file=None)
    assert "GATEHOUSE_NOTIFICATIONS_IDEMPOTENCY_TTL" in str(refused.value)
