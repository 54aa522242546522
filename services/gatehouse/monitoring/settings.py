"""Settings of the monitoring service alone: `GATEHOUSE_MONITORING_*` variables (or `.env`).

Kept out of the shared `gatehouse.runtime.config.Settings` because no other service reads
them. Tests and the benchmark build them directly with shorter intervals or higher limits.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from gatehouse.runtime.config import ConfigurationError


class MonitoringSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="GATEHOUSE_MONITORING_", env_file=".env", extra="ignore", frozen=True
    )

    # -- device sessions
    heartbeat_interval: timedelta = Field(
        default=timedelta(seconds=10), description="Told to devices in the welcome."
    )
    missed_heartbeats: int = Field(
        default=3, ge=1, le=100, description="Intervals without a heartbeat before OFFLINE."
    )
    check_interval: timedelta = Field(
        default=timedelta(seconds=1),
        description="How often the background checker looks for silent devices, overdue "
        "commands and long-offline devices.",
    )
    heartbeat_flush_interval: timedelta = Field(
        default=timedelta(seconds=1),
        description="Heartbeats are written to the database together at most this often.",
    )
    command_receipt_timeout: timedelta = Field(
        default=timedelta(seconds=1),
        description="How long SendDeviceCommand waits for the replica holding a session to "
        "take the command before answering DEVICE_OFFLINE.",
    )
    outbound_queue_size: int = Field(
        default=64, ge=1, le=10_000, description="Commands and pings waiting per session."
    )
    max_messages_per_second: float = Field(
        default=50.0, gt=0, description="A device's sustained ConnectDevice message rate."
    )
    message_burst: int = Field(default=200, ge=1)
    max_readings_per_second: float = Field(
        default=5_000.0, gt=0, description="Readings per second one ReportReadings stream keeps up."
    )
    readings_burst: int = Field(default=20_000, ge=1000)
    rate_exceeded_after: timedelta = Field(
        default=timedelta(seconds=30),
        description="A stream slowed down continuously this long fails RESOURCE_EXHAUSTED.",
    )

    # -- the live feed
    feed_heartbeat_interval: timedelta = Field(default=timedelta(seconds=15))
    feed_buffer_size: int = Field(default=1000, ge=10)
    max_streams_per_caller: int = Field(
        default=32, ge=1, description="StreamEvents streams one caller may hold on a replica."
    )

    # -- retention and idempotency
    idempotency_ttl: timedelta = Field(default=timedelta(hours=24))
    dedup_retention: timedelta = Field(
        default=timedelta(hours=24), description="Device message ids and reading batch ids."
    )

    # -- the key sealing replayed device tokens and signing page tokens
    secret_key: SecretStr | None = Field(
        default=None, description="32 bytes, base64; every replica must use the same one."
    )
    secret_key_file: Path | None = Field(
        default=None, description="File holding the key; default <home>/keys/monitoring.key."
    )

    @field_validator(
        "heartbeat_interval",
        "check_interval",
        "heartbeat_flush_interval",
        "command_receipt_timeout",
        "rate_exceeded_after",
        "feed_heartbeat_interval",
        "idempotency_ttl",
        "dedup_retention",
        mode="before",
    )
    @classmethod
    def _plain_seconds(cls, value: object) -> object:
        # `GATEHOUSE_MONITORING_HEARTBEAT_INTERVAL=0.5` means seconds, as an operator expects;
        # ISO 8601 (`PT0.5S`) still works.
        if isinstance(value, str):
            try:
                return timedelta(seconds=float(value))
            except ValueError:
                return value
        return value

    @model_validator(mode="after")
    def _positive_durations(self) -> MonitoringSettings:
        for name in (
            "heartbeat_interval",
            "check_interval",
            "heartbeat_flush_interval",
            "command_receipt_timeout",
            "rate_exceeded_after",
            "feed_heartbeat_interval",
            "idempotency_ttl",
            "dedup_retention",
        ):
            if getattr(self, name) <= timedelta(0):
                raise ValueError(f"{name} must be positive")
        return self

    @property
    def offline_after(self) -> timedelta:
        return self.heartbeat_interval * self.missed_heartbeats


def load_monitoring_settings(**overrides: object) -> MonitoringSettings:
    try:
        return MonitoringSettings(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        lines = []
        for problem in error.errors():
            field = ".".join(str(part) for part in problem["loc"]) or "settings"
            lines.append(f"  GATEHOUSE_MONITORING_{field.upper()}: {problem['msg']}")
        raise ConfigurationError("invalid configuration:\n" + "\n".join(lines)) from None
