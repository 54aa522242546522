"""RPC metrics (OpenTelemetry) exposed for Prometheus (ARCHITECTURE §9).

Per process: one MeterProvider, one Prometheus registry, one `/metrics` endpoint (port 9464
by default). Instruments follow the OpenTelemetry RPC conventions: request count by method
and status, a latency histogram, and the number of streams in flight.
"""

from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIServer

import prometheus_client
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource

# Milliseconds: sub-millisecond unary calls up to slow multi-second ones.
LATENCY_BUCKETS_MS = (0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


class RpcMetrics:
    def __init__(self, meter_provider: MeterProvider) -> None:
        meter = meter_provider.get_meter("gatehouse.rpc")
        self.requests = meter.create_counter(
            "rpc.server.requests", unit="{request}", description="RPCs handled, by final status"
        )
        self.duration = meter.create_histogram(
            "rpc.server.duration",
            unit="ms",
            description="Time from the first byte of a call to its status",
            explicit_bucket_boundaries_advisory=LATENCY_BUCKETS_MS,
        )
        self.active_streams = meter.create_up_down_counter(
            "rpc.server.active_streams", unit="{stream}", description="Streaming RPCs in flight"
        )


class MetricsEndpoint:
    """`GET /metrics` in Prometheus text format, served from a daemon thread."""

    def __init__(self, service_name: str, *, host: str = "127.0.0.1", port: int = 9464) -> None:
        self.registry = prometheus_client.CollectorRegistry()
        self.meter_provider = MeterProvider(
            resource=Resource.create({"service.name": service_name}),
            metric_readers=[PrometheusMetricReader(registry=self.registry)],
        )
        self.rpc = RpcMetrics(self.meter_provider)
        self._host = host
        self._requested_port = port
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    def start(self) -> int:
        self._server, self._thread = prometheus_client.start_http_server(
            self._requested_port, addr=self._host, registry=self.registry
        )
        self.port = int(self._server.server_port)
        return self.port

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self.meter_provider.shutdown()
