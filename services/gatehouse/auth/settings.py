"""Settings of the auth service alone: `GATEHOUSE_AUTH_*` variables (or `.env`).

Kept out of the shared `gatehouse.runtime.config.Settings` because no other service reads
them. Shared facts (issuer, audience, home, database URL) still come from there.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from gatehouse.runtime.config import SERVICE_NAMES, ConfigurationError


class AuthSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="GATEHOUSE_AUTH_", env_file=".env", extra="ignore", frozen=True
    )

    # -- password hashing (argon2id). Defaults: OWASP's minimum (19 MiB, t=2, p=1), ~28 ms
    # per hash on this class of machine (BENCH-NOTES). Changing them rehashes on next login.
    argon2_time_cost: int = Field(default=2, ge=1, le=20)
    argon2_memory_kib: int = Field(default=19 * 1024, ge=8, le=4 * 1024 * 1024)
    argon2_parallelism: int = Field(default=1, ge=1, le=16)
    hash_workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description=(
            "Threads hashing passwords (argon2-cffi releases the GIL while hashing). One per "
            "core the process may use; production runs one process per core."
        ),
    )
    hash_thread_nice: int = Field(
        default=10,
        ge=0,
        le=19,
        description="Nice value of the hashing threads, so other RPCs keep their latency.",
    )

    # -- password policy
    password_min_length: int = Field(default=12, ge=8, le=128)
    password_max_length: int = Field(default=128, ge=8, le=1024)

    # -- accounts
    registration_enabled: bool = True
    default_roles: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["visitor"],
        description="Role ids given at registration, comma-separated.",
    )
    bootstrap_admin_email: str | None = Field(
        default=None, description="Create this admin on start if no admin exists yet."
    )
    bootstrap_admin_password: SecretStr | None = None
    bootstrap_admin_password_file: Path | None = None

    # -- tokens and sessions
    access_token_ttl: timedelta = Field(default=timedelta(minutes=15))
    refresh_token_ttl: timedelta = Field(default=timedelta(days=30))
    challenge_ttl: timedelta = Field(default=timedelta(minutes=5))
    challenge_max_attempts: int = Field(default=5, ge=1, le=100)
    totp_enrollment_ttl: timedelta = Field(default=timedelta(minutes=10))
    reset_token_ttl: timedelta = Field(default=timedelta(minutes=30))
    recovery_code_count: int = Field(default=10, ge=1, le=50)
    idempotency_ttl: timedelta = Field(
        default=timedelta(hours=24), description="How long a request_id replays its result."
    )
    secret_idempotency_ttl: timedelta = Field(
        default=timedelta(minutes=10),
        description="The same for results that carry secrets (tokens, recovery codes).",
    )

    # -- signing keys
    signing_key_rotation: timedelta = Field(
        default=timedelta(days=30), description="Age at which a new signing key takes over."
    )
    signing_key_prepublish: timedelta = Field(
        default=timedelta(minutes=6),
        description=(
            "How long a rotated-in key is published before it signs. Longer than the edge's "
            "JWKS cache (300 s) plus a refresh interval, so Envoy knows a key before any token "
            "carries it."
        ),
    )
    key_refresh_interval: timedelta = Field(
        default=timedelta(seconds=30),
        description="How often a replica rereads the key ring (rotation by another replica).",
    )
    key_encryption_key: SecretStr | None = Field(
        default=None,
        description=(
            "32 random bytes, base64url: encrypts signing keys and TOTP secrets at rest and "
            "keys the token hashes. Every replica needs the same one."
        ),
    )
    key_encryption_key_file: Path | None = Field(
        default=None,
        description="File holding the key instead; unset: <home>/keys/auth.kek (made if absent).",
    )

    # -- brute force
    account_max_failures: int = Field(default=5, ge=1, le=1000)
    address_max_failures: int = Field(default=20, ge=1, le=100_000)
    failure_window: timedelta = Field(default=timedelta(minutes=15))
    lock_base: timedelta = Field(default=timedelta(minutes=1))
    lock_max: timedelta = Field(default=timedelta(hours=24))
    lock_memory: timedelta = Field(
        default=timedelta(hours=24), description="How long repeated locks keep escalating."
    )
    register_per_address: int = Field(default=10, ge=1, description="Per `rate_window`.")
    reset_per_email: int = Field(default=3, ge=1, description="Per `rate_window`.")
    reset_per_address: int = Field(default=10, ge=1, description="Per `rate_window`.")
    rate_window: timedelta = Field(default=timedelta(hours=1))

    # -- internal callers
    introspect_callers: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: [f"spiffe://gatehouse/{name}" for name in SERVICE_NAMES],
        description="SPIFFE ids allowed to call IntrospectToken, comma-separated.",
    )

    @field_validator("default_roles", "introspect_callers", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @model_validator(mode="after")
    def _consistent(self) -> AuthSettings:
        if self.password_max_length < self.password_min_length:
            raise ValueError("password_max_length must be >= password_min_length")
        if self.lock_max < self.lock_base:
            raise ValueError("lock_max must be >= lock_base")
        for name in ("access_token_ttl", "refresh_token_ttl", "challenge_ttl", "lock_base"):
            if getattr(self, name) <= timedelta(0):
                raise ValueError(f"{name} must be positive")
        if self.argon2_memory_kib < 8 * self.argon2_parallelism:
            raise ValueError("argon2_memory_kib must be at least 8 x argon2_parallelism")
        return self


def load_auth_settings(**overrides: object) -> AuthSettings:
    """Read the auth settings, reporting every bad variable by name."""
    try:
        return AuthSettings(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        lines = []
        for problem in error.errors():
            field = ".".join(str(part) for part in problem["loc"]) or "(settings)"
            lines.append(f"  GATEHOUSE_AUTH_{field.upper()}: {problem['msg']}")
        raise ConfigurationError("invalid auth configuration:\n" + "\n".join(lines)) from None
