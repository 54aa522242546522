"""Settings of the notifications service alone: `GATEHOUSE_NOTIFICATIONS_*` variables (or
`.env`). Durations are seconds (`2.5`) or ISO 8601 (`PT2.5S`)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from gatehouse.runtime.config import ConfigurationError

_DURATIONS = (
    "smtp_timeout",
    "webhook_timeout",
    "send_timeout",
    "rate_limit_window",
    "retry_first_backoff",
    "retry_max_backoff",
    "idempotency_ttl",
    "worker_interval",
    "watch_heartbeat",
    "watch_poll_interval",
    "template_cache_ttl",
    "auth_timeout",
    "retention",
    "retention_sweep_interval",
)


class NotificationsSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="GATEHOUSE_NOTIFICATIONS_", env_file=".env", extra="ignore", frozen=True
    )

    # --- email ---
    smtp_host: str = Field(default="127.0.0.1", description="SMTP server (relay) host.")
    smtp_port: int = Field(default=2525, ge=0, le=65535)
    smtp_security: Literal["none", "starttls", "tls"] = Field(
        default="none", description="none, starttls (upgrade) or tls (implicit, port 465)."
    )
    smtp_username: str = ""
    smtp_password: SecretStr = SecretStr("")
    smtp_sender: str = "Gatehouse <no-reply@gatehouse.local>"
    smtp_timeout: timedelta = timedelta(seconds=10)
    smtp_validate_certs: bool = True
    smtp_ca_file: str = ""
    message_id_domain: str = "gatehouse.local"
    mail_sink: bool | None = Field(
        default=None,
        description="Start a catch-all SMTP sink on smtp_host:smtp_port and keep what it "
        "receives under <home>/mail (`gatehouse mail` lists it). Unset: on in embedded mode "
        "(no GATEHOUSE_REDIS_URL), off in production, where smtp_host is a real relay.",
    )

    # --- webhooks ---
    webhook_timeout: timedelta = timedelta(seconds=10)
    webhook_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated hosts CHAT/WEBHOOK URLs may point at (`*.x.com` for "
        "subdomains).",
    )
    webhook_allow_loopback_http: bool | None = Field(
        default=None,
        description="Accept http:// URLs on loopback. Unset: on in embedded mode only.",
    )
    webhook_secret: SecretStr = Field(
        default=SecretStr(""), description="Signs CHAT and WEBHOOK deliveries."
    )
    sms_gateway_url: str = ""
    sms_gateway_secret: SecretStr = SecretStr("")
    whatsapp_gateway_url: str = ""
    whatsapp_gateway_secret: SecretStr = SecretStr("")
    push_gateway_url: str = ""
    push_gateway_secret: SecretStr = SecretStr("")
    webhook_outbox_dir: Path | None = Field(
        default=None,
        description="Write SMS/WhatsApp/push documents here instead of POSTing them when no "
        "gateway URL is set (default in embedded mode: <home>/outbox).",
    )

    # --- delivery ---
    rate_limit_count: int = Field(default=1, ge=1, le=100_000)
    rate_limit_window: timedelta = timedelta(minutes=1)
    max_held_per_recipient: int = Field(default=100, ge=1)
    retry_max_attempts: int = Field(default=5, ge=1, le=100)
    retry_first_backoff: timedelta = timedelta(seconds=30)
    retry_max_backoff: timedelta = timedelta(hours=1)
    send_timeout: timedelta = timedelta(seconds=30)
    worker: bool = Field(default=True, description="Run the delivery worker in this process.")
    worker_interval: timedelta = Field(
        default=timedelta(seconds=1), description="How often the worker looks for due work."
    )
    worker_batch: int = Field(default=100, ge=1, le=10_000)
    worker_concurrency: int = Field(default=16, ge=1, le=1_000)
    max_fanout: int = Field(default=10_000, ge=1)
    send_quota_per_minute: int = Field(
        default=600, ge=0, description="SendNotification calls per caller a minute; 0: none."
    )

    # --- retention ---
    retention: timedelta = Field(
        default=timedelta(days=30),
        description="How long finished notifications (sent, failed, suppressed, dead-lettered), "
        "their change log and dead letters are kept after their last change.",
    )
    retention_sweep_interval: timedelta = Field(
        default=timedelta(hours=1),
        description="How often the service (with its worker) deletes what is past retention.",
    )
    retention_batch: int = Field(default=500, ge=1, le=10_000)

    # --- event-driven messages ---
    consumers: bool = Field(default=True, description="Send the mesh's event-driven messages.")
    oncall_role: str = Field(
        default="roles/operator", description="Who is told of alert.triggered."
    )
    emergency_role: str = Field(
        default="roles/resident",
        description="Who is told of emergency.triggered (besides the on-call role).",
    )
    password_reset_url: str = Field(
        default="https://gatehouse.local/reset-password?token=",
        description="Base of the password-reset link; the token is appended.",
    )

    # --- misc ---
    idempotency_ttl: timedelta = timedelta(hours=24)
    watch_heartbeat: timedelta = timedelta(seconds=15)
    watch_poll_interval: timedelta = timedelta(seconds=1)
    template_cache_ttl: timedelta = timedelta(minutes=5)
    auth_timeout: timedelta = timedelta(seconds=5)

    @field_validator(*_DURATIONS, mode="before")
    @classmethod
    def _seconds(cls, value: object) -> object:
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                return value
        return value

    @field_validator(*_DURATIONS)
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be positive")
        return value

    @field_validator("webhook_allowed_hosts", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [host.strip().lower() for host in value.split(",") if host.strip()]
        return value

    @field_validator("idempotency_ttl")
    @classmethod
    def _at_least_a_day(cls, value: timedelta) -> timedelta:
        if value < timedelta(hours=24):
            raise ValueError("must be at least 24 hours (the contract promises that)")
        return value

    @model_validator(mode="after")
    def _backoffs(self) -> NotificationsSettings:
        if self.retry_max_backoff < self.retry_first_backoff:
            raise ValueError("retry_max_backoff must be >= retry_first_backoff")
        return self


def load_notifications_settings(**overrides: object) -> NotificationsSettings:
    try:
        return NotificationsSettings(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        lines = []
        for problem in error.errors():
            name = ".".join(str(part) for part in problem["loc"]) or "settings"
            lines.append(f"  GATEHOUSE_NOTIFICATIONS_{name.upper()}: {problem['msg']}")
        raise ConfigurationError("invalid configuration:\n" + "\n".join(lines)) from None
