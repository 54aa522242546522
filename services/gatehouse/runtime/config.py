"""Typed settings from the environment (and `.env`), with clear errors for bad values.

Every variable is `GATEHOUSE_<FIELD>`; nested service ports are
`GATEHOUSE_AUTH_PORT`-style flat names so an operator never needs JSON in a variable.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ServiceName = Literal["auth", "access", "monitoring", "payments", "notifications"]
SERVICE_NAMES: tuple[ServiceName, ...] = (
    "auth",
    "access",
    "monitoring",
    "payments",
    "notifications",
)


class ConfigurationError(Exception):
    """Settings could not be loaded; the message names every bad variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="GATEHOUSE_", env_file=".env", extra="ignore", frozen=True
    )

    home: Path = Field(
        default=Path(".gatehouse"),
        description="Working directory for embedded mode: certificates, SQLite files, logs.",
    )
    host: str = Field(default="127.0.0.1", description="Address every gRPC server binds to.")
    auth_port: int = Field(default=50051, ge=0, le=65535)
    access_port: int = Field(default=50052, ge=0, le=65535)
    monitoring_port: int = Field(default=50053, ge=0, le=65535)
    payments_port: int = Field(default=50054, ge=0, le=65535)
    notifications_port: int = Field(default=50055, ge=0, le=65535)
    # Where a service reaches another (`host:port`): a Kubernetes Service or compose host name.
    # Unset: this process's `host` (loopback for a wildcard) and the service's port, as when
    # all five run on one machine.
    auth_target: str | None = None
    access_target: str | None = None
    monitoring_target: str | None = None
    payments_target: str | None = None
    notifications_target: str | None = None
    metrics_port: int = Field(
        default=9464, ge=0, le=65535, description="Prometheus `/metrics` of this process."
    )
    metrics_enabled: bool = Field(default=True, description="Serve `/metrics` at all.")
    health_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description=(
            "A plaintext port serving only grpc.health.v1, for probes that cannot present a "
            "client certificate (Kubernetes `grpc:` probes). Unset: no such port; health is "
            "then asked over mTLS on each service's port."
        ),
    )

    certs_dir: Path | None = Field(
        default=None, description="Certificates; defaults to <home>/certs (the dev CA)."
    )
    database_url: str | None = Field(
        default=None,
        description=(
            "SQLAlchemy URL. Unset: one SQLite file per service under <home>/data. A URL "
            "containing '{service}' is formatted per service (one database each)."
        ),
    )
    migrate_on_start: bool = Field(
        default=True,
        description=(
            "Run Alembic migrations when a service starts (embedded mode). Production runs "
            "them in a migration job before rollout and sets this to false."
        ),
    )
    redis_url: str | None = Field(
        default=None, description="Unset: in-process KV store and event bus (embedded mode)."
    )
    key_prefix: str = Field(default="gatehouse:", description="Prefix of every Redis key.")
    shutdown_grace_seconds: float = Field(
        default=10.0, gt=0, le=300, description="How long in-flight RPCs get on SIGTERM."
    )
    jwt_issuer: str = Field(default="gatehouse", description="`iss` of access tokens.")
    jwt_audience: str = Field(default="gatehouse", description="`aud` of access tokens.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = "json"
    otlp_endpoint: str | None = Field(
        default=None,
        description=(
            "OpenTelemetry collector (OTLP/gRPC) that receives traces: `http://host:4317` "
            "(plaintext, inside a private network) or `https://host:4317` (TLS, verified "
            "against `otlp_ca_file` or the system roots). Unset: spans are not exported."
        ),
    )
    otlp_ca_file: Path | None = Field(
        default=None, description="CA bundle that verifies an https:// OTLP endpoint."
    )
    trace_sample_ratio: float = Field(
        default=1.0,
        ge=0.0,
        le=1.0,
        description=(
            "Share of new traces recorded. Parent-based: a call that arrives traced keeps "
            "its caller's decision, so a trace is never cut in half."
        ),
    )

    # The Envoy edge (gatehouse.edge, envoy/README.md). `gatehouse up` runs it; `serve` never.
    edge_enabled: bool = Field(default=True, description="`gatehouse up` starts Envoy too.")
    edge_host: str = Field(default="127.0.0.1", description="Address the edge listens on.")
    edge_port: int = Field(default=8443, ge=0, le=65535, description="HTTPS: REST and gRPC.")
    edge_admin_port: int = Field(
        default=9901, ge=0, le=65535, description="Envoy admin, always on 127.0.0.1."
    )
    edge_require_client_certs: bool = Field(
        default=False,
        description="Refuse edge clients without a certificate from our CA (internal-only use).",
    )
    edge_cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated browser origins allowed by CORS; empty: no CORS.",
    )
    edge_sensitive_rate_per_minute: int = Field(
        default=20,
        ge=0,
        description="Login, Register, ValidatePin: requests per minute per client address.",
    )
    edge_global_rate_per_second: int = Field(
        default=1000, ge=0, description="All edge requests together; 0 disables the limit."
    )
    edge_max_request_bytes: int = Field(
        default=1024 * 1024, gt=0, description="Largest REST request body (413 beyond)."
    )
    edge_request_timeout_seconds: float = Field(
        default=15.0, gt=0, description="Upstream timeout of unary RPCs (streams have none)."
    )
    edge_jwt_enabled: bool = Field(
        default=True, description="Verify access tokens at the edge (public/device RPCs exempt)."
    )
    edge_jwks_file: Path | None = Field(
        default=None, description="A local JWKS file; unset: the JWKS auth serves via the edge."
    )
    edge_envoy_binary: Path | None = Field(
        default=None, description="Unset: the `envoy` beside this Python, else on PATH."
    )
    edge_concurrency: int = Field(default=1, ge=1, description="Envoy worker threads.")
    edge_base_id: int | None = Field(
        default=None, ge=0, description="Envoy --base-id; unset: Envoy picks a free one."
    )

    @field_validator("database_url")
    @classmethod
    def _known_driver(cls, value: str | None) -> str | None:
        if value is None:
            return None
        allowed = ("sqlite+aiosqlite://", "postgresql+asyncpg://")
        if not value.startswith(allowed):
            raise ValueError(f"must start with one of {', '.join(allowed)}")
        return value

    @field_validator("edge_cors_origins", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    def port_of(self, service: ServiceName) -> int:
        port: int = getattr(self, f"{service}_port")
        return port

    def target_of(self, service: ServiceName) -> str:
        """Where this process calls `service` (`GATEHOUSE_<SERVICE>_TARGET`, else local)."""
        configured: str | None = getattr(self, f"{service}_target")
        if configured and configured.strip():
            return configured.strip()
        host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        if ":" in host:
            host = f"[{host}]"
        return f"{host}:{self.port_of(service)}"

    @property
    def certificates(self) -> Path:
        return self.certs_dir or self.home / "certs"

    def check_one_database_each(self, services: Sequence[ServiceName]) -> None:
        """Every service owns its database (its chain of migrations, its outbox): several
        services in one process need `{service}` in the URL (or no URL: SQLite files)."""
        if len(services) > 1 and self.database_url and "{service}" not in self.database_url:
            raise ConfigurationError(
                "GATEHOUSE_DATABASE_URL names one database, but each service needs its own: "
                "put {service} in it (e.g. postgresql+asyncpg://host/gatehouse_{service}) or "
                "run one service per process"
            )

    def database_url_for(self, service: ServiceName) -> str:
        if self.database_url is None:
            return f"sqlite+aiosqlite:///{(self.home / 'data' / f'{service}.db').resolve()}"
        return self.database_url.replace("{service}", service)


def load_settings(**overrides: object) -> Settings:
    """Read settings, turning pydantic's report into one readable error."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        lines = []
        for problem in error.errors():
            field = ".".join(str(part) for part in problem["loc"])
            lines.append(f"  GATEHOUSE_{field.upper()}: {problem['msg']}")
        raise ConfigurationError("invalid configuration:\n" + "\n".join(lines)) from None
