"""No PIN in the logs: issued, validated, refused, or mistyped (ARCHITECTURE §9)."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from gatehouse.access.v1 import access_pb2
from gatehouse.runtime.structured_logging import JsonFormatter
from tests.integration.access.harness import AccessHarness


@pytest.fixture
def log_text() -> Iterator[io.StringIO]:
    """Everything every logger writes during the test, formatted as in production."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("access"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


async def test_pins_never_reach_the_logs(access: AccessHarness, log_text: io.StringIO) -> None:
    issued = await access.issue(pin_length=8)
    granted = await access.validate("main", issued.pin)
    assert granted.decision == access_pb2.ACCESS_DECISION_GRANTED
    wrong = "".join(str((int(digit) + 1) % 10) for digit in issued.pin)
    refused = await access.validate("main", wrong)
    assert refused.deny_reason == access_pb2.DENY_REASON_UNKNOWN_PIN
    text = log_text.getvalue()
    assert "ValidatePin" in text  # the calls were logged...
    assert issued.pin not in text  # ...without the PIN
    assert wrong not in text
