"""Fixtures every test layer shares: a dev PKI and settings that never touch the real home."""

from __future__ import annotations

from pathlib import Path

import pytest

from gatehouse.mesh.catalog import certificate_identities
from gatehouse.runtime.config import Settings
from gatehouse.runtime.tls import ensure_dev_certificates


@pytest.fixture(scope="session")
def certs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("certs")
    ensure_dev_certificates(directory, certificate_identities())
    return directory


@pytest.fixture(scope="session")
def foreign_certs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second, unrelated CA: its certificates must be refused everywhere."""
    directory = tmp_path_factory.mktemp("foreign-certs")
    ensure_dev_certificates(directory, ("client",))
    return directory


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory, certs_dir: Path) -> Settings:
    home = tmp_path_factory.mktemp("home")
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        home=home,
        certs_dir=certs_dir,
        auth_port=0,
        access_port=0,
        monitoring_port=0,
        payments_port=0,
        notifications_port=0,
        shutdown_grace_seconds=2.0,
        metrics_port=0,
    )
