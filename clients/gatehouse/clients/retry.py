"""Which calls gRPC may retry by itself, derived from the contracts, and how.

The retry decision is made once per method from its descriptor (`is_retryable`), never from
hand-kept lists, so a new RPC is covered the day it is added to a `.proto` file. The result is
expressed as a gRPC service config, so retries happen inside gRPC (transparently, within the
call's deadline) instead of in every caller.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

import grpc
from google.api import annotations_pb2, http_pb2
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor

from gatehouse.clients.interceptors.idempotency import carries_request_id

# UNAVAILABLE is the one code that means "not done, try again": the server was unreachable,
# draining, or a dependency was down before anything was written. RESOURCE_EXHAUSTED is not
# retried here: in this mesh it means a lockout or rate limit whose RetryInfo asks for seconds
# to minutes, which gRPC's sub-second backoff would ignore, burning attempts (and, for Login or
# ValidatePin, counting further failed attempts) against the limit.
RETRYABLE_CODES: tuple[str, ...] = ("UNAVAILABLE",)

# A read verb as a whole CamelCase word: GetUser and ListPayments, not a future "Getaway".
_READ_ONLY_NAME = re.compile(r"(?:Get|List|Verify|Introspect)(?![a-z0-9])")
# gRPC caps attempts at 5 and silently lowers anything above; refuse instead of surprising.
_MAX_ATTEMPTS_CAP = 5


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How gRPC retries the retryable methods (see `is_retryable`) of a channel's services.

    `never_retry` holds full method names (`gatehouse.auth.v1.AuthService.Login`) to leave out
    even though the contract makes them retryable, e.g. while a server does not honour
    `request_id` yet. Retry throttling stops retries on a channel once most recent calls
    failed, so an outage is not multiplied by `max_attempts`.
    """

    max_attempts: int = 4
    initial_backoff_seconds: float = 0.1
    max_backoff_seconds: float = 2.0
    backoff_multiplier: float = 2.0
    retryable_status_codes: tuple[str, ...] = RETRYABLE_CODES
    never_retry: frozenset[str] = frozenset()
    throttle_max_tokens: int = 10
    throttle_token_ratio: float = 0.1

    def __post_init__(self) -> None:
        if not 2 <= self.max_attempts <= _MAX_ATTEMPTS_CAP:
            raise ValueError(f"max_attempts must be 2..{_MAX_ATTEMPTS_CAP} (gRPC's cap)")
        if self.initial_backoff_seconds <= 0 or self.max_backoff_seconds <= 0:
            raise ValueError("backoffs must be positive")
        if self.backoff_multiplier <= 0:
            raise ValueError("backoff_multiplier must be positive")
        if not self.retryable_status_codes:
            raise ValueError("retryable_status_codes must name at least one code")
        known = {code.name for code in grpc.StatusCode}
        unknown = [code for code in self.retryable_status_codes if code not in known]
        if unknown or "OK" in self.retryable_status_codes:
            raise ValueError(f"not retryable status codes: {unknown or ['OK']}")
        if self.throttle_max_tokens <= 0 or self.throttle_token_ratio <= 0:
            raise ValueError("retry throttling needs positive max tokens and token ratio")


def is_retryable(method: MethodDescriptor) -> bool:
    """Whether gRPC may send `method` again after an attempt failed with a retryable code.

    Only unary methods qualify; a stream is never retried, because messages already delivered
    would be delivered again (streams resume with `resume_after` instead). A unary method is
    retryable when repeating it cannot cause a second side effect:

    - it is read-only: its name starts with the verb Get, List, Verify or Introspect, or its
      `google.api.http` annotation is a `get`; or
    - its request has a string `request_id` field (AIP-155): the client fills it once per call
      (`IdempotencyKey`), every attempt carries the same id, and the server answers a repeated
      id with the first result.

    Anything else (a mutating method without `request_id`) is never retried.
    """
    if method.client_streaming or method.server_streaming:
        return False
    return _is_read_only(method) or carries_request_id(method.input_type)


def retryable_methods(service: ServiceDescriptor) -> tuple[MethodDescriptor, ...]:
    return tuple(method for method in service.methods if is_retryable(method))


def service_config(services: Iterable[ServiceDescriptor], policy: RetryPolicy | None) -> str:
    """The gRPC service config (JSON) retrying the retryable methods of `services`.

    Deadlines are deliberately absent: a per-method `timeout` here would also apply to
    streams, so the default deadline is an interceptor that knows which calls are unary.
    """
    config: dict[str, Any] = {"methodConfig": []}
    if policy is None:
        return json.dumps(config)
    names = [
        {"service": service.full_name, "method": method.name}
        for service in services
        for method in retryable_methods(service)
        if method.full_name not in policy.never_retry
    ]
    if not names:
        return json.dumps(config)
    config["methodConfig"].append(
        {
            "name": names,
            "retryPolicy": {
                "maxAttempts": policy.max_attempts,
                "initialBackoff": _duration(policy.initial_backoff_seconds),
                "maxBackoff": _duration(policy.max_backoff_seconds),
                "backoffMultiplier": policy.backoff_multiplier,
                "retryableStatusCodes": list(policy.retryable_status_codes),
            },
        }
    )
    config["retryThrottling"] = {
        "maxTokens": policy.throttle_max_tokens,
        "tokenRatio": policy.throttle_token_ratio,
    }
    return json.dumps(config)


def _is_read_only(method: MethodDescriptor) -> bool:
    if _READ_ONLY_NAME.match(method.name):
        return True
    rule = _http_rule(method)
    return rule is not None and rule.WhichOneof("pattern") == "get"


def _http_rule(method: MethodDescriptor) -> http_pb2.HttpRule | None:
    options = method.GetOptions()
    # googleapis' stubs type the extension as a plain FieldDescriptor.
    extension = cast("Any", annotations_pb2.http)
    if not options.HasExtension(extension):
        return None
    rule: http_pb2.HttpRule = options.Extensions[extension]
    return rule


def _duration(seconds: float) -> str:
    # The service config wants protobuf JSON durations ("0.1s"); repr could give "1e-05".
    return f"{seconds:.9f}".rstrip("0").rstrip(".") + "s"
