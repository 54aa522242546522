"""Fixtures of the payments integration tests: a running service per test and backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gatehouse.runtime.config import Settings
from tests.integration.payments.harness import PaymentsHarness, running_payments


@pytest.fixture
async def payments(
    database_url: str, settings: Settings, certs_dir: Path
) -> AsyncIterator[PaymentsHarness]:
    async with running_payments(database_url, settings, certs_dir) as harness:
        yield harness
