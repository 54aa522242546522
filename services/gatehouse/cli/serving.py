"""`gatehouse up` / `gatehouse serve`: run services until a signal, then drain and exit 0."""

from __future__ import annotations

from collections.abc import Sequence

from gatehouse.mesh.runner import Mesh, run_until_signalled
from gatehouse.runtime.config import ServiceName, Settings
from gatehouse.runtime.telemetry import create_tracer_provider


async def serve(settings: Settings, services: Sequence[ServiceName], *, process_name: str) -> int:
    mesh = Mesh(
        settings,
        services,
        tracer_provider=create_tracer_provider(process_name),
        process_name=process_name,
    )

    def announce(ports: dict[ServiceName, int]) -> None:
        for name, port in ports.items():
            print(f"{name:<14} grpcs://{settings.host}:{port}", flush=True)
        if mesh.metrics is not None:
            print(f"{'metrics':<14} http://{settings.host}:{mesh.metrics.port}/metrics", flush=True)
        print(f"certificates   {settings.certificates.resolve()}", flush=True)
        print("ready; Ctrl-C stops", flush=True)

    await run_until_signalled(mesh, announce)
    return 0
