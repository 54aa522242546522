"""Helpers for the deployment tests: rendered manifests of the base and the overlays."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from gatehouse.clients.mesh import Targets
from gatehouse.runtime.config import SERVICE_NAMES, Settings
from scripts import render_manifests

Manifest = dict[str, Any]

# The Kubernetes version every manifest is validated against (kubernetes-validate's bundled
# schemas, offline). Raise it together with the oldest cluster version we support.
KUBERNETES_VERSION = "1.33.0"
OVERLAYS = ("dev", "prod")
BUILDS = ("base", *OVERLAYS)
# Envoy's metrics that the alert rules and dashboards name; test_edge_bootstrap scrapes a real
# Envoy to prove each exists.
ENVOY_METRICS = frozenset(
    {
        "envoy_cluster_membership_healthy",
        "envoy_cluster_upstream_rq_total",
        "envoy_cluster_upstream_cx_connect_fail",
        "envoy_http_downstream_rq_xx",
        "envoy_http_downstream_rq_total",
        "envoy_http_downstream_rq_time_bucket",
        "envoy_http_local_rate_limit_rate_limited",
        "envoy_http_jwt_authn_denied",
    }
)


def rendered(build: str) -> list[Manifest]:
    directory = render_manifests.BASE if build == "base" else render_manifests.OVERLAYS / build
    return render_manifests.build(directory)


def find(objects: list[Manifest], kind: str, name: str) -> Manifest:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def pod_specs(objects: list[Manifest]) -> Iterator[tuple[Manifest, Manifest]]:
    """(owner, pod spec) for every object with a pod template."""
    for obj in objects:
        template = obj.get("spec", {}).get("template")
        if template is not None:
            yield obj, template["spec"]


def all_containers(pod: Manifest) -> list[Manifest]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def known_variables() -> set[str]:
    """Every GATEHOUSE_* variable something in the code reads."""
    known = {f"GATEHOUSE_{name.upper()}" for name in Settings.model_fields}
    known |= {f"GATEHOUSE_{name.upper()}_TARGET" for name in Targets.__dataclass_fields__}
    known.add("GATEHOUSE_SERVICE")  # deploy/docker/entrypoint.sh
    for service in SERVICE_NAMES:
        for secret in render_manifests.secret_settings(service):
            known |= {secret.variable, f"{secret.variable}_FILE"}
    return known
