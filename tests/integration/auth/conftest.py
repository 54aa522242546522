"""The real auth service on a real gRPC server (mTLS, port 0), once per database backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gatehouse.runtime.config import Settings
from tests.support.auth import AuthHarness, TestClock, running_auth


@pytest.fixture
def clock() -> TestClock:
    return TestClock()


@pytest.fixture
async def auth(
    settings: Settings, certs_dir: Path, database_url: str, clock: TestClock
) -> AsyncIterator[AuthHarness]:
    async with running_auth(settings, certs_dir, database_url, clock=clock) as harness:
        yield harness
