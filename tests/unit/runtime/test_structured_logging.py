"""JSON log lines: one object per line, trace ids, and secrets masked whatever their route."""

from __future__ import annotations

import json
import logging
import sys
from types import TracebackType

import pytest
from opentelemetry.sdk.trace import TracerProvider

from gatehouse.runtime.structured_logging import (
    REDACTED,
    JsonFormatter,
    RedactingTextFormatter,
    redact_text,
)

JWT = (
    "eyJhbGciOiJFZERTQSIsImtpZCI6ImsxIn0."
    "eyJzdWIiOiJ1c2Vycy9hbGljZSIsImV4cCI6MTc5MDAwMDAwMH0."
    "c2lnbmF0dXJlLWJ5dGVzLWhlcmU"
)


def record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    entry = logging.LogRecord("gatehouse.test", logging.INFO, __file__, 1, message, args, None)
    for key, value in extra.items():
        setattr(entry, key, value)
    return entry


def formatted(entry: logging.LogRecord) -> dict[str, object]:
    line = JsonFormatter("auth").format(entry)
    assert "\n" not in line
    parsed: dict[str, object] = json.loads(line)
    return parsed


def test_a_line_is_one_json_object_with_extra_fields() -> None:
    entry = formatted(record("rpc %s %s", "/m", "OK", grpc_code="OK", duration_ms=1.5))
    assert entry["message"] == "rpc /m OK"
    assert (entry["service"], entry["level"], entry["logger"]) == ("auth", "INFO", "gatehouse.test")
    assert (entry["grpc_code"], entry["duration_ms"]) == ("OK", 1.5)
    assert "trace_id" not in entry


def test_the_current_trace_and_span_ids_are_on_the_line() -> None:
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("work") as span:
        entry = formatted(record("inside"))
    context = span.get_span_context()
    assert entry["trace_id"] == f"{context.trace_id:032x}"
    assert entry["span_id"] == f"{context.span_id:016x}"


@pytest.mark.parametrize(
    "field", ["password", "new_password", "pin", "refresh_token", "authorization", "api_key"]
)
def test_fields_named_like_secrets_are_masked(field: str) -> None:
    entry = formatted(record("x", **{field: "hunter2-value"}))
    assert entry[field] == REDACTED
    assert "hunter2" not in json.dumps(entry)


def test_credentials_are_masked_wherever_they_appear() -> None:
    entry = formatted(
        record(
            "login replied %s with header Bearer %s",
            JWT,
            "opaque-refresh-token-123",
            detail={"nested": [f"token was {JWT}"]},
            note=f"authorization: Basic {'dXNlcjpwYXNzd29yZA=='}",
        )
    )
    text = json.dumps(entry)
    assert JWT not in text
    assert "opaque-refresh-token-123" not in text
    assert "dXNlcjpwYXNzd29yZA" not in text
    assert entry["message"] == f"login replied {REDACTED} with header {REDACTED}"


def test_exceptions_are_masked_too() -> None:
    try:
        raise ValueError(f"bad token {JWT}")
    except ValueError:
        entry = logging.LogRecord(
            "gatehouse.test", logging.ERROR, __file__, 1, "failed", (), sys_exc_info()
        )
    text = JsonFormatter("auth").format(entry)
    assert JWT not in text
    assert "ValueError: bad token [redacted]" in json.loads(text)["exception"]


def test_ordinary_text_is_left_alone() -> None:
    ordinary = "user users/01J8 signed in from 10.0.0.1; token_id abc; eyJ alone"
    assert redact_text(ordinary) == ordinary
    text = RedactingTextFormatter("%(message)s").format(record(f"hello {JWT}"))
    assert text == f"hello {REDACTED}"


def sys_exc_info() -> tuple[type[BaseException], BaseException, TracebackType | None]:
    info = sys.exc_info()
    assert info[0] is not None
    assert info[1] is not None
    return info[0], info[1], info[2]
