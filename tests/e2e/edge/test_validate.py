"""Every shape of the generated bootstrap passes `envoy --mode validate`."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from gatehouse.edge.process import envoy_binary, write_edge_files
from gatehouse.runtime.config import Settings
from tests.support.tokens import TestIssuer

VARIANTS: dict[str, dict[str, Any]] = {
    "defaults (jwt with the JWKS auth serves, via an internal listener)": {},
    "client certificates required": {"edge_require_client_certs": True},
    "cors": {"edge_cors_origins": ["https://app.example", "http://localhost:5173"]},
    "no jwt at the edge": {"edge_jwt_enabled": False},
    "no rate limits": {"edge_global_rate_per_second": 0, "edge_sensitive_rate_per_minute": 0},
    "services by host name": {"host": "localhost"},
    "spans to a plaintext collector, sampled": {
        "otlp_endpoint": "http://127.0.0.1:4317",
        "trace_sample_ratio": 0.25,
    },
    "spans to a TLS collector by name": {"otlp_endpoint": "https://collector.example:4317"},
}


@pytest.mark.parametrize("overrides", VARIANTS.values(), ids=VARIANTS.keys())
async def test_generated_config_validates(
    settings: Settings, tmp_path: Path, overrides: dict[str, Any]
) -> None:
    configured = settings.model_copy(update=overrides)
    bootstrap = write_edge_files(configured, tmp_path)
    process = await asyncio.create_subprocess_exec(
        str(envoy_binary(configured)),
        "--mode",
        "validate",
        "-c",
        str(bootstrap),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, output.decode()[-3000:]


async def test_local_jwks_file_config_validates(settings: Settings, tmp_path: Path) -> None:
    jwks = tmp_path / "jwks.json"
    jwks.write_bytes(TestIssuer().jwks_json())
    configured = settings.model_copy(update={"edge_jwt_enabled": True, "edge_jwks_file": jwks})
    bootstrap = write_edge_files(configured, tmp_path / "edge")
    process = await asyncio.create_subprocess_exec(
        str(envoy_binary(configured)),
        "--mode",
        "validate",
        "-c",
        str(bootstrap),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, output.decode()[-3000:]
