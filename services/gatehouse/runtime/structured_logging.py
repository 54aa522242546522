"""JSON logs, one object per line, carrying the current trace and span ids, with secrets
redacted.

Redaction is the last line of defence, not the policy: code never logs a password, PIN or
token on purpose. Should one slip into a message, an exception or an `extra=` field anyway,
the formatter masks fields whose name says secret and anything shaped like a JWT or a
bearer credential, whatever the field.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import sys
from typing import Any

from opentelemetry import trace

# Attributes every LogRecord has; anything else was passed via `extra=` and is ours to emit.
_STANDARD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


REDACTED = "[redacted]"
# Field names that hold secrets by their nature (`extra=` keys, matched per word).
_SECRET_NAME = re.compile(
    r"(^|_)(password|passwd|secret|token|tokens|pin|pins|authorization|cookie|credential|"
    r"credentials|api_?key|private_?key|otp|totp_code|recovery_code)($|_)",
    re.IGNORECASE,
)
# Values that are credentials whatever field they sit in: JWTs, bearer/basic credentials.
_SECRET_VALUE = re.compile(
    r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"
    r"|(?i:\b(?:bearer|basic)\s+)[A-Za-z0-9._~+/=-]{8,}"
)


def redact_text(text: str) -> str:
    return _SECRET_VALUE.sub(REDACTED, text)


def _redact(key: str, value: Any) -> Any:
    if _SECRET_NAME.search(key):
        return REDACTED
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {str(k): _redact(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact("", item) for item in value]
    return value


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "service": self._service,
            "message": redact_text(record.getMessage()),
        }
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            entry["trace_id"] = f"{span_context.trace_id:032x}"
            entry["span_id"] = f"{span_context.span_id:016x}"
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRIBUTES and not key.startswith("_"):
                entry[key] = _redact(key, value)
        if record.exc_info:
            entry["exception"] = redact_text(self.formatException(record.exc_info))
        return json.dumps(entry, default=str)


class RedactingTextFormatter(logging.Formatter):
    """The text format for a developer's terminal, with the same redaction."""

    def format(self, record: logging.LogRecord) -> str:
        return redact_text(super().format(record))


def configure_logging(service: str, level: str = "INFO", fmt: str = "json") -> None:
    """Replace the root handlers; called once by the process entrypoint, never on import."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(
            RedactingTextFormatter("%(asctime)s %(levelname)s %(name)s %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
