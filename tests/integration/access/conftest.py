"""The real access service on a real gRPC server (mTLS, port 0), once per database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gatehouse.runtime.config import Settings
from tests.integration.access.harness import AccessHarness, running_access


@pytest.fixture
async def access(
    settings: Settings, certs_dir: Path, database_url: str
) -> AsyncIterator[AccessHarness]:
    async with running_access(settings, certs_dir, database_url) as harness:
        yield harness
