"""`gatehouse up` / `gatehouse serve`: run services (and for `up`, the Envoy edge) until a
signal, then drain and exit 0."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from opentelemetry import metrics, trace

from gatehouse.edge.process import EdgeProcess, EdgeStartError
from gatehouse.mesh.runner import Mesh, run_until_signalled
from gatehouse.runtime.config import ServiceName, Settings
from gatehouse.runtime.telemetry import tracer_provider_from_settings


async def serve(
    settings: Settings,
    services: Sequence[ServiceName],
    *,
    process_name: str,
    with_edge: bool = False,
) -> int:
    tracer_provider = tracer_provider_from_settings(settings, process_name)
    mesh = Mesh(settings, services, tracer_provider=tracer_provider, process_name=process_name)
    # The process's OpenTelemetry SDK, set once here at the entrypoint: code that asks the API
    # for a tracer or meter (event consumers, service metrics) reports through it.
    trace.set_tracer_provider(tracer_provider)
    if mesh.metrics is not None:
        metrics.set_meter_provider(mesh.metrics.meter_provider)

    def announce(ports: dict[ServiceName, int]) -> None:
        for name, port in ports.items():
            print(f"{name:<14} grpcs://{settings.host}:{port}", flush=True)
        if mesh.metrics is not None:
            print(f"{'metrics':<14} http://{settings.host}:{mesh.metrics.port}/metrics", flush=True)
        if mesh.health is not None:
            print(
                f"{'health':<14} grpc://{settings.host}:{mesh.health.port} (plaintext)", flush=True
            )
        if edge is not None:
            print(f"{'edge':<14} {edge.url} (REST + gRPC, /openapi.json)", flush=True)
            print(f"{'edge admin':<14} http://127.0.0.1:{edge.admin_port}", flush=True)
            print(f"{'edge log':<14} {edge.log_path.resolve()}", flush=True)
        print(f"certificates   {settings.certificates.resolve()}", flush=True)
        print("ready; Ctrl-C stops", flush=True)

    edge = EdgeProcess(settings) if with_edge and settings.edge_enabled else None
    try:
        return await run_until_signalled(mesh, announce, (edge,) if edge else ())
    except EdgeStartError as error:
        print(error, file=sys.stderr)
        return 1
    finally:
        # Spans still batched in memory are exported before the process ends.
        tracer_provider.shutdown()
