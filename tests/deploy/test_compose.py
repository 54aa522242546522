"""compose.yaml: every service of the code in its own container, with its migration step,
the dependencies and the observability stack; hardened; configured with real settings."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from gatehouse.runtime.config import SERVICE_NAMES, ServiceName, Settings
from scripts import render_manifests
from tests.deploy.support import known_variables

ROOT = Path(__file__).resolve().parents[2]
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
INFRASTRUCTURE = (
    "postgres",
    "redis",
    "edge",
    "otel-collector",
    "prometheus",
    "grafana",
    "redis-exporter",
    "certs",
    "edge-files",
)
PORTS = {name: Settings.model_construct().port_of(name) for name in SERVICE_NAMES}


def test_loads_and_names_every_service_and_the_stack() -> None:
    assert set(SERVICES) >= {*SERVICE_NAMES, *INFRASTRUCTURE}
    assert {f"migrate-{name}" for name in SERVICE_NAMES} <= set(SERVICES)
    # Nothing but the code's services, their migrations and the stack.
    assert set(SERVICES) == {
        *SERVICE_NAMES,
        *INFRASTRUCTURE,
        *(f"migrate-{name}" for name in SERVICE_NAMES),
    }


@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_each_service_runs_alone_after_its_migration(service: ServiceName) -> None:
    container = SERVICES[service]
    assert container["image"] == "gatehouse:dev"
    assert container["build"]["dockerfile"] == "Dockerfile"
    assert container["environment"]["GATEHOUSE_SERVICE"] == service
    depends = container["depends_on"]
    assert depends[f"migrate-{service}"] == {"condition": "service_completed_successfully"}
    assert depends["certs"] == {"condition": "service_completed_successfully"}
    assert depends["redis"] == {"condition": "service_healthy"}
    migrate = SERVICES[f"migrate-{service}"]
    assert "entrypoint" not in migrate
    assert migrate["command"] == ["migrate", service]
    assert (
        migrate["environment"]["GATEHOUSE_DATABASE_URL"]
        == (container["environment"]["GATEHOUSE_DATABASE_URL"])
    )
    # Peers are reached by compose host name on the service's port.
    for peer in SERVICE_NAMES:
        assert container["environment"][f"GATEHOUSE_{peer.upper()}_TARGET"] == (
            f"{peer}:{PORTS[peer]}"
        )


@pytest.mark.parametrize("name", [*SERVICE_NAMES, "edge", "certs", "edge-files", "prometheus"])
def test_our_containers_are_hardened(name: str) -> None:
    container = SERVICES[name]
    assert container["read_only"] is True
    user = str(container["user"]).split(":")[0]
    assert user.isdigit()
    assert int(user) != 0
    assert container["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in container["security_opt"]


def test_only_the_edge_and_the_consoles_are_published_and_on_loopback() -> None:
    published = {name: c["ports"] for name, c in SERVICES.items() if "ports" in c}
    assert set(published) == {"edge", "prometheus", "grafana"}
    for ports in published.values():
        for port in ports:
            assert port.startswith("127.0.0.1:")


def test_every_variable_is_one_the_code_reads() -> None:
    known = known_variables()
    unknown = {
        variable
        for container in SERVICES.values()
        for variable in container.get("environment", {})
        if variable.startswith("GATEHOUSE_") and variable not in known
    }
    assert not unknown


def test_shared_keys_are_files_made_once_for_every_replica() -> None:
    environment = SERVICES["auth"]["environment"]
    for service in SERVICE_NAMES:
        for secret in render_manifests.secret_settings(service):
            if secret.required:
                path = environment[f"{secret.variable}_FILE"]
                assert path == f"/etc/gatehouse/keys/{service}.key"
    certs = SERVICES["certs"]
    assert certs["entrypoint"] == ["gatehouse-dev-certs"]
    assert "--keys" in certs["command"]


def test_database_url_gives_each_service_its_own_database() -> None:
    url = SERVICES["auth"]["environment"]["GATEHOUSE_DATABASE_URL"]
    assert "{service}" in url
    init = (ROOT / "deploy" / "compose" / "postgres-init.sql").read_text()
    created = set(re.findall(r"CREATE DATABASE (\w+)", init))
    assert created == {url.rsplit("/", 1)[1].replace("{service}", name) for name in SERVICE_NAMES}


def test_bind_mounted_files_exist() -> None:
    for name, container in SERVICES.items():
        for volume in container.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name}: {source}"


def test_edge_runs_the_generated_bootstrap_with_the_edge_files() -> None:
    edge = SERVICES["edge"]
    assert "./deploy/compose/envoy.yaml:/etc/envoy/envoy.yaml:ro" in edge["volumes"]
    assert f"edge-files:{render_manifests.EDGE_FILES_DIR}:ro" in edge["volumes"]
    assert f"certs:{render_manifests.CERTS_DIR}:ro" in edge["volumes"]
    bootstrap = (ROOT / "deploy" / "compose" / "envoy.yaml").read_text()
    assert bootstrap.endswith(render_manifests.compose_edge_bootstrap())
    parsed = yaml.safe_load(bootstrap)
    clusters = {c["name"]: c for c in parsed["static_resources"]["clusters"]}
    for service in SERVICE_NAMES:
        address = clusters[service]["load_assignment"]["endpoints"][0]["lb_endpoints"][0][
            "endpoint"
        ]["address"]["socket_address"]
        assert address == {"address": service, "port_value": PORTS[service]}
    assert edge["image"] == render_manifests.ENVOY_IMAGE


def test_prometheus_scrapes_every_service_the_edge_and_redis() -> None:
    config = yaml.safe_load(
        (ROOT / "deploy" / "observability" / "prometheus" / "prometheus.yml").read_text()
    )
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    targets = jobs[render_manifests.SERVICES_JOB]["static_configs"][0]["targets"]
    assert set(targets) == {f"{name}:{render_manifests.METRICS_PORT}" for name in SERVICE_NAMES}
    edge = jobs[render_manifests.EDGE_JOB]
    assert edge["metrics_path"] == "/stats/prometheus"
    assert edge["static_configs"][0]["targets"] == [f"edge:{render_manifests.EDGE_STATS_PORT}"]
    assert jobs[render_manifests.REDIS_JOB]["static_configs"][0]["targets"] == [
        "redis-exporter:9121"
    ]
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yaml"]
    mounts = SERVICES["prometheus"]["volumes"]
    assert "./deploy/observability/prometheus/rules:/etc/prometheus/rules:ro" in mounts


def test_redis_exporter_watches_event_and_dead_letter_streams() -> None:
    settings = Settings.model_construct()
    streams = SERVICES["redis-exporter"]["environment"]["REDIS_EXPORTER_CHECK_STREAMS"]
    assert streams.split(",") == [
        f"{settings.key_prefix}events.*",
        f"{settings.key_prefix}dead.*",
    ]


def test_grafana_provisions_the_generated_dashboards() -> None:
    grafana = SERVICES["grafana"]
    provisioning = ROOT / "deploy" / "observability" / "grafana" / "provisioning"
    provider = yaml.safe_load((provisioning / "dashboards" / "gatehouse.yaml").read_text())
    path = provider["providers"][0]["options"]["path"]
    assert f"./deploy/observability/grafana/dashboards:{path}:ro" in grafana["volumes"]
    datasource = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())
    assert datasource["datasources"][0]["uid"] == "prometheus"
