"""Fixtures of the notifications integration tests: a running service per test and backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gatehouse.runtime.config import Settings
from tests.integration.notifications.harness import NotificationsHarness, running_notifications


@pytest.fixture
async def notifications(
    database_url: str, settings: Settings, certs_dir: Path
) -> AsyncIterator[NotificationsHarness]:
    async with running_notifications(database_url, settings, certs_dir) as harness:
        yield harness
