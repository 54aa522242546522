"""The five services and where their composition roots live."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Protocol

from gatehouse.runtime.config import SERVICE_NAMES, ServiceName
from gatehouse.runtime.server import ServiceDefinition
from gatehouse.runtime.service_context import ServiceContext

# The identities the dev CA issues besides the services themselves.
EXTRA_IDENTITIES = ("envoy", "client")


class CreateService(Protocol):
    def __call__(self, context: ServiceContext) -> ServiceDefinition: ...


def composition_root(name: ServiceName) -> CreateService:
    """`gatehouse.<name>.app.create_service`, imported only when the service is run."""
    module = importlib.import_module(f"gatehouse.{name}.app")
    create: CreateService = module.create_service
    return create


def migrations_of(name: ServiceName) -> tuple[Path, ...]:
    """The service's own Alembic version folders (the runtime's chain comes with every one):
    `<NAME>_VERSIONS_DIR` of `gatehouse.<name>.adapters.orm`, by convention."""
    module = importlib.import_module(f"gatehouse.{name}.adapters.orm")
    location: Path = getattr(module, f"{name.upper()}_VERSIONS_DIR")
    return (location,)


def all_services() -> tuple[ServiceName, ...]:
    return SERVICE_NAMES


def certificate_identities() -> tuple[str, ...]:
    return (*SERVICE_NAMES, *EXTRA_IDENTITIES)
