"""Alert rules and dashboards as code (deploy/observability): every metric they name is one
that is really exported (the runtime's own, Envoy's, the Redis exporter's) so a renamed metric
fails here instead of silently emptying a dashboard; the rules are well formed."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import grpc
import prometheus_client
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from gatehouse.edge.contracts import service_descriptor
from gatehouse.runtime import telemetry
from gatehouse.runtime.backbone_metrics import ConsumerMetrics, OutboxMetrics, RuntimeGauges
from gatehouse.runtime.config import SERVICE_NAMES
from gatehouse.runtime.metrics import MetricsEndpoint
from scripts import render_manifests
from tests.deploy.support import ENVOY_METRICS

ROOT = Path(__file__).resolve().parents[2]
RULES: dict[str, Any] = yaml.safe_load(render_manifests.RULES_FILE.read_text())
DASHBOARDS: dict[str, dict[str, Any]] = {
    path.stem: json.loads(path.read_text())
    for path in sorted(render_manifests.DASHBOARDS.glob("*.json"))
}

# Metrics of other programs, by the version compose pins. Envoy's are checked against a real
# Envoy below; the Redis exporter's come from its source (exporter/streams.go, XINFO fields).
REDIS_EXPORTER_IMAGE = "oliver006/redis_exporter:v1.74.0"
REDIS_EXPORTER_METRICS = frozenset(
    {
        "redis_stream_length",
        "redis_stream_last_generated_id",
        "redis_stream_group_lag",
        "redis_stream_group_last_delivered_id",
        "redis_stream_group_messages_pending",
        "redis_stream_group_consumers",
    }
)
PROMETHEUS_METRICS = frozenset({"up"})
KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "inf", "nan"}
    | {"group_left", "group_right"}
)


def runtime_metrics() -> set[str]:
    """The sample names the runtime's /metrics really serves, from a real registry fed once
    through each instrument."""
    endpoint = MetricsEndpoint("gatehouse-test", port=0)
    try:
        attributes = {
            "rpc.service": "gatehouse.auth.v1.AuthService",
            "rpc.method": "Login",
            "rpc.grpc.status_code": "OK",
        }
        endpoint.rpc.requests.add(1, attributes)
        endpoint.rpc.duration.record(1.0, attributes)
        endpoint.rpc.active_streams.add(1, {"rpc.service": "gatehouse.auth.v1.AuthService"})
        gauges = RuntimeGauges(endpoint.meter_provider)
        outbox = OutboxMetrics("payments", endpoint.meter_provider, gauges=gauges)
        outbox.backlog.measured = True
        outbox.published(1)
        consumer = ConsumerMetrics("receipts", endpoint.meter_provider)
        consumer.finished("events.payment", "handled", 0.1)
        consumer.dead_lettered("events.payment", "handler_failed")
        gauges.pool("payments", lambda: 1)
        text = prometheus_client.generate_latest(endpoint.registry).decode()
    finally:
        endpoint.stop()
    return {
        sample.name for family in text_string_to_metric_families(text) for sample in family.samples
    }


def metric_names(expr: str) -> set[str]:
    """The metric (and recording-rule) names a PromQL expression selects."""
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*", text):
        if text[match.end() :].lstrip().startswith("("):
            continue  # a function
        if match.group(0) not in KEYWORDS:
            names.add(match.group(0))
    return names


def rule_expressions() -> list[str]:
    return [rule["expr"] for group in RULES["groups"] for rule in group["rules"]]


def dashboard_expressions() -> list[str]:
    return [
        target["expr"]
        for board in DASHBOARDS.values()
        for panel in board["panels"]
        for target in panel["targets"]
    ]


def recorded() -> set[str]:
    return {
        rule["record"] for group in RULES["groups"] for rule in group["rules"] if "record" in rule
    }


def test_the_name_extraction_sees_through_promql() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (rpc_method, le) (rate(a_bucket{x=~"p|q",y="{}"}[5m])))'
        " / on (stream) group_right (x) (b - c:d:e) > bool 14.4 * 0.001 and up offset 5m"
    )
    assert metric_names(expr) == {"a_bucket", "b", "c:d:e", "up"}


def test_every_metric_named_by_a_rule_or_dashboard_is_exported() -> None:
    known = (
        runtime_metrics() | ENVOY_METRICS | REDIS_EXPORTER_METRICS | PROMETHEUS_METRICS | recorded()
    )
    used = {
        name
        for expr in (*rule_expressions(), *dashboard_expressions())
        for name in metric_names(expr)
    }
    assert used, "no metric found: the extraction is broken"
    assert used - known == set()
    # The RED metrics come from the runtime itself.
    assert {
        "rpc_server_requests_total",
        "rpc_server_duration_milliseconds_bucket",
        "rpc_server_active_streams",
    } <= used


def test_compose_runs_the_redis_exporter_whose_metrics_are_named() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    assert compose["services"]["redis-exporter"]["image"] == REDIS_EXPORTER_IMAGE


def test_server_errors_are_what_the_runtime_counts_as_server_faults() -> None:
    client_side = {code.name for code in telemetry._CLIENT_SIDE_CODES}
    assert (
        set(render_manifests.SERVER_ERROR_CODES)
        == {code.name for code in grpc.StatusCode} - client_side
    )


def test_latency_excludes_exactly_the_streaming_rpcs() -> None:
    streaming = set(render_manifests.streaming_methods())
    assert streaming
    for service in SERVICE_NAMES:
        for method in service_descriptor(service).methods:
            # A name must mean the same kind of RPC wherever it is used, or the regex lies.
            is_stream = method.client_streaming or method.server_streaming
            assert (method.name in streaming) == is_stream, method.full_name
    latency = [r for r in RULES["groups"][0]["rules"] if "duration" in r["record"]]
    assert latency
    for rule in latency:
        assert f'rpc_method!~"{"|".join(sorted(streaming))}"' in rule["expr"]


def test_rules_are_well_formed() -> None:
    alerts = [rule for group in RULES["groups"] for rule in group["rules"] if "alert" in rule]
    names = [rule["alert"] for rule in alerts]
    assert len(names) == len(set(names))
    assert {
        "GatehouseServiceDown",
        "GatehouseRpcErrorsHigh",
        "GatehouseRpcLatencyHigh",
        "GatehouseErrorBudgetBurnFast",
        "GatehouseErrorBudgetBurnSlow",
        "GatehouseEventConsumerLag",
        "GatehouseEventDeliveryDelayed",
        "GatehouseDeadLetters",
        "GatehouseEdgeUpstreamUnhealthy",
    } <= set(names)
    for rule in alerts:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning"}
        assert rule["annotations"]["summary"]
        assert re.fullmatch(r"\d+[smh]", rule["for"])
    for rule in RULES["groups"][0]["rules"]:
        assert set(rule) == {"record", "expr"}
        # level:metric:operations, the Prometheus naming convention for recording rules.
        assert rule["record"].count(":") == 2
    # Every recording rule an alert uses is recorded.
    used = {name for rule in alerts for name in metric_names(rule["expr"]) if ":" in name}
    assert used <= recorded()


def test_burn_rate_alerts_use_both_windows_of_each_pair() -> None:
    by_name = {r["alert"]: r for g in RULES["groups"] for r in g["rules"] if "alert" in r}
    fast = by_name["GatehouseErrorBudgetBurnFast"]["expr"]
    for long, short, rate in render_manifests.FAST_BURNS:
        assert f"rate{long} > {rate} * {render_manifests.ERROR_BUDGET}" in fast
        assert f"rate{short} > {rate} * {render_manifests.ERROR_BUDGET}" in fast


@pytest.mark.parametrize("uid", ["gatehouse-services", "gatehouse-events", "gatehouse-edge"])
def test_dashboards_are_well_formed(uid: str) -> None:
    board = DASHBOARDS[uid]
    assert board["uid"] == uid
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        assert panel["datasource"]["uid"] == "prometheus"
        assert panel["targets"]
        assert 0 <= panel["gridPos"]["x"] < 24
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24


def test_every_alert_is_explained_in_the_operations_guide() -> None:
    guide = (ROOT / "docs" / "operations.md").read_text()
    for group in RULES["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                assert rule["alert"] in guide, rule["alert"]
