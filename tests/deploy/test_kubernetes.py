"""The Kubernetes manifests: schema-valid for the pinned version, complete for every service
in the code (drift fails), hardened, and wired the way the runtime expects."""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from gatehouse.cli.main import _parser as cli_parser
from gatehouse.edge.config import EdgeFiles, build_config, render
from gatehouse.edge.contracts import service_descriptor
from gatehouse.edge.process import EDGE_DESCRIPTORS
from gatehouse.runtime.config import SERVICE_NAMES, ServiceName, Settings
from scripts import render_manifests
from tests.deploy.support import (
    KUBERNETES_VERSION,
    Manifest,
    all_containers,
    find,
    known_variables,
    pod_specs,
    rendered,
)

PORTS: dict[str, int] = {name: Settings.model_construct().port_of(name) for name in SERVICE_NAMES}


def validate(obj: Manifest) -> None:
    # strict: unknown fields fail too (a misspelt `readinessprobe` would otherwise pass).
    kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_generated_base_and_compose_bootstrap_are_current() -> None:
    stale = render_manifests.stale_files()
    assert not stale, f"stale: {stale}; run `python scripts/render_manifests.py write`"


def test_every_object_is_valid_for_the_pinned_kubernetes_version(
    objects: list[Manifest],
) -> None:
    assert len(objects) >= 7 * len(SERVICE_NAMES)
    for obj in objects:
        validate(obj)


def test_the_validator_catches_mistakes_offline() -> None:
    deployment = copy.deepcopy(find(rendered("base"), "Deployment", "auth"))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinessprobe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment)
    deployment = copy.deepcopy(find(rendered("base"), "Deployment", "auth"))
    deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "x"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment)


def test_names_are_unique(objects: list[Manifest]) -> None:
    keys = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert len(keys) == len(set(keys))


@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_every_service_has_its_objects_and_probes(
    objects: list[Manifest], service: ServiceName
) -> None:
    deployment = find(objects, "Deployment", service)
    pod = deployment["spec"]["template"]
    pod_labels = pod["metadata"]["labels"]
    (container,) = pod["spec"]["containers"]
    health_port = render_manifests.HEALTH_PORT
    grpc_name = service_descriptor(service).full_name
    assert container["readinessProbe"]["grpc"] == {"port": health_port, "service": grpc_name}
    assert container["livenessProbe"]["grpc"]["port"] == health_port
    assert container["startupProbe"]["grpc"]["port"] == health_port
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {
        "grpc": PORTS[service],
        "health": health_port,
        "metrics": render_manifests.METRICS_PORT,
    }
    env = {e["name"]: e for e in container["env"]}
    assert env["GATEHOUSE_SERVICE"]["value"] == service

    def selects(selector: dict[str, str]) -> bool:
        return all(pod_labels.get(key) == value for key, value in selector.items())

    svc = find(objects, "Service", service)
    assert selects(svc["spec"]["selector"])
    assert svc["spec"]["clusterIP"] == "None"
    assert {p["name"]: p["port"] for p in svc["spec"]["ports"]}["grpc"] == PORTS[service]
    assert selects(find(objects, "PodDisruptionBudget", service)["spec"]["selector"]["matchLabels"])
    hpa = find(objects, "HorizontalPodAutoscaler", service)
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": service,
    }
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    # The HPA owns the replica count; a fixed one in the Deployment would fight it.
    assert "replicas" not in deployment["spec"]
    assert selects(find(objects, "NetworkPolicy", service)["spec"]["podSelector"]["matchLabels"])
    job = find(objects, "Job", f"{service}-migrate")
    (migrate,) = job["spec"]["template"]["spec"]["containers"]
    # `gatehouse migrate <service>` through the image's entrypoint.
    assert "command" not in migrate
    assert migrate["args"] == ["migrate", service]
    assert migrate["image"] == container["image"]
    # The Job sees exactly the service's configuration: same env, same secrets.
    assert migrate["env"] == container["env"]
    assert migrate["envFrom"] == container["envFrom"]


def test_the_migration_command_is_one_the_cli_has() -> None:
    parsed = cli_parser().parse_args(["migrate", "auth"])
    assert parsed.command == "migrate"
    assert parsed.services == ["auth"]


def test_every_pod_is_hardened(objects: list[Manifest]) -> None:
    pods = list(pod_specs(objects))
    assert pods
    for owner, pod in pods:
        where = f"{owner['kind']}/{owner['metadata']['name']}"
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert pod["automountServiceAccountToken"] is False, where
        for container in all_containers(pod):
            security = container["securityContext"]
            assert security["runAsNonRoot"] is True, where
            assert security["runAsUser"] != 0, where
            assert security["readOnlyRootFilesystem"] is True, where
            assert security["allowPrivilegeEscalation"] is False, where
            assert security["privileged"] is False, where
            assert security["capabilities"] == {"drop": ["ALL"]}, where
            assert security["seccompProfile"] == {"type": "RuntimeDefault"}, where
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]), where
            assert {"cpu", "memory"} <= set(resources["limits"]), where
            assert not container["image"].endswith(":latest"), where


def test_deployments_spread_over_zones_and_hosts(objects: list[Manifest]) -> None:
    deployments = [o for o in objects if o["kind"] == "Deployment"]
    assert {d["metadata"]["name"] for d in deployments} == {*SERVICE_NAMES, "edge"}
    for deployment in deployments:
        spread = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
        keys = {constraint["topologyKey"] for constraint in spread}
        assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
        for constraint in spread:
            assert (
                constraint["labelSelector"]["matchLabels"]
                == deployment["spec"]["selector"]["matchLabels"]
            )


def test_only_envoy_and_named_peers_reach_a_service(objects: list[Manifest]) -> None:
    def admitted(service: str) -> set[str]:
        policy = find(objects, "NetworkPolicy", service)
        (rule,) = [
            r
            for r in policy["spec"]["ingress"]
            if r.get("ports") == [{"protocol": "TCP", "port": PORTS[service]}]
        ]
        return {
            peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"] for peer in rule["from"]
        }

    # ARCHITECTURE §6 + SERVICE_GRANTS: access opens doors through monitoring, notifications
    # reads users from auth; auth's internal IntrospectToken serves every service.
    assert admitted("monitoring") == {"edge", "access"}
    assert admitted("auth") == {"edge", "access", "monitoring", "payments", "notifications"}
    assert admitted("payments") == {"edge"}
    assert admitted("access") == {"edge"}
    assert admitted("notifications") == {"edge"}
    deny = find(objects, "NetworkPolicy", "default-deny")
    assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}


def test_a_service_reaches_only_the_peers_it_may_call(objects: list[Manifest]) -> None:
    for service in SERVICE_NAMES:
        policy = find(objects, "NetworkPolicy", service)
        peers = {
            rule["to"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
            for rule in policy["spec"]["egress"]
            if "to" in rule and "namespaceSelector" not in rule["to"][0]
        }
        assert peers == set(render_manifests.callees_of(service)), service
    assert render_manifests.callees_of("access") == ("auth", "monitoring")
    assert render_manifests.callees_of("payments") == ("auth",)


def test_callers_follow_the_contracts() -> None:
    assert "access" in render_manifests.callers_of("monitoring")
    assert "notifications" in render_manifests.callers_of("auth")
    for service in SERVICE_NAMES:
        assert service not in render_manifests.callers_of(service)
        for callee in render_manifests.callees_of(service):
            assert service in render_manifests.callers_of(callee)


def test_secrets_hold_database_redis_and_certificates(objects: list[Manifest]) -> None:
    for service in SERVICE_NAMES:
        pod = find(objects, "Deployment", service)["spec"]["template"]["spec"]
        env = {e["name"]: e for e in pod["containers"][0]["env"]}
        assert env["GATEHOUSE_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
            "name": f"gatehouse-{service}",
            "key": "database-url",
        }
        assert env["GATEHOUSE_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {
            "name": "gatehouse-redis",
            "key": "url",
        }
        volumes = {v["name"]: v for v in pod["volumes"]}
        certs = volumes["certs"]["secret"]
        assert certs["secretName"] == f"gatehouse-{service}-tls"
        # The file names the runtime loads (CertificatePaths.for_name).
        assert {item["path"] for item in certs["items"]} == {
            "ca.pem",
            f"{service}.pem",
            f"{service}-key.pem",
        }
        for secret in render_manifests.secret_settings(service):
            assert env[secret.variable]["valueFrom"]["secretKeyRef"] == {
                "name": f"gatehouse-{service}",
                "key": secret.key,
                "optional": not secret.required,
            }
        # No secret value is ever written into a manifest.
        for value in env.values():
            assert "postgresql" not in str(value.get("value", ""))


def test_every_secret_setting_of_every_service_comes_from_its_secret() -> None:
    # Drift: a SecretStr setting added to a service's settings must reach its pods.
    found = {service: render_manifests.secret_settings(service) for service in SERVICE_NAMES}
    variables = {s.variable for secrets in found.values() for s in secrets}
    assert "GATEHOUSE_AUTH_KEY_ENCRYPTION_KEY" in variables
    assert "GATEHOUSE_MONITORING_SECRET_KEY" in variables
    # Keys every replica must share are required: a pod without one must not start.
    for secrets in found.values():
        for secret in secrets:
            assert secret.required == secret.variable.endswith(
                ("_KEY_ENCRYPTION_KEY", "_SECRET_KEY")
            ), secret


def test_every_variable_is_one_the_code_reads(objects: list[Manifest]) -> None:
    known = known_variables()
    used = set(find(objects, "ConfigMap", "gatehouse-config")["data"])
    for _, pod in pod_specs(objects):
        for container in all_containers(pod):
            used |= {variable["name"] for variable in container.get("env", [])}
    assert {v for v in used if v.startswith("GATEHOUSE_")} - known == set()


def test_shared_config_points_services_at_each_other() -> None:
    config = find(rendered("base"), "ConfigMap", "gatehouse-config")["data"]
    for service in SERVICE_NAMES:
        assert config[f"GATEHOUSE_{service.upper()}_TARGET"] == (
            f"{service}.gatehouse.svc.cluster.local:{PORTS[service]}"
        )
    assert config["GATEHOUSE_MIGRATE_ON_START"] == "false"
    assert config["GATEHOUSE_HOST"] == "0.0.0.0"


def kubernetes_bootstrap() -> str:
    """What gatehouse.edge.config builds for the cluster, computed here independently."""
    settings = Settings.model_construct(edge_host="0.0.0.0", edge_port=8443, edge_admin_port=9901)
    files = EdgeFiles(
        certificates=Path("/etc/gatehouse/certs"),
        descriptor_set=Path("/etc/envoy/files") / EDGE_DESCRIPTORS,
        openapi=Path("/etc/envoy/files/openapi.json"),
    )
    hosts = {name: f"{name}.gatehouse.svc.cluster.local" for name in SERVICE_NAMES}
    return render(build_config(settings, files, upstream_hosts=hosts, stats_port=9902))


def test_envoy_config_map_is_the_generator_output(objects: list[Manifest]) -> None:
    bootstrap = find(objects, "ConfigMap", "edge-envoy")["data"]["envoy.yaml"]
    assert bootstrap == kubernetes_bootstrap()
    parsed = yaml.safe_load(bootstrap)
    clusters = {c["name"]: c for c in parsed["static_resources"]["clusters"]}
    for service in SERVICE_NAMES:
        address = clusters[service]["load_assignment"]["endpoints"][0]["lb_endpoints"][0][
            "endpoint"
        ]["address"]["socket_address"]
        assert address == {
            "address": f"{service}.gatehouse.svc.cluster.local",
            "port_value": PORTS[service],
        }
    template = find(objects, "Deployment", "edge")["spec"]["template"]
    digest = template["metadata"]["annotations"]["gatehouse.dev/envoy-config-sha256"]
    assert digest == hashlib.sha256(bootstrap.encode()).hexdigest()
    mounts = {m["name"]: m for m in template["spec"]["containers"][0]["volumeMounts"]}
    assert mounts["config"]["mountPath"] == "/etc/envoy/envoy.yaml"


def test_edge_reaches_every_service_and_nothing_else(objects: list[Manifest]) -> None:
    policy = find(objects, "NetworkPolicy", "edge")
    reached: dict[str, list[Manifest]] = {}
    for rule in policy["spec"]["egress"]:
        (peer,) = rule["to"]
        name = peer["podSelector"]["matchLabels"].get("app.kubernetes.io/name")
        if name is not None and "namespaceSelector" not in peer:
            reached[name] = rule["ports"]
    assert reached == {name: [{"protocol": "TCP", "port": PORTS[name]}] for name in SERVICE_NAMES}
    # Besides: DNS and the OpenTelemetry Collector, nothing else.
    others = [r for r in policy["spec"]["egress"] if "namespaceSelector" in r["to"][0]]
    assert sorted(r["ports"][0]["port"] for r in others) == [53, 4317]


def test_overlays_differ_where_they_should() -> None:
    dev, prod = rendered("dev"), rendered("prod")
    assert find(dev, "HorizontalPodAutoscaler", "auth")["spec"]["minReplicas"] == 1
    assert find(prod, "HorizontalPodAutoscaler", "auth")["spec"]["minReplicas"] >= 3
    assert find(prod, "Service", "edge")["spec"]["type"] == "LoadBalancer"
    prod_image = find(prod, "Deployment", "auth")["spec"]["template"]["spec"]["containers"][0][
        "image"
    ]
    assert prod_image.startswith("registry.example.com/gatehouse/gatehouse:")
    assert find(dev, "ConfigMap", "gatehouse-config")["data"]["GATEHOUSE_LOG_LEVEL"] == "DEBUG"
    # The edge's init container runs the services' image of the same release.
    edge = find(prod, "Deployment", "edge")["spec"]["template"]["spec"]
    assert edge["initContainers"][0]["image"] == prod_image
