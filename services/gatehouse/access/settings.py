"""Settings of the access service alone: `GATEHOUSE_ACCESS_*` variables (or `.env`).

Tests and the benchmark build them directly with shorter intervals.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from gatehouse.runtime.config import ConfigurationError

_DURATIONS = (
    "lockout_window",
    "lockout_duration",
    "directory_cache_ttl",
    "directory_miss_ttl",
    "watch_heartbeat_interval",
    "idempotency_ttl",
    "command_timeout",
    "door_hours_interval",
)


class AccessSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="GATEHOUSE_ACCESS_", env_file=".env", extra="ignore", frozen=True
    )

    # -- PINs and the keypad
    pin_length: int = Field(default=6, ge=6, le=8, description="Digits of a PIN by default.")
    lockout_max_failures: int = Field(
        default=5, ge=1, le=1000, description="Unknown PINs at one keypad that lock it out."
    )
    lockout_window: timedelta = Field(
        default=timedelta(minutes=5), description="...counted within this window."
    )
    lockout_duration: timedelta = Field(
        default=timedelta(minutes=15), description="How long a locked-out keypad refuses PINs."
    )
    max_invitation_failures: int = Field(
        default=10, ge=1, description="Wrong invitation codes per caller and hour."
    )

    # -- monitoring (buildings, doors, door controllers)
    monitoring_target: str = Field(
        default="", description="host:port of monitoring; default the mesh's monitoring port."
    )
    directory_cache_ttl: timedelta = Field(
        default=timedelta(seconds=30),
        description="How long a building's zone or a door's controller is trusted once read.",
    )
    directory_miss_ttl: timedelta = Field(
        default=timedelta(seconds=2), description="How long an unknown door stays unknown."
    )
    command_timeout: timedelta = Field(
        default=timedelta(seconds=10),
        description="How long OpenDoor waits for the controller's acknowledgement at most.",
    )

    door_hours_interval: timedelta = Field(
        default=timedelta(seconds=30),
        description="How often doors in business-hours mode are checked against their "
        "windows (a hold or relock is at most this late).",
    )

    # -- streams and retention
    watch_heartbeat_interval: timedelta = Field(default=timedelta(seconds=15))
    watch_buffer_size: int = Field(default=1000, ge=10)
    idempotency_ttl: timedelta = Field(default=timedelta(hours=24))

    # -- the key behind PIN digests and page tokens
    secret_key: SecretStr | None = Field(
        default=None, description="32+ bytes, base64; every replica must use the same one."
    )
    secret_key_file: Path | None = Field(
        default=None, description="File holding the key; default <home>/keys/access.key."
    )

    @field_validator(*_DURATIONS, mode="before")
    @classmethod
    def _plain_seconds(cls, value: object) -> object:
        # `GATEHOUSE_ACCESS_LOCKOUT_WINDOW=300` means seconds; ISO 8601 (`PT5M`) still works.
        if isinstance(value, str):
            try:
                return timedelta(seconds=float(value))
            except ValueError:
                return value
        return value

    @model_validator(mode="after")
    def _positive_durations(self) -> AccessSettings:
        for name in _DURATIONS:
            if getattr(self, name) <= timedelta(0):
                raise ValueError(f"{name} must be positive")
        return self


def load_access_settings(**overrides: object) -> AccessSettings:
    try:
        return AccessSettings(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        lines = []
        for problem in error.errors():
            field = ".".join(str(part) for part in problem["loc"]) or "settings"
            lines.append(f"  GATEHOUSE_ACCESS_{field.upper()}: {problem['msg']}")
        raise ConfigurationError("invalid configuration:\n" + "\n".join(lines)) from None
