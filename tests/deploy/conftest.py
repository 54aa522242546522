from __future__ import annotations

import pytest

from tests.deploy.support import BUILDS, Manifest, rendered


@pytest.fixture(scope="module", params=BUILDS)
def build_name(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture(scope="module")
def objects(build_name: str) -> list[Manifest]:
    return rendered(build_name)
