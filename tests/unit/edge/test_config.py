"""The generated Envoy bootstrap: derived from the contracts, one route per exposed RPC."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gatehouse.clients.retry import is_retryable
from gatehouse.edge.config import EdgeFiles, build_config, reference_config
from gatehouse.edge.contracts import RATE_LIMITED_METHODS, edge_methods
from gatehouse.runtime.config import SERVICE_NAMES, Settings
from tests.support.grpc_calls import all_methods

ROOT = Path(__file__).resolve().parents[3]
FILES = EdgeFiles(
    certificates=Path("/certs"), descriptor_set=Path("/edge.binpb"), openapi=Path("/openapi.json")
)


def config(**overrides: Any) -> dict[str, Any]:
    settings = Settings.model_construct(**overrides)
    return build_config(settings, FILES)


def connection_manager(bootstrap: dict[str, Any]) -> dict[str, Any]:
    listener = bootstrap["static_resources"]["listeners"][0]
    manager: dict[str, Any] = listener["filter_chains"][0]["filters"][0]["typed_config"]
    return manager


def routes(bootstrap: dict[str, Any]) -> dict[str, dict[str, Any]]:
    virtual_host = connection_manager(bootstrap)["route_config"]["virtual_hosts"][0]
    return {route["name"]: route for route in virtual_host["routes"]}


def filter_names(bootstrap: dict[str, Any]) -> list[str]:
    return [f["name"] for f in connection_manager(bootstrap)["http_filters"]]


def test_every_exposed_rpc_has_a_route_and_internal_ones_none() -> None:
    by_name = routes(config())
    for _, method in all_methods():
        exposed = next(m for m in edge_methods() if m.full_name == method.full_name).exposed
        assert (method.full_name in by_name) == exposed, method.full_name
    assert "gatehouse.auth.v1.AuthService.IntrospectToken" not in by_name


def test_streams_have_no_timeout_and_only_idempotent_unary_rpcs_retry() -> None:
    by_name = routes(config())
    for _, method in all_methods():
        route = by_name.get(method.full_name)
        if route is None:
            continue
        action = route["route"]
        if method.client_streaming or method.server_streaming:
            assert action["timeout"] == "0s", method.full_name
            assert "max_stream_duration" not in action
        else:
            assert action["timeout"] == "15s"
        assert ("retry_policy" in action) == is_retryable(method), method.full_name


def test_filter_order_puts_limits_and_tokens_after_the_transcoder() -> None:
    names = filter_names(config(edge_jwt_enabled=True, edge_cors_origins=["https://a.example"]))
    assert names == [
        "envoy.filters.http.health_check",
        "envoy.filters.http.cors",
        "envoy.filters.http.header_mutation",
        "envoy.filters.http.grpc_json_transcoder",
        "envoy.filters.http.local_ratelimit",
        "envoy.filters.http.jwt_authn",
        "envoy.filters.http.router",
    ]
    assert "envoy.filters.http.jwt_authn" in filter_names(config())
    assert "envoy.filters.http.jwt_authn" not in filter_names(config(edge_jwt_enabled=False))
    assert "envoy.filters.http.cors" not in filter_names(config())


def test_rate_limit_buckets_per_client_for_the_sensitive_rpcs() -> None:
    manager = connection_manager(config(edge_sensitive_rate_per_minute=6))
    limit = next(f for f in manager["http_filters"] if f["name"].endswith("local_ratelimit"))
    descriptors = limit["typed_config"]["descriptors"]
    paths = {d["entries"][0]["value"] for d in descriptors}
    assert paths == {"/{}/{}".format(*name.rsplit(".", 1)) for name in RATE_LIMITED_METHODS}
    assert all(d["entries"][1] == {"key": "remote_address"} for d in descriptors)
    assert descriptors[0]["token_bucket"] == {
        "max_tokens": 6,
        "tokens_per_fill": 1,
        "fill_interval": "10s",
    }
    retry_after = limit["typed_config"]["response_headers_to_add"][0]["header"]
    assert retry_after == {"key": "retry-after", "value": "10"}
    assert limit["typed_config"]["rate_limited_as_resource_exhausted"] is True


def test_jwks_is_fetched_from_auth_through_an_internal_listener_by_default() -> None:
    bootstrap = config()
    provider = next(
        f for f in connection_manager(bootstrap)["http_filters"] if f["name"].endswith("jwt_authn")
    )["typed_config"]["providers"]["gatehouse"]
    remote = provider["remote_jwks"]["http_uri"]
    assert remote["uri"].endswith("/.well-known/jwks.json")
    # No port anywhere: the cluster leads to a listener inside Envoy, whatever edge_port is.
    cluster = next(
        c for c in bootstrap["static_resources"]["clusters"] if c["name"] == remote["cluster"]
    )
    endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    listener_name = endpoint["address"]["envoy_internal_address"]["server_listener_name"]
    listener = next(
        x for x in bootstrap["static_resources"]["listeners"] if x["name"] == listener_name
    )
    assert listener["internal_listener"] == {}
    manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
    (route, not_found) = manager["route_config"]["virtual_hosts"][0]["routes"]
    assert route["match"]["path"] == "/gatehouse.auth.v1.AuthService/GetJwks"
    assert route["route"]["cluster"] == "auth"
    assert "direct_response" in not_found
    extensions = [e["name"] for e in bootstrap["bootstrap_extensions"]]
    assert extensions == ["envoy.bootstrap.internal_listener"]


def test_public_and_device_rpcs_are_exempt_from_the_token_check() -> None:
    by_name = routes(config())
    for method in edge_methods():
        if not method.exposed:
            continue
        per_route = by_name[method.full_name]["typed_per_filter_config"]
        jwt = per_route["envoy.filters.http.jwt_authn"]
        assert ("disabled" in jwt) == (not method.needs_token), method.full_name
    for public in ("Register", "Login", "RefreshToken", "GetJwks"):
        route = by_name[f"gatehouse.auth.v1.AuthService.{public}"]
        assert route["typed_per_filter_config"]["envoy.filters.http.jwt_authn"]["disabled"]
    for route_name in ("openapi", "grpc_not_found", "rest"):
        assert by_name[route_name]["typed_per_filter_config"]["envoy.filters.http.jwt_authn"][
            "disabled"
        ]


def test_a_local_jwks_file_needs_no_internal_listener() -> None:
    files = EdgeFiles(
        certificates=Path("/certs"),
        descriptor_set=Path("/edge.binpb"),
        openapi=Path("/openapi.json"),
        jwks=Path("/jwks.json"),
    )
    bootstrap = build_config(Settings.model_construct(), files)
    assert len(bootstrap["static_resources"]["listeners"]) == 1
    assert "bootstrap_extensions" not in bootstrap


def test_remote_jwks_without_the_auth_service_is_refused() -> None:
    with pytest.raises(ValueError, match="auth"):
        build_config(Settings.model_construct(), FILES, services=("payments",))
    names = filter_names(
        build_config(
            Settings.model_construct(edge_jwt_enabled=False), FILES, services=("payments",)
        )
    )
    assert "envoy.filters.http.jwt_authn" not in names


def test_no_limits_no_filter() -> None:
    names = filter_names(config(edge_sensitive_rate_per_minute=0, edge_global_rate_per_second=0))
    assert "envoy.filters.http.local_ratelimit" not in names


@pytest.mark.parametrize("required", [True, False])
def test_downstream_tls_verifies_client_certificates_against_our_ca(required: bool) -> None:
    listener = config(edge_require_client_certs=required)["static_resources"]["listeners"][0]
    tls = listener["filter_chains"][0]["transport_socket"]["typed_config"]
    assert tls["require_client_certificate"] is required
    context = tls["common_tls_context"]
    assert context["alpn_protocols"] == ["h2", "http/1.1"]
    assert context["validation_context"]["trusted_ca"]["filename"] == "/certs/ca.pem"
    assert context["tls_certificates"][0]["certificate_chain"]["filename"] == "/certs/envoy.pem"


def test_each_upstream_is_http2_mtls_with_its_own_spiffe_id_and_health_checked() -> None:
    clusters = {c["name"]: c for c in config()["static_resources"]["clusters"]}
    for name in SERVICE_NAMES:
        cluster = clusters[name]
        context = cluster["transport_socket"]["typed_config"]["common_tls_context"]
        sans = context["validation_context"]["match_typed_subject_alt_names"]
        assert sans == [{"san_type": "URI", "matcher": {"exact": f"spiffe://gatehouse/{name}"}}]
        assert context["tls_certificates"][0]["private_key"]["filename"] == "/certs/envoy-key.pem"
        health = cluster["health_checks"][0]
        assert health["no_traffic_interval"] == "2s"
        assert health["grpc_health_check"]["service_name"].startswith(f"gatehouse.{name}.v1.")
        assert "outlier_detection" in cluster


def test_admin_listens_on_loopback_only() -> None:
    admin = config(edge_host="0.0.0.0")["admin"]
    assert admin["address"]["socket_address"]["address"] == "127.0.0.1"


def test_committed_reference_is_current() -> None:
    committed = (ROOT / "envoy" / "edge.reference.yaml").read_text()
    assert committed == reference_config(), (
        "envoy/edge.reference.yaml is stale: run "
        "`.venv/bin/gatehouse edge config --reference > envoy/edge.reference.yaml`"
    )


def test_auth_publishes_a_rotated_key_for_longer_than_the_edge_caches_the_jwks() -> None:
    # Otherwise tokens signed with a new key get 401 at the edge until its cache expires.
    from gatehouse.auth.settings import AuthSettings  # noqa: PLC0415

    provider = connection_manager(config())["http_filters"]
    jwt_filter = next(f for f in provider if f["name"] == "envoy.filters.http.jwt_authn")
    cache = jwt_filter["typed_config"]["providers"]["gatehouse"]["remote_jwks"]["cache_duration"]
    defaults = AuthSettings.model_construct()
    assert defaults.signing_key_prepublish.total_seconds() > float(cache.removesuffix("s"))


def test_a_service_with_replicas_gets_one_endpoint_each() -> None:
    bootstrap = build_config(
        Settings.model_construct(), FILES, upstream_ports={"monitoring": [50101, 50102]}
    )
    clusters = {c["name"]: c for c in bootstrap["static_resources"]["clusters"]}
    endpoints = clusters["monitoring"]["load_assignment"]["endpoints"][0]["lb_endpoints"]
    ports = [e["endpoint"]["address"]["socket_address"]["port_value"] for e in endpoints]
    assert ports == [50101, 50102]
    # The others keep their one configured port.
    (auth,) = clusters["auth"]["load_assignment"]["endpoints"][0]["lb_endpoints"]
    assert auth["endpoint"]["address"]["socket_address"]["port_value"] == 50051


def test_spans_go_to_the_configured_collector_at_the_services_sampling_ratio() -> None:
    bootstrap = config(otlp_endpoint="http://10.0.0.9:4317", trace_sample_ratio=0.25)
    tracing = connection_manager(bootstrap)["tracing"]
    assert tracing["random_sampling"] == {"value": 25.0}
    exporter = tracing["provider"]["typed_config"]["grpc_service"]["envoy_grpc"]
    clusters = {c["name"]: c for c in bootstrap["static_resources"]["clusters"]}
    collector = clusters[exporter["cluster_name"]]
    endpoint = collector["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"]["socket_address"] == {"address": "10.0.0.9", "port_value": 4317}
    assert "transport_socket" not in collector  # http:// is plaintext
    # Without a collector the spans stop inside Envoy; the trace context still flows.
    quiet = connection_manager(config())["tracing"]["provider"]["typed_config"]
    assert "http_service" in quiet


def test_a_collector_address_without_a_scheme_is_refused() -> None:
    with pytest.raises(ValueError, match="otlp_endpoint"):
        config(otlp_endpoint="collector:4317")
