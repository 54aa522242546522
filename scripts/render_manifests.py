"""Gatehouse's deployment manifests: generate the kustomize base, build overlays, check drift.

    python scripts/render_manifests.py write            # regenerate the generated files
    python scripts/render_manifests.py check            # exit 1 if a generated file is stale
    python scripts/render_manifests.py build dev        # `kustomize build` of an overlay
    python scripts/render_manifests.py build deploy/k8s/base

What is generated, and from what (nothing per service is written by hand, so a sixth service or
a new internal RPC changes the manifests by running `write`):

- `deploy/k8s/base/*.yaml`: per service a ServiceAccount, Deployment (native gRPC probes,
  hardened securityContext, topology spread), headless Service, PodDisruptionBudget,
  HorizontalPodAutoscaler, NetworkPolicy and migration Job, from `SERVICE_NAMES` and the
  default ports in `gatehouse.runtime.config`; who may call whom from the contracts' `internal`
  access rules and `SERVICE_GRANTS`; the Envoy edge with its bootstrap as a ConfigMap built by
  `gatehouse.edge.config` (the generator `gatehouse up` uses).
- `deploy/compose/envoy.yaml`: the same generator's bootstrap for compose's host names.
- `deploy/observability/`: the Prometheus recording and alerting rules (RED per service, error
  budget burn, event lag, dead letters, the edge) and the Grafana dashboards, over the metrics
  the runtime, Envoy and the Redis exporter export; latency leaves out the contracts' streaming
  RPCs.

The overlays (`deploy/k8s/overlays/<name>/kustomization.yaml`) are written by hand in
kustomize's format. `build` implements the part of kustomize they use (resources, images,
JSON 6902 patches with targets) and refuses anything else, so it never silently differs from
`kustomize build`.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import importlib
import importlib.util
import json
import re
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, cast, get_args

import yaml
from pydantic import SecretStr
from pydantic_settings import BaseSettings

from gatehouse.edge.config import EDGE_IDENTITY, EdgeFiles, build_config, render
from gatehouse.edge.contracts import service_descriptor
from gatehouse.edge.process import EDGE_DESCRIPTORS
from gatehouse.runtime.authorization import (
    SERVICE_GRANTS,
    AccessRule,
    UndeclaredAccessRuleError,
)
from gatehouse.runtime.config import SERVICE_NAMES, ServiceName, Settings

Manifest = dict[str, Any]

ROOT: Final = Path(__file__).resolve().parents[1]
K8S: Final = ROOT / "deploy" / "k8s"
BASE: Final = K8S / "base"
OVERLAYS: Final = K8S / "overlays"
COMPOSE_ENVOY: Final = ROOT / "deploy" / "compose" / "envoy.yaml"

NAMESPACE: Final = "gatehouse"
PART_OF: Final = "gatehouse"
# Overlays replace these with a registry and a tag (kustomize `images`).
IMAGE: Final = "gatehouse"
ENVOY_IMAGE: Final = "envoyproxy/envoy:distroless-v1.40.0"
APP_UID: Final = 10001
# The distroless Envoy image's own non-root user.
ENVOY_UID: Final = 65532

# Container ports. The services keep their embedded-mode ports so one set of numbers is used
# everywhere (ARCHITECTURE §3); each pod runs one service.
HEALTH_PORT: Final = 8081
METRICS_PORT: Final = 9464
EDGE_PORT: Final = 8443
EDGE_ADMIN_PORT: Final = 9901
EDGE_STATS_PORT: Final = 9902

CERTS_DIR: Final = "/etc/gatehouse/certs"
EDGE_CONFIG_DIR: Final = "/etc/envoy"
EDGE_FILES_DIR: Final = "/etc/envoy/files"
ENVOY_LOG_FORMAT: Final = (
    '{"time":"%Y-%m-%dT%T.%eZ","level":"%l","logger":"envoy.%n","service":"edge","message":"%j"}'
)

# A service's secret settings (pydantic `SecretStr` fields of `gatehouse.<service>.settings`)
# come from its Secret `gatehouse-<service>`, key = the field name with dashes. These must be
# present: every replica has to share them (a key made per pod would split the service).
SHARED_KEYS: Final = frozenset({"key_encryption_key", "secret_key"})

# Egress beyond DNS, PostgreSQL, Redis, the OpenTelemetry Collector and peers: what a service
# talks to outside the mesh (notifications: SMTP submission and webhooks).
EXTERNAL_EGRESS_PORTS: Final[Mapping[ServiceName, tuple[int, ...]]] = {
    "notifications": (465, 587, 443),
}

POSTGRES_PORT: Final = 5432
REDIS_PORT: Final = 6379
OTLP_PORT: Final = 4317


@dataclass(frozen=True, slots=True)
class Resources:
    cpu_request: str
    memory_request: str
    cpu_limit: str
    memory_limit: str

    def manifest(self) -> Manifest:
        return {
            "requests": {"cpu": self.cpu_request, "memory": self.memory_request},
            "limits": {"cpu": self.cpu_limit, "memory": self.memory_limit},
        }


DEFAULT_RESOURCES: Final = Resources("100m", "192Mi", "1", "512Mi")
# Argon2id hashing (19 MiB and real CPU per login) makes auth the heaviest service.
RESOURCES: Final[Mapping[ServiceName, Resources]] = {
    "auth": Resources("250m", "256Mi", "2", "768Mi"),
}
EDGE_RESOURCES: Final = Resources("100m", "128Mi", "1", "256Mi")
MIGRATION_RESOURCES: Final = Resources("50m", "128Mi", "500m", "384Mi")

GENERATED_HEADER: Final = (
    "# Generated by scripts/render_manifests.py from the code (SERVICE_NAMES, the contracts,\n"
    "# gatehouse.edge.config): do not edit; run `python scripts/render_manifests.py write`.\n"
)


# ---- who calls whom ---------------------------------------------------------------------


def callers_of(service: ServiceName) -> tuple[ServiceName, ...]:
    """The services allowed to call `service`, from its contract and SERVICE_GRANTS.

    An `internal` RPC names its callers (none named: every other service); a service acting
    for itself holds grants (`access` -> `monitoring.devices.command`) on another's RPCs.
    """
    allowed: set[str] = set()
    for method in service_descriptor(service).methods:
        try:
            rule = AccessRule.of(method)
        except UndeclaredAccessRuleError:
            continue
        if rule.kind == "internal":
            allowed |= set(rule.services) or (set(SERVICE_NAMES) - {service})
    for caller, grants in SERVICE_GRANTS.items():
        if any(grant.split(".", 1)[0] == service for grant in grants):
            allowed.add(caller)
    allowed.discard(service)
    return tuple(name for name in SERVICE_NAMES if name in allowed)


def callees_of(service: ServiceName) -> tuple[ServiceName, ...]:
    return tuple(name for name in SERVICE_NAMES if service in callers_of(name))


# ---- small builders -----------------------------------------------------------------------


def grpc_service_name(service: ServiceName) -> str:
    return service_descriptor(service).full_name


def default_port(service: ServiceName) -> int:
    return Settings.model_construct().port_of(service)


def service_host(service: ServiceName) -> str:
    return f"{service}.{NAMESPACE}.svc.cluster.local"


def labels(name: str, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/part-of": PART_OF,
        "app.kubernetes.io/component": component,
    }


def selector(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": PART_OF}


def metadata(name: str, component: str, **extra: Any) -> Manifest:
    return {"name": name, "namespace": NAMESPACE, "labels": labels(name, component), **extra}


def pod_security(uid: int) -> Manifest:
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "fsGroup": uid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security(uid: int) -> Manifest:
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def tls_volume(identity: str) -> Manifest:
    """A cert-manager style TLS Secret (`tls.crt`, `tls.key`, `ca.crt`) as the files the
    runtime reads (`ca.pem`, `<identity>.pem`, `<identity>-key.pem`)."""
    return {
        "name": "certs",
        "secret": {
            "secretName": f"gatehouse-{identity}-tls",
            "defaultMode": 0o440,
            "items": [
                {"key": "ca.crt", "path": "ca.pem"},
                {"key": "tls.crt", "path": f"{identity}.pem"},
                {"key": "tls.key", "path": f"{identity}-key.pem"},
            ],
        },
    }


def tmp_volume() -> Manifest:
    return {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}}


def topology_spread(name: str) -> list[Manifest]:
    return [
        {
            "maxSkew": 1,
            "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": selector(name)},
            # Spread each rollout's pods on their own, so a surge never blocks on old pods.
            "matchLabelKeys": ["pod-template-hash"],
        },
        {
            "maxSkew": 1,
            "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": selector(name)},
            "matchLabelKeys": ["pod-template-hash"],
        },
    ]


def pods(name: str) -> Manifest:
    return {"podSelector": {"matchLabels": selector(name)}}


def prometheus_peer() -> Manifest:
    # Prometheus may run in another namespace (kube-prometheus: `monitoring`).
    return {
        "namespaceSelector": {},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
    }


def dns_egress() -> Manifest:
    return {
        "to": [
            {
                "namespaceSelector": {},
                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
            }
        ],
        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
    }


def otlp_egress() -> Manifest:
    # Traces go to an OpenTelemetry Collector, which may live in another namespace.
    return {
        "to": [
            {
                "namespaceSelector": {},
                "podSelector": {"matchLabels": {"app.kubernetes.io/name": "otel-collector"}},
            }
        ],
        "ports": [{"protocol": "TCP", "port": OTLP_PORT}],
    }


def port_egress(*ports: int) -> Manifest:
    # PostgreSQL and Redis are external (managed) services: their addresses are the
    # operator's, so egress is limited by port; overlays may narrow it with ipBlocks.
    return {"ports": [{"protocol": "TCP", "port": port} for port in ports]}


# ---- services -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SecretSetting:
    variable: str
    key: str
    required: bool


def secret_settings(service: ServiceName) -> tuple[SecretSetting, ...]:
    """Every `SecretStr` setting of the service's own settings class, if it has one."""
    module_name = f"gatehouse.{service}.settings"
    if importlib.util.find_spec(module_name) is None:
        return ()
    module = importlib.import_module(module_name)
    prefix = f"GATEHOUSE_{service.upper()}_"
    found: list[SecretSetting] = []
    for candidate in vars(module).values():
        if not (
            isinstance(candidate, type)
            and issubclass(candidate, BaseSettings)
            and candidate.__module__ == module_name
            and candidate.model_config.get("env_prefix") == prefix
        ):
            continue
        for name, info in candidate.model_fields.items():
            if SecretStr in (info.annotation, *get_args(info.annotation)):
                found.append(
                    SecretSetting(
                        variable=prefix + name.upper(),
                        key=name.replace("_", "-"),
                        required=name in SHARED_KEYS,
                    )
                )
    return tuple(found)


def service_env(service: ServiceName) -> list[Manifest]:
    env: list[Manifest] = [
        {"name": "GATEHOUSE_SERVICE", "value": service},
        {
            "name": "GATEHOUSE_DATABASE_URL",
            "valueFrom": {"secretKeyRef": {"name": f"gatehouse-{service}", "key": "database-url"}},
        },
        {
            "name": "GATEHOUSE_REDIS_URL",
            "valueFrom": {"secretKeyRef": {"name": "gatehouse-redis", "key": "url"}},
        },
    ]
    env.extend(
        {
            "name": secret.variable,
            "valueFrom": {
                "secretKeyRef": {
                    "name": f"gatehouse-{service}",
                    "key": secret.key,
                    # Optional ones (an SMTP password, a bootstrap admin) may be absent.
                    "optional": not secret.required,
                }
            },
        }
        for secret in secret_settings(service)
    )
    return env


def service_volumes(service: ServiceName) -> tuple[list[Manifest], list[Manifest]]:
    volumes = [tls_volume(service), tmp_volume()]
    mounts: list[Manifest] = [
        {"name": "certs", "mountPath": CERTS_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    return volumes, mounts


def service_container(service: ServiceName) -> Manifest:
    port = default_port(service)
    _, mounts = service_volumes(service)
    return {
        "name": service,
        "image": IMAGE,
        "imagePullPolicy": "IfNotPresent",
        "envFrom": [{"configMapRef": {"name": "gatehouse-config"}}],
        "env": service_env(service),
        "ports": [
            {"name": "grpc", "containerPort": port, "protocol": "TCP"},
            {"name": "health", "containerPort": HEALTH_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
        ],
        # Native gRPC probes (grpc.health.v1) on the plaintext health-only port: the kubelet
        # cannot present a client certificate to the mTLS port.
        "startupProbe": {
            "grpc": {"port": HEALTH_PORT, "service": grpc_service_name(service)},
            "periodSeconds": 2,
            "failureThreshold": 60,
        },
        "readinessProbe": {
            "grpc": {"port": HEALTH_PORT, "service": grpc_service_name(service)},
            "periodSeconds": 5,
            "timeoutSeconds": 2,
            "failureThreshold": 2,
        },
        "livenessProbe": {
            "grpc": {"port": HEALTH_PORT},
            "periodSeconds": 10,
            "timeoutSeconds": 3,
            "failureThreshold": 3,
        },
        # Endpoints are removed asynchronously: keep serving until Envoy and peers have
        # noticed, then SIGTERM drains (NOT_SERVING first, GATEHOUSE_SHUTDOWN_GRACE_SECONDS).
        "lifecycle": {"preStop": {"sleep": {"seconds": 5}}},
        "resources": RESOURCES.get(service, DEFAULT_RESOURCES).manifest(),
        "securityContext": container_security(APP_UID),
        "volumeMounts": mounts,
    }


def deployment(service: ServiceName) -> Manifest:
    volumes, _ = service_volumes(service)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(service, "service"),
        "spec": {
            # No `replicas`: the HorizontalPodAutoscaler owns it (minReplicas).
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": selector(service)},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "template": {
                "metadata": {
                    "labels": labels(service, "service"),
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(METRICS_PORT),
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": {
                    "serviceAccountName": f"gatehouse-{service}",
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "terminationGracePeriodSeconds": 30,
                    "securityContext": pod_security(APP_UID),
                    "topologySpreadConstraints": topology_spread(service),
                    "containers": [service_container(service)],
                    "volumes": volumes,
                },
            },
        },
    }


def service_account(name: str) -> Manifest:
    # Its own component: the migration Jobs run as it, so it is applied before them.
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": metadata(f"gatehouse-{name}", "identity"),
        "automountServiceAccountToken": False,
    }


def service(service: ServiceName) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(service, "service"),
        "spec": {
            # Headless: the name resolves to every ready replica, so Envoy (STRICT_DNS) and
            # gRPC clients balance requests, not long-lived HTTP/2 connections.
            "clusterIP": "None",
            "selector": selector(service),
            "ports": [
                {
                    "name": "grpc",
                    "port": default_port(service),
                    "targetPort": "grpc",
                    "protocol": "TCP",
                    "appProtocol": "grpc",
                },
                {
                    "name": "metrics",
                    "port": METRICS_PORT,
                    "targetPort": "metrics",
                    "protocol": "TCP",
                },
            ],
        },
    }


def disruption_budget(name: str, component: str) -> Manifest:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(name, component),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": selector(name)},
            # A pod that never became ready may be evicted even when the budget is spent.
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


def autoscaler(name: str, component: str, minimum: int = 2, maximum: int = 6) -> Manifest:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(name, component),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": minimum,
            "maxReplicas": maximum,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 70},
                    },
                }
            ],
            "behavior": {
                # Live streams reconnect when a pod goes: scale down slowly.
                "scaleDown": {
                    "stabilizationWindowSeconds": 300,
                    "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
                }
            },
        },
    }


def network_policy(service: ServiceName) -> Manifest:
    port = default_port(service)
    callers = [pods(EDGE_NAME), *(pods(caller) for caller in callers_of(service))]
    egress: list[Manifest] = [
        dns_egress(),
        port_egress(POSTGRES_PORT, REDIS_PORT),
        otlp_egress(),
    ]
    egress.extend(
        {
            "to": [pods(callee)],
            "ports": [{"protocol": "TCP", "port": default_port(callee)}],
        }
        for callee in callees_of(service)
    )
    if service in EXTERNAL_EGRESS_PORTS:
        egress.append(port_egress(*EXTERNAL_EGRESS_PORTS[service]))
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(service, "service"),
        "spec": {
            **pods(service),
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                {"from": callers, "ports": [{"protocol": "TCP", "port": port}]},
                {
                    "from": [prometheus_peer()],
                    "ports": [{"protocol": "TCP", "port": METRICS_PORT}],
                },
                # The kubelet's probes come from the node, which no selector names; the
                # health port answers grpc.health.v1 only.
                {"ports": [{"protocol": "TCP", "port": HEALTH_PORT}]},
            ],
            "egress": egress,
        },
    }


def migration_job(service: ServiceName) -> Manifest:
    volumes, mounts = service_volumes(service)
    name = f"{service}-migrate"
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata(
            name,
            "migration",
            annotations={
                # GitOps tools run it before the Deployment changes and replace the old one
                # (a Job's pod template is immutable); docs/operations.md has the kubectl way.
                "argocd.argoproj.io/hook": "PreSync",
                "argocd.argoproj.io/hook-delete-policy": "BeforeHookCreation",
            },
        ),
        "spec": {
            "backoffLimit": 4,
            "activeDeadlineSeconds": 900,
            "ttlSecondsAfterFinished": 86400,
            "template": {
                "metadata": {"labels": labels(name, "migration")},
                "spec": {
                    "restartPolicy": "Never",
                    "serviceAccountName": f"gatehouse-{service}",
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": pod_security(APP_UID),
                    "containers": [
                        {
                            "name": "migrate",
                            "image": IMAGE,
                            "imagePullPolicy": "IfNotPresent",
                            # `gatehouse migrate <service>` through the image's entrypoint.
                            "args": ["migrate", service],
                            "envFrom": [{"configMapRef": {"name": "gatehouse-config"}}],
                            "env": service_env(service),
                            "resources": MIGRATION_RESOURCES.manifest(),
                            "securityContext": container_security(APP_UID),
                            "volumeMounts": mounts,
                        }
                    ],
                    "volumes": volumes,
                },
            },
        },
    }


def service_manifests(name: ServiceName) -> list[Manifest]:
    return [
        service_account(name),
        deployment(name),
        service(name),
        disruption_budget(name, "service"),
        autoscaler(name, "service"),
        network_policy(name),
        migration_job(name),
    ]


# ---- shared objects -----------------------------------------------------------------------


def namespace() -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": NAMESPACE,
            "labels": {
                "app.kubernetes.io/part-of": PART_OF,
                "app.kubernetes.io/component": "namespace",
                # Every pod here meets the "restricted" Pod Security Standard.
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/enforce-version": "latest",
            },
        },
    }


def shared_config() -> Manifest:
    data = {
        "GATEHOUSE_HOST": "0.0.0.0",
        "GATEHOUSE_HOME": "/tmp/gatehouse",
        "GATEHOUSE_CERTS_DIR": CERTS_DIR,
        "GATEHOUSE_MIGRATE_ON_START": "false",
        "GATEHOUSE_EDGE_ENABLED": "false",
        "GATEHOUSE_HEALTH_PORT": str(HEALTH_PORT),
        "GATEHOUSE_METRICS_PORT": str(METRICS_PORT),
        "GATEHOUSE_LOG_FORMAT": "json",
        "GATEHOUSE_LOG_LEVEL": "INFO",
        # Below terminationGracePeriodSeconds (30) minus the preStop sleep (5).
        "GATEHOUSE_SHUTDOWN_GRACE_SECONDS": "20",
    }
    # Where each service is for its peers (gatehouse.clients.mesh.Targets.from_env).
    data |= {
        f"GATEHOUSE_{name.upper()}_TARGET": f"{service_host(name)}:{default_port(name)}"
        for name in SERVICE_NAMES
    }
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata("gatehouse-config", "config"),
        "data": data,
    }


def default_deny() -> Manifest:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata("default-deny", "network"),
        "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
    }


def migration_policy() -> Manifest:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata("migrations", "migration"),
        "spec": {
            "podSelector": {"matchLabels": {"app.kubernetes.io/component": "migration"}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [],
            "egress": [dns_egress(), port_egress(POSTGRES_PORT)],
        },
    }


# ---- the edge -----------------------------------------------------------------------------

EDGE_NAME: Final = "edge"


def edge_settings(otlp_endpoint: str | None = None) -> Settings:
    # model_construct: defaults only, never the GATEHOUSE_* variables of whoever renders.
    return Settings.model_construct(
        edge_host="0.0.0.0",
        edge_port=EDGE_PORT,
        edge_admin_port=EDGE_ADMIN_PORT,
        otlp_endpoint=otlp_endpoint,
    )


def edge_bootstrap(hosts: Mapping[ServiceName, str], otlp_endpoint: str | None = None) -> str:
    files = EdgeFiles(
        certificates=Path(CERTS_DIR),
        descriptor_set=Path(EDGE_FILES_DIR) / EDGE_DESCRIPTORS,
        openapi=Path(EDGE_FILES_DIR) / "openapi.json",
    )
    config = build_config(
        edge_settings(otlp_endpoint), files, upstream_hosts=hosts, stats_port=EDGE_STATS_PORT
    )
    return render(config)


def kubernetes_edge_bootstrap() -> str:
    return edge_bootstrap({name: service_host(name) for name in SERVICE_NAMES})


# The collector compose runs; the services get the same address (compose.yaml).
COMPOSE_OTLP_ENDPOINT: Final = "http://otel-collector:4317"


def compose_edge_bootstrap() -> str:
    return edge_bootstrap({name: name for name in SERVICE_NAMES}, COMPOSE_OTLP_ENDPOINT)


def edge_config_map() -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata("edge-envoy", "edge"),
        "data": {"envoy.yaml": kubernetes_edge_bootstrap()},
    }


def edge_deployment() -> Manifest:
    bootstrap = kubernetes_edge_bootstrap()
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(EDGE_NAME, "edge"),
        "spec": {
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": selector(EDGE_NAME)},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "template": {
                "metadata": {
                    "labels": labels(EDGE_NAME, "edge"),
                    "annotations": {
                        # A new bootstrap rolls the edge (a ConfigMap change alone would not).
                        "gatehouse.dev/envoy-config-sha256": hashlib.sha256(
                            bootstrap.encode()
                        ).hexdigest(),
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(EDGE_STATS_PORT),
                        "prometheus.io/path": "/stats/prometheus",
                    },
                },
                "spec": {
                    "serviceAccountName": f"gatehouse-{EDGE_NAME}",
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "terminationGracePeriodSeconds": 30,
                    "securityContext": pod_security(ENVOY_UID),
                    "topologySpreadConstraints": topology_spread(EDGE_NAME),
                    "initContainers": [
                        {
                            # The descriptor set and OpenAPI document of this release, from
                            # the services' own image (deploy/docker/edge_files.py).
                            "name": "edge-files",
                            "image": IMAGE,
                            "imagePullPolicy": "IfNotPresent",
                            "command": ["gatehouse-edge-files"],
                            "args": [EDGE_FILES_DIR],
                            "resources": MIGRATION_RESOURCES.manifest(),
                            "securityContext": container_security(ENVOY_UID),
                            "volumeMounts": [
                                {"name": "edge-files", "mountPath": EDGE_FILES_DIR},
                                {"name": "tmp", "mountPath": "/tmp"},
                            ],
                        }
                    ],
                    "containers": [
                        {
                            "name": "envoy",
                            "image": ENVOY_IMAGE,
                            "imagePullPolicy": "IfNotPresent",
                            "args": [
                                "--config-path",
                                f"{EDGE_CONFIG_DIR}/envoy.yaml",
                                "--disable-hot-restart",
                                "--log-format",
                                ENVOY_LOG_FORMAT,
                                "--drain-time-s",
                                "20",
                            ],
                            "ports": [
                                {"name": "https", "containerPort": EDGE_PORT, "protocol": "TCP"},
                                {
                                    "name": "stats",
                                    "containerPort": EDGE_STATS_PORT,
                                    "protocol": "TCP",
                                },
                            ],
                            # /healthz is answered by Envoy itself (200 live, 503 draining).
                            "readinessProbe": {
                                "httpGet": {
                                    "path": "/healthz",
                                    "port": "https",
                                    "scheme": "HTTPS",
                                },
                                "periodSeconds": 5,
                                "failureThreshold": 2,
                            },
                            "livenessProbe": {
                                "tcpSocket": {"port": "https"},
                                "periodSeconds": 10,
                                "failureThreshold": 3,
                            },
                            "lifecycle": {"preStop": {"sleep": {"seconds": 10}}},
                            "resources": EDGE_RESOURCES.manifest(),
                            "securityContext": container_security(ENVOY_UID),
                            "volumeMounts": [
                                {
                                    "name": "config",
                                    "mountPath": f"{EDGE_CONFIG_DIR}/envoy.yaml",
                                    "subPath": "envoy.yaml",
                                    "readOnly": True,
                                },
                                {
                                    "name": "edge-files",
                                    "mountPath": EDGE_FILES_DIR,
                                    "readOnly": True,
                                },
                                {"name": "certs", "mountPath": CERTS_DIR, "readOnly": True},
                            ],
                        }
                    ],
                    "volumes": [
                        {"name": "config", "configMap": {"name": "edge-envoy"}},
                        {"name": "edge-files", "emptyDir": {"sizeLimit": "16Mi"}},
                        tls_volume(EDGE_IDENTITY),
                        tmp_volume(),
                    ],
                },
            },
        },
    }


def edge_service() -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(EDGE_NAME, "edge"),
        "spec": {
            "type": "ClusterIP",
            "selector": selector(EDGE_NAME),
            "ports": [
                {"name": "https", "port": 443, "targetPort": "https", "protocol": "TCP"},
                {
                    "name": "stats",
                    "port": EDGE_STATS_PORT,
                    "targetPort": "stats",
                    "protocol": "TCP",
                },
            ],
        },
    }


def edge_network_policy() -> Manifest:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(EDGE_NAME, "edge"),
        "spec": {
            **pods(EDGE_NAME),
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                # The public entry point: clients, load balancers, ingress controllers.
                {"ports": [{"protocol": "TCP", "port": EDGE_PORT}]},
                {
                    "from": [prometheus_peer()],
                    "ports": [{"protocol": "TCP", "port": EDGE_STATS_PORT}],
                },
            ],
            "egress": [
                dns_egress(),
                otlp_egress(),
                *(
                    {
                        "to": [pods(name)],
                        "ports": [{"protocol": "TCP", "port": default_port(name)}],
                    }
                    for name in SERVICE_NAMES
                ),
            ],
        },
    }


def edge_manifests() -> list[Manifest]:
    return [
        service_account(EDGE_NAME),
        edge_config_map(),
        edge_deployment(),
        edge_service(),
        disruption_budget(EDGE_NAME, "edge"),
        autoscaler(EDGE_NAME, "edge", minimum=2, maximum=4),
        edge_network_policy(),
    ]


# ---- observability: Prometheus rules and Grafana dashboards ----------------------------------

OBSERVABILITY: Final = ROOT / "deploy" / "observability"
RULES_FILE: Final = OBSERVABILITY / "prometheus" / "rules" / "gatehouse.yaml"
DASHBOARDS: Final = OBSERVABILITY / "grafana" / "dashboards"

# Prometheus job names (deploy/observability/prometheus/prometheus.yml; docs/operations.md).
SERVICES_JOB: Final = "gatehouse"
EDGE_JOB: Final = "gatehouse-edge"
REDIS_JOB: Final = "redis"
# gRPC statuses that are the server's fault: everything the runtime's tracing does not count
# as the caller's business (gatehouse.runtime.telemetry; a test keeps the two equal).
SERVER_ERROR_CODES: Final = (
    "UNKNOWN",
    "DEADLINE_EXCEEDED",
    "ABORTED",
    "OUT_OF_RANGE",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
)
# Availability objective per service: 99.9 % of RPCs without a server error.
SLO_TARGET: Final = 0.999
ERROR_BUDGET: Final = round(1 - SLO_TARGET, 6)
RATE_WINDOWS: Final = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
# Multi-window burn-rate alerts (Google SRE workbook, ch. 5): (long, short, burn rate).
FAST_BURNS: Final = (("1h", "5m", 14.4), ("6h", "30m", 6.0))
SLOW_BURNS: Final = (("1d", "2h", 3.0), ("3d", "6h", 1.0))
EVENT_STREAMS: Final = 'stream=~"gatehouse:events\\\\..*"'
DEAD_LETTER_STREAMS: Final = 'stream=~"gatehouse:dead\\\\..*"'


def streaming_methods() -> tuple[str, ...]:
    """RPC names that stream: their duration is a stream's lifetime, not a latency."""
    names = {
        method.name
        for service in SERVICE_NAMES
        for method in service_descriptor(service).methods
        if method.client_streaming or method.server_streaming
    }
    return tuple(sorted(names))


def rpc_selector(*matchers: str) -> str:
    return "{" + ",".join((f'job="{SERVICES_JOB}"', *matchers)) + "}"


def server_errors() -> str:
    return f'rpc_grpc_status_code=~"{"|".join(SERVER_ERROR_CODES)}"'


def unary() -> str:
    return f'rpc_method!~"{"|".join(streaming_methods())}"'


def error_ratio(window: str) -> str:
    return (
        f"sum by (rpc_service) (rate(rpc_server_requests_total{rpc_selector(server_errors())}"
        f"[{window}]))\n/\n"
        f"sum by (rpc_service) (rate(rpc_server_requests_total{rpc_selector()}[{window}]))"
    )


def latency_quantile(quantile: float, window: str = "5m", by: str = "rpc_service") -> str:
    return (
        f"histogram_quantile({quantile}, sum by ({by}, le) "
        f"(rate(rpc_server_duration_milliseconds_bucket{rpc_selector(unary())}[{window}])))"
    )


def recording_rules() -> list[Manifest]:
    rules: list[Manifest] = [
        {
            "record": "rpc_service:rpc_server_requests:rate5m",
            "expr": f"sum by (rpc_service) (rate(rpc_server_requests_total{rpc_selector()}[5m]))",
        },
        {
            "record": "rpc_service:rpc_server_errors:rate5m",
            "expr": (
                "sum by (rpc_service) "
                f"(rate(rpc_server_requests_total{rpc_selector(server_errors())}[5m]))"
            ),
        },
    ]
    rules.extend(
        {"record": f"rpc_service:rpc_server_error_ratio:rate{window}", "expr": error_ratio(window)}
        for window in RATE_WINDOWS
    )
    rules.extend(
        {
            "record": f"rpc_service:rpc_server_duration_milliseconds:p{int(q * 100)}_5m",
            "expr": latency_quantile(q),
        }
        for q in (0.5, 0.95, 0.99)
    )
    return rules


def burn_alert(name: str, severity: str, burns: Sequence[tuple[str, str, float]]) -> Manifest:
    conditions = [
        f"(rpc_service:rpc_server_error_ratio:rate{long} > {rate} * {ERROR_BUDGET}\n"
        f" and rpc_service:rpc_server_error_ratio:rate{short} > {rate} * {ERROR_BUDGET})"
        for long, short, rate in burns
    ]
    windows = ", ".join(f"{rate}x over {long} and {short}" for long, short, rate in burns)
    return {
        "alert": name,
        "expr": "\nor\n".join(conditions),
        "for": "2m",
        "labels": {"severity": severity},
        "annotations": {
            "summary": "{{ $labels.rpc_service }} is spending its error budget too fast",
            "description": (
                f"Server errors burn the {SLO_TARGET:.1%} availability budget ({windows}). "
                "Dashboard: Gatehouse / Services. docs/operations.md#reading-the-dashboards"
            ),
        },
    }


def alerting_rules() -> list[Manifest]:
    return [
        {
            "alert": "GatehouseServiceDown",
            "expr": f'up{{job="{SERVICES_JOB}"}} == 0',
            "for": "2m",
            "labels": {"severity": "critical"},
            "annotations": {
                "summary": "{{ $labels.instance }} does not answer /metrics",
                "description": "A Gatehouse service process is down or unreachable.",
            },
        },
        {
            "alert": "GatehouseRpcErrorsHigh",
            "expr": (
                "rpc_service:rpc_server_error_ratio:rate5m > 0.05\n"
                "and rpc_service:rpc_server_requests:rate5m > 0.1"
            ),
            "for": "10m",
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": "{{ $labels.rpc_service }}: over 5% of RPCs fail with server errors",
                "description": f"Server errors: {', '.join(SERVER_ERROR_CODES)}.",
            },
        },
        {
            "alert": "GatehouseRpcLatencyHigh",
            "expr": "rpc_service:rpc_server_duration_milliseconds:p99_5m > 1000",
            "for": "10m",
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": "{{ $labels.rpc_service }}: p99 of unary RPCs above 1 s",
                "description": "Streaming RPCs are excluded (their duration is their lifetime).",
            },
        },
        burn_alert("GatehouseErrorBudgetBurnFast", "critical", FAST_BURNS),
        burn_alert("GatehouseErrorBudgetBurnSlow", "warning", SLOW_BURNS),
        {
            "alert": "GatehouseEdgeUpstreamUnhealthy",
            "expr": (
                f'envoy_cluster_membership_healthy{{job="{EDGE_JOB}",'
                f'envoy_cluster_name=~"{"|".join(SERVICE_NAMES)}"}} == 0'
            ),
            "for": "1m",
            "labels": {"severity": "critical"},
            "annotations": {
                "summary": "The edge has no healthy {{ $labels.envoy_cluster_name }} replica",
                "description": "Clients get UNAVAILABLE / 503 for every RPC of that service.",
            },
        },
        {
            "alert": "GatehouseEdgeServerErrorsHigh",
            "expr": (
                "sum(rate(envoy_http_downstream_rq_xx"
                f'{{job="{EDGE_JOB}",envoy_http_conn_manager_prefix="edge",'
                'envoy_response_code_class="5"}[5m]))\n/\n'
                "sum(rate(envoy_http_downstream_rq_total"
                f'{{job="{EDGE_JOB}",envoy_http_conn_manager_prefix="edge"}}[5m])) > 0.05'
            ),
            "for": "10m",
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": "Over 5% of edge responses are 5xx",
                "description": "Dashboard: Gatehouse / Edge.",
            },
        },
        {
            "alert": "GatehouseEventConsumerLag",
            "expr": f'redis_stream_group_lag{{job="{REDIS_JOB}",{EVENT_STREAMS}}} > 1000',
            "for": "10m",
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": (
                    "{{ $labels.group }} is {{ $value }} events behind on {{ $labels.stream }}"
                ),
                "description": "Events wait to be delivered: scale the consuming service.",
            },
        },
        {
            "alert": "GatehouseEventDeliveryDelayed",
            "expr": (
                f'(max by (stream) (redis_stream_last_generated_id{{job="{REDIS_JOB}",'
                f"{EVENT_STREAMS}}})\n"
                f"- on (stream) group_right max by (stream, group) "
                f'(redis_stream_group_last_delivered_id{{job="{REDIS_JOB}",{EVENT_STREAMS}}}))'
                "\n/ 1000 > 300"
            ),
            "for": "10m",
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": (
                    "{{ $labels.group }} has taken nothing from {{ $labels.stream }} "
                    "for over 5 minutes of its newest events"
                ),
                "description": "A consumer is stuck or down: events age in the stream.",
            },
        },
        {
            "alert": "GatehouseEventsUnacknowledged",
            "expr": (
                f'redis_stream_group_messages_pending{{job="{REDIS_JOB}",{EVENT_STREAMS}}} > 100'
            ),
            "for": "15m",
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": "{{ $labels.group }} holds {{ $value }} unacknowledged events",
                "description": "Handlers fail or hang; their events retry, then dead-letter.",
            },
        },
        {
            "alert": "GatehouseDeadLetters",
            "expr": (
                f'sum by (stream) (redis_stream_length{{job="{REDIS_JOB}",{DEAD_LETTER_STREAMS}}})'
                " > 0"
            ),
            "for": "5m",
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": "{{ $value }} dead letters in {{ $labels.stream }}",
                "description": (
                    "Inspect with `gatehouse events dead-letters`, fix the cause, then "
                    "`gatehouse events replay`. docs/operations.md#dead-letters"
                ),
            },
        },
        {
            "alert": "GatehouseOutboxBacklog",
            "expr": (
                "max by (gatehouse_database) (gatehouse_outbox_oldest_pending_age_seconds) > 60"
            ),
            "for": "5m",
            "labels": {"severity": "critical"},
            "annotations": {
                "summary": (
                    "{{ $labels.gatehouse_database }} has committed events unpublished for "
                    "{{ $value }}s"
                ),
                "description": (
                    "The outbox relay cannot reach the bus (Redis) or lost its leader: state "
                    "changes happen but nobody hears of them. docs/operations.md"
                ),
            },
        },
        {
            "alert": "GatehouseConsumerHandlersFailing",
            "expr": (
                "sum by (gatehouse_consumer, gatehouse_reason) "
                "(increase(gatehouse_consumer_dead_letters_total[15m])) > 0"
            ),
            "for": "1m",
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": (
                    "{{ $labels.gatehouse_consumer }} dead-lettered events "
                    "({{ $labels.gatehouse_reason }})"
                ),
                "description": "Handlers exhausted their retries. docs/operations.md#dead-letters",
            },
        },
        {
            "alert": "GatehouseConsumerSlow",
            "expr": (
                "histogram_quantile(0.99, sum by (le, gatehouse_consumer) "
                "(rate(gatehouse_consumer_lag_seconds_bucket[10m]))) > 60"
            ),
            "for": "10m",
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": (
                    "{{ $labels.gatehouse_consumer }} handles events over a minute after "
                    "they happened (p99)"
                ),
                "description": "Scale the consuming service or look for slow handlers.",
            },
        },
    ]


def prometheus_rules() -> Manifest:
    return {
        "groups": [
            {"name": "gatehouse-rpc.rules", "interval": "30s", "rules": recording_rules()},
            {"name": "gatehouse.alerts", "rules": alerting_rules()},
        ]
    }


def panel(
    title: str,
    targets: Sequence[tuple[str, str]],
    *,
    unit: str = "short",
    kind: str = "timeseries",
    width: int = 12,
) -> Manifest:
    return {
        "type": kind,
        "title": title,
        "datasource": {"type": "prometheus", "uid": "prometheus"},
        "gridPos": {"h": 8, "w": width, "x": 0, "y": 0},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "table", "placement": "bottom"}},
        "targets": [
            {
                "refId": chr(ord("A") + index),
                "expr": expr,
                "legendFormat": legend,
                "datasource": {"type": "prometheus", "uid": "prometheus"},
            }
            for index, (expr, legend) in enumerate(targets)
        ],
    }


def dashboard(uid: str, title: str, panels: list[Manifest], variables: list[Manifest]) -> Manifest:
    x = y = 0
    for index, item in enumerate(panels, start=1):
        item["id"] = index
        width = item["gridPos"]["w"]
        if x + width > 24:
            x, y = 0, y + 8
        item["gridPos"] |= {"x": x, "y": y}
        x += width
    return {
        "uid": uid,
        "title": title,
        "tags": ["gatehouse"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": False,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": variables},
        "panels": panels,
    }


def label_variable(name: str, metric: str, label: str) -> Manifest:
    return {
        "name": name,
        "type": "query",
        "datasource": {"type": "prometheus", "uid": "prometheus"},
        "query": {"query": f"label_values({metric}, {label})", "refId": name},
        "definition": f"label_values({metric}, {label})",
        "includeAll": True,
        "multi": True,
        "current": {"text": "All", "value": "$__all"},
        "refresh": 2,
    }


def services_dashboard() -> Manifest:
    chosen = 'rpc_service=~"$service"'
    by_service = f'{{job="{SERVICES_JOB}",{chosen}}}'
    return dashboard(
        "gatehouse-services",
        "Gatehouse / Services (RED)",
        [
            panel(
                "Requests per second",
                [(f"rpc_service:rpc_server_requests:rate5m{{{chosen}}}", "{{rpc_service}}")],
                unit="reqps",
            ),
            panel(
                "Server error ratio",
                [(f"rpc_service:rpc_server_error_ratio:rate5m{{{chosen}}}", "{{rpc_service}}")],
                unit="percentunit",
            ),
            panel(
                "Latency of unary RPCs (p50 / p95 / p99)",
                [
                    (
                        f"rpc_service:rpc_server_duration_milliseconds:p{q}_5m{{{chosen}}}",
                        f"p{q} {{{{rpc_service}}}}",
                    )
                    for q in (50, 95, 99)
                ],
                unit="ms",
            ),
            panel(
                "Error budget burn rate (1 = spending it exactly in 30 days)",
                [
                    (
                        f"rpc_service:rpc_server_error_ratio:rate{window}{{{chosen}}}"
                        f" / {ERROR_BUDGET}",
                        f"{window} {{{{rpc_service}}}}",
                    )
                    for window in ("1h", "6h", "1d")
                ],
            ),
            panel(
                "Requests by method and status",
                [
                    (
                        "sum by (rpc_service, rpc_method, rpc_grpc_status_code) "
                        f"(rate(rpc_server_requests_total{by_service}[5m]))",
                        "{{rpc_method}} {{rpc_grpc_status_code}}",
                    )
                ],
                unit="reqps",
            ),
            panel(
                "p99 latency by method (unary)",
                [
                    (
                        "histogram_quantile(0.99, sum by (rpc_method, le) "
                        "(rate(rpc_server_duration_milliseconds_bucket"
                        f'{{job="{SERVICES_JOB}",{chosen},{unary()}}}[5m])))',
                        "{{rpc_method}}",
                    )
                ],
                unit="ms",
            ),
            panel(
                "Streams in flight",
                [
                    (
                        f"sum by (rpc_service) (rpc_server_active_streams{by_service})",
                        "{{rpc_service}}",
                    )
                ],
            ),
            panel(
                "Processes up",
                [(f'up{{job="{SERVICES_JOB}"}}', "{{instance}}")],
                kind="stat",
            ),
        ],
        [label_variable("service", "rpc_server_requests_total", "rpc_service")],
    )


def events_dashboard() -> Manifest:
    events = f'{{job="{REDIS_JOB}",{EVENT_STREAMS}}}'
    return dashboard(
        "gatehouse-events",
        "Gatehouse / Events",
        [
            panel(
                "Consumer lag (events not yet delivered to the group)",
                [(f"redis_stream_group_lag{events}", "{{stream}} → {{group}}")],
            ),
            panel(
                "Delivery delay (newest event vs. the group's last delivered, seconds)",
                [
                    (
                        f"(max by (stream) (redis_stream_last_generated_id{events})"
                        " - on (stream) group_right max by (stream, group) "
                        f"(redis_stream_group_last_delivered_id{events})) / 1000",
                        "{{stream}} → {{group}}",
                    )
                ],
                unit="s",
            ),
            panel(
                "Delivered, not acknowledged (pending)",
                [(f"redis_stream_group_messages_pending{events}", "{{stream}} → {{group}}")],
            ),
            panel(
                "Dead letters",
                [
                    (
                        f'redis_stream_length{{job="{REDIS_JOB}",{DEAD_LETTER_STREAMS}}}',
                        "{{stream}}",
                    )
                ],
            ),
            panel(
                "Events in each stream (retained)",
                [(f"redis_stream_length{events}", "{{stream}}")],
            ),
            panel(
                "Consumers per group",
                [(f"redis_stream_group_consumers{events}", "{{stream}} → {{group}}")],
            ),
        ],
        [],
    )


def edge_dashboard() -> Manifest:
    edge = f'job="{EDGE_JOB}",envoy_http_conn_manager_prefix="edge"'
    clusters = f'job="{EDGE_JOB}",envoy_cluster_name=~"{"|".join(SERVICE_NAMES)}"'
    return dashboard(
        "gatehouse-edge",
        "Gatehouse / Edge (Envoy)",
        [
            panel(
                "Requests by response class",
                [
                    (
                        "sum by (envoy_response_code_class) "
                        f"(rate(envoy_http_downstream_rq_xx{{{edge}}}[5m]))",
                        "{{envoy_response_code_class}}xx",
                    )
                ],
                unit="reqps",
            ),
            panel(
                "Request time p99 (downstream)",
                [
                    (
                        "histogram_quantile(0.99, sum by (le) "
                        f"(rate(envoy_http_downstream_rq_time_bucket{{{edge}}}[5m])))",
                        "p99",
                    )
                ],
                unit="ms",
            ),
            panel(
                "Upstream requests per service",
                [
                    (
                        "sum by (envoy_cluster_name) "
                        f"(rate(envoy_cluster_upstream_rq_total{{{clusters}}}[5m]))",
                        "{{envoy_cluster_name}}",
                    )
                ],
                unit="reqps",
            ),
            panel(
                "Healthy replicas per service (as the edge sees them)",
                [
                    (
                        "min by (envoy_cluster_name) "
                        f"(envoy_cluster_membership_healthy{{{clusters}}})",
                        "{{envoy_cluster_name}}",
                    )
                ],
            ),
            panel(
                "Rejected at the edge: rate limited and token refused",
                [
                    (
                        "sum(rate(envoy_http_local_rate_limit_rate_limited"
                        f'{{job="{EDGE_JOB}"}}[5m]))',
                        "rate limited",
                    ),
                    (
                        f"sum(rate(envoy_http_jwt_authn_denied{{{edge}}}[5m]))",
                        "token refused",
                    ),
                ],
                unit="reqps",
            ),
            panel(
                "Upstream connect failures",
                [
                    (
                        "sum by (envoy_cluster_name) "
                        f"(rate(envoy_cluster_upstream_cx_connect_fail{{{clusters}}}[5m]))",
                        "{{envoy_cluster_name}}",
                    )
                ],
            ),
        ],
        [],
    )


def observability_files() -> dict[Path, str]:
    header = GENERATED_HEADER.replace("SERVICE_NAMES, the contracts,", "the contracts and")
    return {
        RULES_FILE: header
        + yaml.dump(prometheus_rules(), Dumper=_Dumper, sort_keys=False, width=100),
        **{
            DASHBOARDS / f"{board['uid']}.json": json.dumps(board, indent=2) + "\n"
            for board in (services_dashboard(), events_dashboard(), edge_dashboard())
        },
    }


# ---- the generated files ------------------------------------------------------------------


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the Envoy bootstrap in its ConfigMap) as readable literal blocks."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def dump_all(documents: Iterable[Manifest]) -> str:
    return "---\n".join(
        yaml.dump(document, Dumper=_Dumper, sort_keys=False, width=100) for document in documents
    )


def base_files() -> dict[Path, str]:
    """Every generated file of the base, by path, with its content."""
    files: dict[str, list[Manifest]] = {
        "namespace.yaml": [namespace(), default_deny(), migration_policy()],
        "config.yaml": [shared_config()],
        **{f"{name}.yaml": service_manifests(name) for name in SERVICE_NAMES},
        "edge.yaml": edge_manifests(),
    }
    rendered = {BASE / name: GENERATED_HEADER + dump_all(docs) for name, docs in files.items()}
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": list(files),
    }
    rendered[BASE / "kustomization.yaml"] = GENERATED_HEADER + yaml.safe_dump(
        kustomization, sort_keys=False
    )
    return rendered


def generated_files() -> dict[Path, str]:
    return (
        base_files()
        | observability_files()
        | {
            COMPOSE_ENVOY: (
                "# The edge's Envoy bootstrap for compose.yaml. Generated by\n"
                "# scripts/render_manifests.py from services/gatehouse/edge/config.py:\n"
                "# do not edit.\n" + compose_edge_bootstrap()
            )
        }
    )


def stale_files() -> list[Path]:
    stale = [
        path
        for path, content in generated_files().items()
        if not path.is_file() or path.read_text() != content
    ]
    # A generated file nothing generates any more (a removed service or dashboard) is stale.
    expected = set(generated_files())
    leftovers = [*sorted(BASE.glob("*.yaml")), *sorted(DASHBOARDS.glob("*.json"))]
    stale.extend(path for path in leftovers if path not in expected)
    return stale


def write_files() -> list[Path]:
    written = []
    for path, content in generated_files().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.is_file() or path.read_text() != content:
            path.write_text(content)
            written.append(path)
    return written


# ---- `kustomize build`, the part the overlays use -----------------------------------------

KNOWN_KEYS: Final = frozenset({"apiVersion", "kind", "resources", "images", "patches"})


class KustomizeError(Exception):
    """The kustomization uses something this renderer does not implement, or is wrong."""


def load_documents(path: Path) -> list[Manifest]:
    documents = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    for document in documents:
        if not isinstance(document, dict) or "kind" not in document:
            raise KustomizeError(f"{path}: not a Kubernetes object: {document!r:.80}")
    return cast("list[Manifest]", documents)


def build(directory: Path) -> list[Manifest]:
    """The objects `kustomize build directory` produces, in resource order."""
    kustomization_path = directory / "kustomization.yaml"
    if not kustomization_path.is_file():
        raise KustomizeError(f"{directory} has no kustomization.yaml")
    kustomization = yaml.safe_load(kustomization_path.read_text()) or {}
    unknown = set(kustomization) - KNOWN_KEYS
    if unknown:
        raise KustomizeError(f"{kustomization_path}: not implemented here: {sorted(unknown)}")
    objects: list[Manifest] = []
    for resource in kustomization.get("resources", []):
        target = (directory / resource).resolve()
        objects.extend(build(target) if target.is_dir() else load_documents(target))
    for image in kustomization.get("images", []):
        set_image(objects, image)
    for patch in kustomization.get("patches", []):
        apply_patch(objects, patch, directory)
    return objects


def set_image(objects: list[Manifest], image: Mapping[str, str]) -> None:
    name = image["name"]
    unknown = set(image) - {"name", "newName", "newTag", "digest"}
    if unknown:
        raise KustomizeError(f"images: not implemented: {sorted(unknown)}")
    for container in containers(objects):
        current = str(container["image"])
        if image_name(current) != name:
            continue
        new = image.get("newName", name)
        if "digest" in image:
            container["image"] = f"{new}@{image['digest']}"
        elif "newTag" in image:
            container["image"] = f"{new}:{image['newTag']}"
        else:
            container["image"] = new + current[len(name) :]


def image_name(reference: str) -> str:
    reference = reference.split("@", 1)[0]
    last = reference.rsplit("/", 1)[-1]
    return reference[: len(reference) - len(last)] + last.split(":", 1)[0]


def containers(objects: Iterable[Manifest]) -> Iterator[Manifest]:
    for obj in objects:
        spec = obj.get("spec", {})
        pod = spec.get("template", {}).get("spec") if "template" in spec else None
        if pod is None:
            continue
        yield from pod.get("initContainers", [])
        yield from pod.get("containers", [])


def apply_patch(objects: list[Manifest], patch: Mapping[str, Any], directory: Path) -> None:
    unknown = set(patch) - {"patch", "path", "target"}
    if unknown:
        raise KustomizeError(f"patches: not implemented: {sorted(unknown)}")
    text = patch["patch"] if "patch" in patch else (directory / patch["path"]).read_text()
    operations = yaml.safe_load(text)
    if not isinstance(operations, list):
        # A strategic-merge patch: not implemented, and never silently ignored.
        raise KustomizeError("patches: only JSON 6902 operation lists are implemented")
    target = patch.get("target")
    if not isinstance(target, dict):
        raise KustomizeError("patches: a JSON 6902 patch needs a target")
    matched = [obj for obj in objects if matches(obj, target)]
    if not matched:
        raise KustomizeError(f"patches: target {target} matches nothing")
    for obj in matched:
        for operation in operations:
            apply_operation(obj, operation)


def matches(obj: Manifest, target: Mapping[str, Any]) -> bool:
    unknown = set(target) - {"kind", "name", "labelSelector", "group", "version"}
    if unknown:
        raise KustomizeError(f"patch target: not implemented: {sorted(unknown)}")
    if "kind" in target and obj["kind"] != target["kind"]:
        return False
    if "name" in target and not re.fullmatch(target["name"], obj["metadata"]["name"]):
        return False
    api_version = str(obj["apiVersion"])
    group, _, version = api_version.rpartition("/")
    if "group" in target and target["group"] != group:
        return False
    if "version" in target and target["version"] != version:
        return False
    if "labelSelector" in target:
        object_labels = obj["metadata"].get("labels", {})
        for requirement in str(target["labelSelector"]).split(","):
            key, _, value = requirement.partition("=")
            if object_labels.get(key.strip()) != value.strip():
                return False
    return True


def apply_operation(obj: Manifest, operation: Mapping[str, Any]) -> None:
    op = operation.get("op")
    path = [
        part.replace("~1", "/").replace("~0", "~")
        for part in str(operation.get("path", "")).split("/")[1:]
    ]
    if not path:
        raise KustomizeError(f"patch operation without a path: {operation}")
    parent: Any = obj
    for part in path[:-1]:
        parent = parent[int(part)] if isinstance(parent, list) else parent[part]
    if op in ("add", "replace"):
        _put(parent, path[-1], copy.deepcopy(operation["value"]), replace=op == "replace")
    elif op == "remove":
        del parent[int(path[-1]) if isinstance(parent, list) else path[-1]]
    else:
        raise KustomizeError(f"patch operation not implemented: {op!r}")


def _put(parent: Any, key: str, value: Any, *, replace: bool) -> None:
    if isinstance(parent, list):
        if key == "-":
            parent.append(value)
        elif replace:
            parent[int(key)] = value
        else:
            parent.insert(int(key), value)
        return
    if replace and key not in parent:
        raise KustomizeError(f"replace of a missing path: /{key}")
    parent[key] = value


def overlay_directory(name_or_path: str) -> Path:
    candidate = OVERLAYS / name_or_path
    return candidate if candidate.is_dir() else Path(name_or_path)


# ---- command line -------------------------------------------------------------------------


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("write", help="regenerate the generated files")
    commands.add_parser("check", help="exit 1 when a generated file is stale")
    build_command = commands.add_parser("build", help="kustomize build of an overlay or path")
    build_command.add_argument("overlay", help="dev, prod, or a directory")
    args = parser.parse_args(argv)
    if args.command == "write":
        for path in write_files():
            print(f"wrote {_shown(path)}")
        return 0
    if args.command == "check":
        stale = stale_files()
        for path in stale:
            print(f"stale: {_shown(path)}", file=sys.stderr)
        if stale:
            print("run: python scripts/render_manifests.py write", file=sys.stderr)
        return 1 if stale else 0
    try:
        print(dump_all(build(overlay_directory(args.overlay))), end="")
    except KustomizeError as error:
        print(error, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
