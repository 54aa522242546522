"""Options for running the edge away from the services' host: per-service upstream hosts and a
Prometheus-only stats listener (deploy/: Kubernetes and compose)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gatehouse.edge.config import (
    ADMIN_CLUSTER,
    STATS_LISTENER,
    STATS_PATH,
    EdgeFiles,
    build_config,
)
from gatehouse.runtime.config import SERVICE_NAMES, Settings

FILES = EdgeFiles(
    certificates=Path("/certs"), descriptor_set=Path("/edge.binpb"), openapi=Path("/openapi.json")
)


def clusters(bootstrap: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in bootstrap["static_resources"]["clusters"]}


def listeners(bootstrap: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {listener["name"]: listener for listener in bootstrap["static_resources"]["listeners"]}


def endpoint(cluster: dict[str, Any]) -> dict[str, Any]:
    address: dict[str, Any] = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0][
        "endpoint"
    ]["address"]["socket_address"]
    return address


def test_without_options_the_bootstrap_is_unchanged() -> None:
    settings = Settings.model_construct()
    assert build_config(settings, FILES) == build_config(
        settings, FILES, upstream_hosts=None, stats_port=None
    )
    assert STATS_LISTENER not in listeners(build_config(settings, FILES))
    assert ADMIN_CLUSTER not in clusters(build_config(settings, FILES))


def test_upstream_hosts_place_each_service_and_dns_names_resolve_strictly() -> None:
    hosts = {name: f"{name}.gatehouse.svc.cluster.local" for name in SERVICE_NAMES}
    built = clusters(build_config(Settings.model_construct(), FILES, upstream_hosts=hosts))
    for name in SERVICE_NAMES:
        assert endpoint(built[name]) == {
            "address": hosts[name],
            "port_value": 50051 + SERVICE_NAMES.index(name),
        }
        # Every address the name resolves to (every ready replica) is a host of the cluster.
        assert built[name]["type"] == "STRICT_DNS"


def test_upstream_hosts_may_name_only_some_services() -> None:
    built = clusters(
        build_config(Settings.model_construct(), FILES, upstream_hosts={"auth": "auth"})
    )
    assert endpoint(built["auth"])["address"] == "auth"
    assert endpoint(built["payments"])["address"] == "127.0.0.1"
    assert built["payments"]["type"] == "STATIC"


def test_stats_listener_serves_only_prometheus_stats_from_loopback_admin() -> None:
    settings = Settings.model_construct(edge_host="0.0.0.0", edge_admin_port=9901)
    bootstrap = build_config(settings, FILES, stats_port=9902)
    listener = listeners(bootstrap)[STATS_LISTENER]
    assert listener["address"]["socket_address"] == {"address": "0.0.0.0", "port_value": 9902}
    manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
    (virtual_host,) = manager["route_config"]["virtual_hosts"]
    (route,) = virtual_host["routes"]
    assert route["match"]["path"] == STATS_PATH
    assert route["route"] == {"cluster": ADMIN_CLUSTER}
    # The admin interface itself stays on loopback; only the stats cluster reaches it.
    assert bootstrap["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    assert endpoint(clusters(bootstrap)[ADMIN_CLUSTER]) == {
        "address": "127.0.0.1",
        "port_value": 9901,
    }


def test_stats_listener_needs_a_fixed_admin_port() -> None:
    settings = Settings.model_construct(edge_admin_port=0)
    with pytest.raises(ValueError, match="edge_admin_port"):
        build_config(settings, FILES, stats_port=9902)
