"""The edge bootstraps of the deployments, run through the real Envoy: the Kubernetes
ConfigMap's and compose's pass `envoy --mode validate` as written (only the mount paths moved
to this machine), and the stats listener serves every Envoy metric the alert rules and
dashboards name."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import yaml

from deploy.docker import edge_files as edge_files_command
from gatehouse.edge.config import STATS_LISTENER, EdgeFiles, build_config, render
from gatehouse.edge.process import EDGE_DESCRIPTORS, envoy_binary
from gatehouse.runtime.config import SERVICE_NAMES, Settings
from scripts import render_manifests
from tests.deploy.support import ENVOY_METRICS, find, rendered

READY_TIMEOUT = 30.0


@pytest.fixture(scope="module")
def edge_files(tmp_path_factory: pytest.TempPathFactory, certs_dir: Path) -> tuple[Path, Path]:
    """This machine's stand-ins for the mounts: certificates and the edge files."""
    files = tmp_path_factory.mktemp("edge-files")
    edge_files_command.write_edge_files(files)
    return certs_dir, files


def localised(bootstrap: str, certs: Path, files: Path) -> str:
    return bootstrap.replace(render_manifests.EDGE_FILES_DIR, str(files)).replace(
        render_manifests.CERTS_DIR, str(certs)
    )


async def envoy_validate(config: Path) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        str(envoy_binary(Settings.model_construct())),
        "--mode",
        "validate",
        "-c",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, output.decode()


@pytest.mark.parametrize("where", ["kubernetes", "compose"])
async def test_deployed_bootstrap_validates(
    where: str, edge_files: tuple[Path, Path], tmp_path: Path
) -> None:
    if where == "kubernetes":
        bootstrap = find(rendered("prod"), "ConfigMap", "edge-envoy")["data"]["envoy.yaml"]
    else:
        bootstrap = render_manifests.COMPOSE_ENVOY.read_text()
    certs, files = edge_files
    config = tmp_path / "envoy.yaml"
    config.write_text(localised(bootstrap, certs, files))
    # Every file the bootstrap names is one of the mounts.
    for path in re.findall(r"filename: (\S+)", bootstrap) + re.findall(
        r"proto_descriptor: (\S+)", bootstrap
    ):
        assert path.startswith((render_manifests.CERTS_DIR, render_manifests.EDGE_FILES_DIR))
    code, output = await envoy_validate(config)
    assert code == 0, output[-3000:]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def running_envoy(config: Path, log: Path) -> AsyncIterator[None]:
    with log.open("wb") as output:
        process = await asyncio.create_subprocess_exec(
            str(envoy_binary(Settings.model_construct())),
            "-c",
            str(config),
            "--disable-hot-restart",
            "--base-id",
            str(free_port()),
            stdout=output,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            yield
        finally:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()


async def test_stats_listener_serves_the_metrics_rules_and_dashboards_use(
    edge_files: tuple[Path, Path], tmp_path: Path
) -> None:
    certs, files = edge_files
    edge_port, admin_port, stats_port = free_port(), free_port(), free_port()
    settings = Settings.model_construct(
        edge_host="127.0.0.1", edge_port=edge_port, edge_admin_port=admin_port
    )
    edge = EdgeFiles(
        certificates=certs,
        descriptor_set=files / EDGE_DESCRIPTORS,
        openapi=files / "openapi.json",
    )
    # The deployments' shape: services by host name, the stats listener.
    config = build_config(
        settings,
        edge,
        upstream_hosts={name: f"{name}.invalid" for name in SERVICE_NAMES},
        stats_port=stats_port,
    )
    path = tmp_path / "envoy.yaml"
    path.write_text(render(config))
    context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    async with (
        running_envoy(path, tmp_path / "envoy.log"),
        httpx.AsyncClient(verify=context, timeout=5) as client,
    ):
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            try:
                ready = await client.get(f"http://127.0.0.1:{admin_port}/ready")
                if ready.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "envoy.log").read_text()[-3000:]
            await asyncio.sleep(0.1)
        # One request through the public listener, so its histograms have a sample.
        health = await client.get(f"https://localhost:{edge_port}/healthz")
        assert health.status_code == 200
        stats = await client.get(f"http://127.0.0.1:{stats_port}/stats/prometheus")
        assert stats.status_code == 200
        # Only the stats are published there: the admin interface is not.
        for forbidden in ("/config_dump", "/clusters", "/quitquitquit"):
            answer = await client.get(f"http://127.0.0.1:{stats_port}{forbidden}")
            assert answer.status_code == 404
    names = {
        match.group(1)
        for match in re.finditer(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", stats.text, re.MULTILINE)
    }
    assert not ENVOY_METRICS - names
    # The label values the rules select on exist too.
    assert 'envoy_http_conn_manager_prefix="edge"' in stats.text
    assert 'envoy_cluster_name="auth"' in stats.text
    # The stats listener's own traffic is labelled apart from the edge's.
    parsed = yaml.safe_load(path.read_text())
    listeners = [listener["name"] for listener in parsed["static_resources"]["listeners"]]
    assert STATS_LISTENER in listeners
