"""The real monitoring service on real gRPC servers (mTLS, port 0), once per database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gatehouse.runtime.config import Settings
from tests.integration.monitoring.harness import MonitoringHarness, running_monitoring


@pytest.fixture
async def monitoring(
    settings: Settings, certs_dir: Path, database_url: str
) -> AsyncIterator[MonitoringHarness]:
    async with running_monitoring(settings, certs_dir, database_url) as harness:
        yield harness


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    from gatehouse.runtime.db import sqlite_url as url  # noqa: PLC0415

    return url(tmp_path / "data" / "monitoring.db")


@pytest.fixture
async def sqlite_monitoring(
    settings: Settings, certs_dir: Path, sqlite_url: str
) -> AsyncIterator[MonitoringHarness]:
    """For tests about sessions and timing, where the backend does not matter: SQLite only."""
    async with running_monitoring(settings, certs_dir, sqlite_url) as harness:
        yield harness
