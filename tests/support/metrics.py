"""Reading what instruments recorded, from an in-memory OpenTelemetry reader."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader


class RecordedMetrics:
    """A meter provider whose readings tests can inspect by instrument name."""

    def __init__(self) -> None:
        self.reader = InMemoryMetricReader()
        self.provider = MeterProvider(metric_readers=[self.reader])

    def points(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        found: list[Any] = []
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        found.extend(metric.data.data_points)
        return found

    def value(self, name: str, attributes: Mapping[str, str] | None = None) -> float | None:
        """The value (sum, gauge value, or histogram count) of the first point whose
        attributes include `attributes`."""
        for point in self.points(name):
            if _matches(point.attributes, attributes or {}):
                return float(point.count if hasattr(point, "count") else point.value)
        return None


def _matches(actual: Mapping[str, Any] | None, wanted: Mapping[str, str]) -> bool:
    actual = actual or {}
    return all(actual.get(key) == value for key, value in wanted.items())
