"""Request validation: INVALID_ARGUMENT with BadRequest field violations before a handler runs.

Most rules come from the contract itself, so no service writes them twice:
- fields bound in the `google.api.http` path template (`{name=users/*}`) must be present and
  match the template's resource-name pattern;
- `request_id` (AIP-155), when set, must be a UUID;
- `page_size` must not be negative.
A service adds its own rules per method (`MethodValidator`s) for what the contract cannot say.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, cast

import grpc
from google.api import annotations_pb2, http_pb2
from google.protobuf.descriptor import FieldDescriptor, MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message

from gatehouse.runtime.errors import FieldViolation, InvalidArgument
from gatehouse.runtime.interception import ScopedInterceptor

MethodValidator = Callable[[Message], Iterable[FieldViolation]]

_VARIABLE = re.compile(r"\{([a-z_][a-z0-9_.]*)(?:=([^}]*))?\}")
REQUEST_ID_FIELD = "request_id"
PAGE_SIZE_FIELD = "page_size"


@dataclass(frozen=True, slots=True)
class PathBinding:
    """A request field that the HTTP path carries, and the patterns it may take."""

    field_path: str
    patterns: tuple[re.Pattern[str], ...]
    shapes: tuple[str, ...]
    required: bool


class RequestValidator:
    """All rules of one method, compiled once at start-up."""

    def __init__(self, method: MethodDescriptor, extra: Sequence[MethodValidator] = ()) -> None:
        self._bindings = _path_bindings(method)
        fields = method.input_type.fields_by_name
        self._check_request_id = _is_string(fields.get(REQUEST_ID_FIELD))
        self._check_page_size = PAGE_SIZE_FIELD in fields
        self._extra = tuple(extra)

    def violations(self, request: Message) -> list[FieldViolation]:
        found: list[FieldViolation] = []
        for binding in self._bindings:
            value = _get_path(request, binding.field_path)
            if not value:
                if binding.required:
                    found.append(FieldViolation(binding.field_path, "is required"))
            elif not any(pattern.fullmatch(value) for pattern in binding.patterns):
                shapes = " or ".join(f"'{shape}'" for shape in binding.shapes)
                found.append(FieldViolation(binding.field_path, f"must look like {shapes}"))
        if self._check_request_id:
            request_id: str = getattr(request, REQUEST_ID_FIELD)
            if request_id and not _is_uuid(request_id):
                found.append(
                    FieldViolation(REQUEST_ID_FIELD, "must be a UUID, e.g. from uuid.uuid4()")
                )
        if self._check_page_size and getattr(request, PAGE_SIZE_FIELD) < 0:
            found.append(FieldViolation(PAGE_SIZE_FIELD, "must not be negative"))
        for validator in self._extra:
            found.extend(validator(request))
        return found


class ValidationInterceptor(ScopedInterceptor):
    def __init__(
        self,
        services: Iterable[ServiceDescriptor],
        extra: Mapping[str, Sequence[MethodValidator]] | None = None,
    ) -> None:
        """`extra` maps a method's full path (`/pkg.Service/Method`) to its own validators."""
        extra = extra or {}
        self._validators: dict[str, RequestValidator] = {}
        for service in services:
            for method in service.methods:
                path = f"/{service.full_name}/{method.name}"
                self._validators[path] = RequestValidator(method, extra.get(path, ()))
        unknown = set(extra) - set(self._validators)
        if unknown:
            raise ValueError(f"validators registered for unknown methods: {sorted(unknown)}")

    @asynccontextmanager
    async def scope(
        self, method: str, request: Message | None, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[None]:
        validator = self._validators.get(method)
        if validator is not None and request is not None:
            violations = validator.violations(request)
            if violations:
                raise InvalidArgument(violations)
        yield


def _path_bindings(method: MethodDescriptor) -> tuple[PathBinding, ...]:
    rule = http_rule(method)
    if rule is None:
        return ()
    templates = [http_template(r) for r in (rule, *rule.additional_bindings)]
    per_template = [dict(_variables(t)) for t in templates if t]
    field_paths = sorted({name for variables in per_template for name in variables})
    bindings = []
    for field_path in field_paths:
        shapes = tuple(dict.fromkeys(v[field_path] for v in per_template if field_path in v))
        bindings.append(
            PathBinding(
                field_path=field_path,
                patterns=tuple(_segment_regex(shape) for shape in shapes),
                shapes=tuple(s.replace("**", "...").replace("*", "{id}") for s in shapes),
                required=all(field_path in v for v in per_template),
            )
        )
    return tuple(bindings)


def http_rule(method: MethodDescriptor) -> http_pb2.HttpRule | None:
    """The method's `google.api.http` annotation, if it has one."""
    options = method.GetOptions()
    # googleapis' stubs type the extension as a plain FieldDescriptor.
    extension = cast("Any", annotations_pb2.http)
    if not options.HasExtension(extension):
        return None
    rule: http_pb2.HttpRule = options.Extensions[extension]
    return rule


def http_template(rule: http_pb2.HttpRule) -> str:
    kind = rule.WhichOneof("pattern")
    if kind is None:
        return ""
    if kind == "custom":
        return rule.custom.path
    template: str = getattr(rule, kind)
    return template


def _variables(template: str) -> Iterable[tuple[str, str]]:
    for match in _VARIABLE.finditer(template):
        yield match.group(1), match.group(2) or "*"


def _segment_regex(shape: str) -> re.Pattern[str]:
    parts = []
    for segment in shape.split("/"):
        if segment == "*":
            parts.append(r"[A-Za-z0-9._~-]+")
        elif segment == "**":
            parts.append(r"[A-Za-z0-9._~/-]+")
        else:
            parts.append(re.escape(segment))
    return re.compile("/".join(parts))


def _get_path(message: Message, path: str) -> str:
    current: Any = message
    for part in path.split("."):
        current = getattr(current, part)
    return str(current)


def _is_string(field: FieldDescriptor | None) -> bool:
    return field is not None and field.type == FieldDescriptor.TYPE_STRING


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return len(value) == 36
