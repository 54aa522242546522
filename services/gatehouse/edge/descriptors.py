"""The descriptor set as the edge sees it: the committed one, minus what the edge must not serve.

`make proto` writes `envoy/descriptors/gatehouse.binpb` with every RPC. Internal RPCs (access
rule `internal`, e.g. IntrospectToken) keep their HTTP mapping for mesh-internal listeners, but
the edge must neither transcode nor route them, so the transcoder gets a copy without them;
the OpenAPI document is generated from the same filtered view, so the two always agree.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

ACCESS_RULE_OPTION = "gatehouse.common.v1.access_rule"
INTERNAL = "internal"
# Editable installs read the files where `make proto` writes them; wheels carry copies
# (pyproject force-include).
_REPOSITORY = Path(__file__).resolve().parents[3]


def descriptor_set_path() -> Path:
    return _first_existing(
        _packaged("gatehouse.runtime", "data/gatehouse.binpb"),
        _REPOSITORY / "envoy" / "descriptors" / "gatehouse.binpb",
    )


def openapi_path() -> Path:
    return _first_existing(
        _packaged("gatehouse.edge", "data/openapi.json"), _REPOSITORY / "envoy" / "openapi.json"
    )


@dataclass(frozen=True, slots=True)
class ContractMethod:
    """One RPC of the descriptor set, with what the edge and the OpenAPI document need."""

    file: descriptor_pb2.FileDescriptorProto
    service: descriptor_pb2.ServiceDescriptorProto
    method: descriptor_pb2.MethodDescriptorProto
    service_index: int
    method_index: int
    access: str | None
    http: http_pb2.HttpRule | None

    @property
    def service_full_name(self) -> str:
        return f"{self.file.package}.{self.service.name}"


class DescriptorSet:
    """A parsed FileDescriptorSet with a pool that understands our custom method options."""

    def __init__(self, data: bytes) -> None:
        self.files = descriptor_pb2.FileDescriptorSet.FromString(data)
        self.pool = descriptor_pool.DescriptorPool()
        for file in self.files.file:
            self.pool.Add(file)
        self._options_class: Any = message_factory.GetMessageClass(
            self.pool.FindMessageTypeByName("google.protobuf.MethodOptions")
        )
        try:
            self._access_rule: Any = self.pool.FindExtensionByName(ACCESS_RULE_OPTION)
        except KeyError:
            self._access_rule = None

    @classmethod
    def read(cls, path: Path) -> DescriptorSet:
        return cls(path.read_bytes())

    def gatehouse_services(self) -> Iterator[tuple[descriptor_pb2.FileDescriptorProto, int]]:
        for file in self.files.file:
            if file.package.startswith("gatehouse."):
                for index in range(len(file.service)):
                    yield file, index

    def methods(self) -> Iterator[ContractMethod]:
        for file, service_index in self.gatehouse_services():
            service = file.service[service_index]
            for method_index, method in enumerate(service.method):
                yield ContractMethod(
                    file=file,
                    service=service,
                    method=method,
                    service_index=service_index,
                    method_index=method_index,
                    access=self._access_kind(method),
                    http=_http_rule(method),
                )

    def for_edge(self) -> bytes:
        """The serialized set without internal RPCs: what the transcoder loads."""
        filtered = descriptor_pb2.FileDescriptorSet()
        filtered.CopyFrom(self.files)
        for file in filtered.file:
            for service in file.service:
                kept = [m for m in service.method if self._access_kind(m) != INTERNAL]
                del service.method[:]
                service.method.extend(kept)
            # Source locations index methods by position; stale ones would misplace comments.
            file.ClearField("source_code_info")
        return filtered.SerializeToString(deterministic=True)

    def _access_kind(self, method: descriptor_pb2.MethodDescriptorProto) -> str | None:
        if self._access_rule is None:
            return None
        # Parse the options with this pool's classes: the generated extension module may be
        # stale or absent while `make proto` is regenerating it.
        options = self._options_class.FromString(method.options.SerializeToString())
        if not options.HasExtension(self._access_rule):
            return None
        kind: str | None = options.Extensions[self._access_rule].WhichOneof("rule")
        return kind


def _http_rule(method: descriptor_pb2.MethodDescriptorProto) -> http_pb2.HttpRule | None:
    extension: Any = annotations_pb2.http
    if not method.options.HasExtension(extension):
        return None
    rule: http_pb2.HttpRule = method.options.Extensions[extension]
    return rule


def _packaged(package: str, name: str) -> Path | None:
    try:
        candidate = importlib.resources.files(package).joinpath(name)
    except ModuleNotFoundError:
        return None
    return Path(str(candidate))


def _first_existing(*candidates: Path | None) -> Path:
    found = [c for c in candidates if c is not None]
    for candidate in found:
        if candidate.is_file():
            return candidate
    # Name the repository path: that is what `make proto` creates.
    return found[-1]
