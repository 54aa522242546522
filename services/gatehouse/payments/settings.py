"""Settings of the payments service alone: `GATEHOUSE_PAYMENTS_*` variables (or `.env`).

Durations are seconds (`2.5`) or ISO 8601 (`PT2.5S`).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from gatehouse.payments.domain.money import CURRENCIES
from gatehouse.runtime.config import ConfigurationError


class PaymentsSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="GATEHOUSE_PAYMENTS_", env_file=".env", extra="ignore", frozen=True
    )

    provider: Literal["sandbox"] = Field(
        default="sandbox", description="The payment provider adapter (only the sandbox exists)."
    )
    provider_timeout: timedelta = Field(
        default=timedelta(seconds=5),
        description="How long one provider call may take before its outcome counts as unknown.",
    )
    reconcile_interval: timedelta = Field(
        default=timedelta(seconds=10), description="How often the reconciler looks for work."
    )
    reconcile_after: timedelta = Field(
        default=timedelta(seconds=30),
        description="A charge or refund is reconciled once its outcome is this overdue.",
    )
    reconcile_batch: int = Field(default=100, ge=1, le=10_000)
    idempotency_ttl: timedelta = Field(
        default=timedelta(hours=24),
        description="How long a request_id is remembered (the contract promises 24 h).",
    )
    watch_heartbeat: timedelta = Field(
        default=timedelta(seconds=15), description="Idle WatchPayment streams get a heartbeat."
    )
    currencies: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated ISO 4217 codes taken; empty: every supported currency.",
    )

    @field_validator(
        "provider_timeout",
        "reconcile_interval",
        "reconcile_after",
        "idempotency_ttl",
        "watch_heartbeat",
        mode="before",
    )
    @classmethod
    def _seconds(cls, value: object) -> object:
        # Operators write `GATEHOUSE_PAYMENTS_PROVIDER_TIMEOUT=2.5`; ISO 8601 (`PT2.5S`) works too.
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                return value
        return value

    @field_validator("currencies", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [code.strip().upper() for code in value.split(",") if code.strip()]
        return value

    @field_validator("currencies")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(CURRENCIES))
        if unknown:
            raise ValueError(f"unsupported currencies: {', '.join(unknown)}")
        return value

    @field_validator("provider_timeout", "reconcile_interval", "watch_heartbeat")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be positive")
        return value

    @field_validator("idempotency_ttl")
    @classmethod
    def _at_least_a_day(cls, value: timedelta) -> timedelta:
        if value < timedelta(hours=24):
            raise ValueError("must be at least 24 hours (the contract promises that)")
        return value

    @model_validator(mode="after")
    def _reconcile_after_calls(self) -> PaymentsSettings:
        # Reconciling a call still in flight would only race it (harmless, but wasted work).
        if self.reconcile_after <= self.provider_timeout:
            raise ValueError("reconcile_after must be longer than provider_timeout")
        return self

    @property
    def enabled_currencies(self) -> frozenset[str] | None:
        return frozenset(self.currencies) or None


def load_payments_settings(**overrides: object) -> PaymentsSettings:
    try:
        return PaymentsSettings(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        lines = []
        for problem in error.errors():
            name = ".".join(str(part) for part in problem["loc"]) or "settings"
            lines.append(f"  GATEHOUSE_PAYMENTS_{name.upper()}: {problem['msg']}")
        raise ConfigurationError("invalid configuration:\n" + "\n".join(lines)) from None
