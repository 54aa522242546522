"""OpenAPI 3 for the REST surface the edge transcodes, generated from the descriptor set.

Everything comes from the contracts: paths and verbs from `google.api.http`, schemas from the
messages as the proto3 JSON mapping renders them (lowerCamelCase names, 64-bit integers as
strings, enums as names, well-known types in their JSON forms), descriptions from the proto
comments, and the token requirement from each RPC's access rule. `make proto` writes it to
`envoy/openapi.json`; the edge serves it at `/openapi.json`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from google.api import http_pb2
from google.protobuf import descriptor_pb2

from gatehouse.edge.descriptors import INTERNAL, ContractMethod, DescriptorSet

Schema = dict[str, Any]
FieldProto = descriptor_pb2.FieldDescriptorProto

OPENAPI_VERSION = "3.0.3"
STATUS_SCHEMA = "google.rpc.Status"
_VARIABLE = re.compile(r"\{([a-zA-Z_][\w.]*)(?:=([^}]*))?\}")
# Access rules whose RPCs need an end user's access token (see authorization.proto).
_TOKEN_RULES = ("authenticated", "permission", None)
# Proto3 JSON mapping of the well-known types (protobuf.dev, "JSON Mapping").
_WELL_KNOWN: dict[str, Schema] = {
    ".google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    ".google.protobuf.Duration": {"type": "string", "example": "1.5s"},
    ".google.protobuf.FieldMask": {"type": "string", "example": "displayName,email"},
    ".google.protobuf.Empty": {"type": "object"},
    ".google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    ".google.protobuf.Value": {},
    ".google.protobuf.ListValue": {"type": "array", "items": {}},
    ".google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string"}},
        "additionalProperties": True,
    },
    ".google.protobuf.StringValue": {"type": "string", "nullable": True},
    ".google.protobuf.BytesValue": {"type": "string", "format": "byte", "nullable": True},
    ".google.protobuf.BoolValue": {"type": "boolean", "nullable": True},
    ".google.protobuf.Int32Value": {"type": "integer", "format": "int32", "nullable": True},
    ".google.protobuf.UInt32Value": {"type": "integer", "format": "int64", "nullable": True},
    ".google.protobuf.Int64Value": {"type": "string", "format": "int64", "nullable": True},
    ".google.protobuf.UInt64Value": {"type": "string", "format": "uint64", "nullable": True},
    ".google.protobuf.FloatValue": {"type": "number", "format": "float", "nullable": True},
    ".google.protobuf.DoubleValue": {"type": "number", "format": "double", "nullable": True},
}
_SCALARS: dict[int, Schema] = {
    FieldProto.TYPE_DOUBLE: {"type": "number", "format": "double"},
    FieldProto.TYPE_FLOAT: {"type": "number", "format": "float"},
    FieldProto.TYPE_INT64: {"type": "string", "format": "int64"},
    FieldProto.TYPE_UINT64: {"type": "string", "format": "uint64"},
    FieldProto.TYPE_SINT64: {"type": "string", "format": "int64"},
    FieldProto.TYPE_FIXED64: {"type": "string", "format": "uint64"},
    FieldProto.TYPE_SFIXED64: {"type": "string", "format": "int64"},
    FieldProto.TYPE_INT32: {"type": "integer", "format": "int32"},
    FieldProto.TYPE_SINT32: {"type": "integer", "format": "int32"},
    FieldProto.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    FieldProto.TYPE_UINT32: {"type": "integer", "format": "int64", "minimum": 0},
    FieldProto.TYPE_FIXED32: {"type": "integer", "format": "int64", "minimum": 0},
    FieldProto.TYPE_BOOL: {"type": "boolean"},
    FieldProto.TYPE_STRING: {"type": "string"},
    FieldProto.TYPE_BYTES: {"type": "string", "format": "byte"},
}
_STREAM_NOTE = (
    "Server stream: the response body is newline-delimited JSON, one object of this schema per "
    "line, flushed as each message arrives. Over HTTP/2 an error after the first message "
    "arrives in the `grpc-status` and `grpc-message` trailers."
)
_CLIENT_STREAM_NOTE = "Client stream: the request body is a JSON array of messages."
_PATH_METHODS = ("get", "put", "post", "delete", "patch")


def build_openapi(descriptors: DescriptorSet) -> dict[str, Any]:
    builder = _Builder(descriptors)
    return builder.document()


def openapi_json(descriptor_set: bytes) -> str:
    """The document as committed: stable key order and formatting, so diffs are reviewable."""
    document = build_openapi(DescriptorSet(descriptor_set))
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


class _Builder:
    def __init__(self, descriptors: DescriptorSet) -> None:
        self._set = descriptors
        self._messages: dict[str, tuple[descriptor_pb2.DescriptorProto, str, tuple[int, ...]]] = {}
        self._enums: dict[str, tuple[descriptor_pb2.EnumDescriptorProto, str, tuple[int, ...]]] = {}
        self._comments: dict[tuple[str, tuple[int, ...]], str] = {}
        for file in descriptors.files.file:
            self._index(file)
        self._schemas: dict[str, Schema] = {}
        self._pending: list[str] = []

    def document(self) -> dict[str, Any]:
        paths: dict[str, dict[str, Any]] = {}
        tags: list[dict[str, str]] = []
        seen_services: set[str] = set()
        for method in self._set.methods():
            if method.access == INTERNAL or method.http is None:
                continue
            if method.service_full_name not in seen_services:
                seen_services.add(method.service_full_name)
                tags.append(
                    {
                        "name": method.service.name,
                        "description": self._comment(method.file.name, (6, method.service_index)),
                    }
                )
            rules = [method.http, *method.http.additional_bindings]
            for index, rule in enumerate(rules):
                verb, template = _verb_and_template(rule)
                if verb is None:
                    continue
                path, parameters = self._path(template, method)
                operation = self._operation(method, rule, parameters, index)
                paths.setdefault(path, {})[verb] = operation
        self._drain()
        return {
            "openapi": OPENAPI_VERSION,
            "info": {
                "title": "Gatehouse REST API",
                "version": "v1",
                "description": (
                    "REST over the Gatehouse gRPC services, transcoded by the Envoy edge. "
                    "Field names follow the proto3 JSON mapping (lowerCamelCase; either form "
                    "is accepted on input). Errors are google.rpc.Status objects whose "
                    "`details` keep ErrorInfo, BadRequest and RetryInfo (docs/errors.md). "
                    "Generated from proto/ by `make proto`; do not edit."
                ),
            },
            "servers": [{"url": "/"}],
            "tags": tags,
            "paths": dict(sorted(paths.items())),
            "components": {
                "schemas": dict(sorted(self._schemas.items())),
                "securitySchemes": {
                    "accessToken": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
                },
            },
        }

    # -- operations ---------------------------------------------------------------------------

    def _operation(
        self,
        method: ContractMethod,
        rule: http_pb2.HttpRule,
        path_parameters: list[dict[str, Any]],
        index: int,
    ) -> dict[str, Any]:
        proto = method.method
        request_type = proto.input_type
        bound = {p["x-proto-field"] for p in path_parameters}
        description = self._comment(
            method.file.name, (6, method.service_index, 2, method.method_index)
        )
        notes = []
        if proto.server_streaming:
            notes.append(_STREAM_NOTE)
        if proto.client_streaming:
            notes.append(_CLIENT_STREAM_NOTE)
        operation: dict[str, Any] = {
            "tags": [method.service.name],
            "operationId": f"{method.service.name}_{proto.name}" + (f"_{index}" if index else ""),
            "summary": _summary(description) or proto.name,
            "description": "\n\n".join(filter(None, [description, *notes])),
            "x-grpc-method": f"{method.service_full_name}.{proto.name}",
        }
        parameters = [{k: v for k, v in p.items() if k != "x-proto-field"} for p in path_parameters]
        if rule.body == "*":
            operation["requestBody"] = self._body(
                self._without(request_type, bound), proto.client_streaming
            )
        else:
            if rule.body:
                field = self._field(request_type, rule.body)
                operation["requestBody"] = self._body(
                    self._field_schema(field), proto.client_streaming
                )
                bound = bound | {rule.body}
            parameters += list(self._query_parameters(request_type, bound))
        if parameters:
            operation["parameters"] = parameters
        response: Schema = self._ref(proto.output_type)
        if rule.response_body:
            response = self._field_schema(self._field(proto.output_type, rule.response_body))
        operation["responses"] = {
            "200": {
                "description": "a stream of messages, one per line"
                if proto.server_streaming
                else "OK",
                "content": {"application/json": {"schema": response}},
            },
            "default": {
                "description": "an error (google.rpc.Status with details)",
                "content": {"application/json": {"schema": self._ref("." + STATUS_SCHEMA)}},
            },
        }
        operation["security"] = [{"accessToken": []}] if method.access in _TOKEN_RULES else []
        return operation

    def _body(self, schema: Schema, streaming: bool) -> dict[str, Any]:
        if streaming:
            schema = {"type": "array", "items": schema}
        return {"required": True, "content": {"application/json": {"schema": schema}}}

    def _path(self, template: str, method: ContractMethod) -> tuple[str, list[dict[str, Any]]]:
        """`/v1/{name=buildings/*/doors/*}:open` -> `/v1/buildings/{building}/doors/{door}:open`.

        Each wildcard becomes its own path parameter named after the collection before it, so
        generic clients fill in ids and never need to encode a slash.
        """
        parameters: list[dict[str, Any]] = []
        used: set[str] = set()

        def expand(match: re.Match[str]) -> str:
            field_path, pattern = match.group(1), match.group(2) or "*"
            segments = pattern.split("/")
            out = []
            for position, segment in enumerate(segments):
                if segment not in ("*", "**"):
                    out.append(segment)
                    continue
                before = segments[position - 1] if position else field_path.split(".")[-1]
                name = _singular(before) if position else before
                while name in used:
                    name += "_"
                used.add(name)
                out.append("{" + name + "}")
                parameters.append(
                    {
                        "name": name,
                        "in": "path",
                        "required": True,
                        "description": f"Part of `{field_path}` (`{pattern}`).",
                        "schema": {"type": "string"},
                        "x-proto-field": field_path,
                    }
                )
            return "/".join(out)

        return _VARIABLE.sub(expand, template), parameters

    def _query_parameters(
        self,
        type_name: str,
        bound: set[str],
        prefix: str = "",
        depth: int = 0,
        prefix_json: str = "",
    ) -> Iterator[dict[str, Any]]:
        message = self._message(type_name)
        for field in message.field:
            path = prefix + field.name
            if path in bound:
                continue
            schema: Schema
            if field.type == FieldProto.TYPE_MESSAGE and field.type_name not in _WELL_KNOWN:
                if field.label == FieldProto.LABEL_REPEATED or depth >= 2:
                    continue  # maps and repeated messages cannot be expressed as query params
                yield from self._query_parameters(
                    field.type_name,
                    bound,
                    path + ".",
                    depth + 1,
                    prefix_json + field.json_name + ".",
                )
                continue
            schema = self._field_schema(field)
            # The transcoder takes proto field paths, camelCase or snake_case.
            name = prefix_json + field.json_name
            yield {
                "name": name,
                "in": "query",
                "required": False,
                "description": self._field_comment(type_name, field),
                "schema": schema,
                **({"explode": True} if field.label == FieldProto.LABEL_REPEATED else {}),
            }

    # -- schemas ------------------------------------------------------------------------------

    def _ref(self, type_name: str) -> Schema:
        if type_name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[type_name])
        name = type_name.lstrip(".")
        if name not in self._schemas and name not in self._pending:
            self._pending.append(name)
        return {"$ref": f"#/components/schemas/{name}"}

    def _drain(self) -> None:
        while self._pending:
            name = self._pending.pop()
            if name in self._schemas:
                continue
            type_name = "." + name
            if type_name in self._enums:
                self._schemas[name] = self._enum_schema(type_name)
            else:
                self._schemas[name] = self._message_schema(type_name)

    def _message_schema(self, type_name: str, exclude: frozenset[str] = frozenset()) -> Schema:
        message, file_name, location = self._messages[type_name]
        properties: dict[str, Schema] = {}
        for index, field in enumerate(message.field):
            if field.name in exclude:
                continue
            property_schema = self._field_schema(field)
            comment = self._comment(file_name, (*location, 2, index))
            if comment and "$ref" in property_schema:
                # Siblings of $ref are ignored in OpenAPI 3.0; allOf keeps the description.
                property_schema = {"description": comment, "allOf": [property_schema]}
            elif comment:
                property_schema = {"description": comment, **property_schema}
            properties[field.json_name] = property_schema
        schema: Schema = {"type": "object", "properties": properties}
        description = self._comment(file_name, location)
        if description:
            schema["description"] = description
        oneofs = [o.name for o in message.oneof_decl]
        if oneofs:
            schema["x-oneof"] = {
                name: [
                    f.json_name
                    for f in message.field
                    if f.HasField("oneof_index") and f.oneof_index == i and not f.proto3_optional
                ]
                for i, name in enumerate(oneofs)
            }
        return schema

    def _enum_schema(self, type_name: str) -> Schema:
        enum, file_name, location = self._enums[type_name]
        schema: Schema = {"type": "string", "enum": [value.name for value in enum.value]}
        description = self._comment(file_name, location)
        if description:
            schema["description"] = description
        return schema

    def _field_schema(self, field: FieldProto) -> Schema:
        if field.type == FieldProto.TYPE_MESSAGE:
            entry = self._map_entry(field)
            if entry is not None:
                return {"type": "object", "additionalProperties": self._field_schema(entry)}
            schema = self._ref(field.type_name)
        elif field.type == FieldProto.TYPE_ENUM:
            schema = self._ref(field.type_name)
        else:
            schema = dict(_SCALARS[field.type])
        if field.label == FieldProto.LABEL_REPEATED:
            return {"type": "array", "items": schema}
        return schema

    def _map_entry(self, field: FieldProto) -> FieldProto | None:
        if field.label != FieldProto.LABEL_REPEATED:
            return None
        entry = self._messages.get(field.type_name)
        if entry is None or not entry[0].options.map_entry:
            return None
        return entry[0].field[1]

    def _without(self, type_name: str, bound: set[str]) -> Schema:
        top = frozenset(path for path in bound if "." not in path)
        if not top:
            return self._ref(type_name)
        return self._message_schema(type_name, exclude=top)

    def _field(self, type_name: str, name: str) -> FieldProto:
        for field in self._message(type_name).field:
            if field.name == name:
                return field
        raise KeyError(f"{type_name} has no field {name}")

    def _message(self, type_name: str) -> descriptor_pb2.DescriptorProto:
        return self._messages[type_name][0]

    def _field_comment(self, type_name: str, field: FieldProto) -> str:
        message, file_name, location = self._messages[type_name]
        return self._comment(file_name, (*location, 2, list(message.field).index(field)))

    # -- descriptor indexing ------------------------------------------------------------------

    def _index(self, file: descriptor_pb2.FileDescriptorProto) -> None:
        package = f".{file.package}" if file.package else ""
        for location in file.source_code_info.location:
            if location.leading_comments:
                self._comments[(file.name, tuple(location.path))] = _clean(
                    location.leading_comments
                )
        for index, message in enumerate(file.message_type):
            self._index_message(file.name, package, message, (4, index))
        for index, enum in enumerate(file.enum_type):
            self._enums[f"{package}.{enum.name}"] = (enum, file.name, (5, index))

    def _index_message(
        self,
        file_name: str,
        scope: str,
        message: descriptor_pb2.DescriptorProto,
        location: tuple[int, ...],
    ) -> None:
        full = f"{scope}.{message.name}"
        self._messages[full] = (message, file_name, location)
        for index, nested in enumerate(message.nested_type):
            self._index_message(file_name, full, nested, (*location, 3, index))
        for index, enum in enumerate(message.enum_type):
            self._enums[f"{full}.{enum.name}"] = (enum, file_name, (*location, 4, index))

    def _comment(self, file_name: str, path: tuple[int, ...]) -> str:
        return self._comments.get((file_name, path), "")


def _verb_and_template(rule: http_pb2.HttpRule) -> tuple[str | None, str]:
    kind = rule.WhichOneof("pattern")
    if kind in _PATH_METHODS:
        template: str = getattr(rule, kind)
        return kind, template
    if kind == "custom" and rule.custom.kind.lower() in _PATH_METHODS:
        return rule.custom.kind.lower(), rule.custom.path
    return None, ""


def _summary(description: str) -> str:
    """The first sentence of the first paragraph, on one line."""
    paragraph = " ".join(description.split("\n\n", 1)[0].split())
    sentence, dot, _ = paragraph.partition(". ")
    return sentence + "." if dot else paragraph


def _singular(collection: str) -> str:
    if collection.endswith("ies"):
        return collection[:-3] + "y"
    if collection.endswith("s") and not collection.endswith("ss"):
        return collection[:-1]
    return collection


def _clean(comment: str) -> str:
    lines = [line[1:] if line.startswith(" ") else line for line in comment.strip("\n").split("\n")]
    return "\n".join(lines).strip()
