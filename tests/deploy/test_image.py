"""The container image, checked without a Docker engine: the Dockerfile parsed (final stage
non-root, no build tools, gRPC healthcheck), the build context it sees (.dockerignore), the
entrypoint's behaviour, and the commands the image adds (deploy/docker/)."""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import stat
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509

from deploy.docker import dev_certs, edge_files
from gatehouse.edge.descriptors import DescriptorSet, descriptor_set_path, openapi_path
from gatehouse.mesh.catalog import certificate_identities
from gatehouse.runtime.config import SERVICE_NAMES, Settings
from gatehouse.runtime.tls import spiffe_id

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
ENTRYPOINT = ROOT / "deploy" / "docker" / "entrypoint.sh"


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, with continuation lines joined and comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in lines:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            parts = args.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(base=parts[0], name=name))
        elif not stages:
            assert keyword == "ARG", f"only ARG may precede FROM: {line}"
            key, _, value = args.partition("=")
            global_args[key] = value
        else:
            stages[-1].instructions.append((keyword, args))
    return global_args, stages


GLOBAL_ARGS, STAGES = parse_dockerfile(DOCKERFILE.read_text())
FINAL = STAGES[-1]


def test_multi_stage_with_a_slim_python_final_stage() -> None:
    assert len(STAGES) >= 2
    assert STAGES[0].name == "build"
    assert FINAL.base == "${PYTHON_IMAGE}" == STAGES[0].base
    assert re.fullmatch(r"python:3\.1[1-9]-slim-\w+", GLOBAL_ARGS["PYTHON_IMAGE"])


def test_final_stage_runs_as_a_numeric_non_root_user() -> None:
    users = FINAL.all("USER")
    assert users, "the final stage sets no USER"
    user, _, group = users[-1].partition(":")
    # Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
    assert user.isdigit()
    assert int(user) != 0
    assert group.isdigit()
    assert int(group) != 0
    # Nothing after USER switches back.
    keywords = [kw for kw, _ in FINAL.instructions]
    assert "RUN" not in keywords[keywords.index("USER") :]


def test_final_stage_installs_nothing_and_copies_only_the_built_virtualenv() -> None:
    for run in FINAL.all("RUN"):
        # The one RUN adds the user, removes the base image's installer and makes the
        # mount points (`install -d`): no package manager, no compiler.
        assert not re.search(r"\b(pip|uv|poetry) install\b", run), run
        assert not re.search(r"\b(gcc|cc|make|build-essential|apt-get|apt|apk|dnf|yum)\b", run)
    for copy in FINAL.all("COPY"):
        assert copy.startswith("--from=build "), copy
    build_runs = " ".join(STAGES[0].all("RUN"))
    # The build stage removes its installers from the virtualenv the final stage copies.
    assert "pip uninstall --yes pip setuptools wheel" in build_runs
    assert "compileall" in build_runs


def test_healthcheck_asks_grpc_health_of_the_containers_service() -> None:
    (healthcheck,) = FINAL.all("HEALTHCHECK")
    assert "gatehouse health" in healthcheck
    assert '"$GATEHOUSE_SERVICE"' in healthcheck.replace('\\"', '"')
    # The server certificate names 127.0.0.1, never the 0.0.0.0 the service binds.
    assert "GATEHOUSE_HOST=127.0.0.1" in healthcheck


def test_environment_names_only_real_settings() -> None:
    env = " ".join(FINAL.all("ENV"))
    variables = dict(re.findall(r"(GATEHOUSE_[A-Z_]+)=(\S+)", env))
    fields = {f"GATEHOUSE_{name.upper()}" for name in Settings.model_fields}
    assert set(variables) - fields == {"GATEHOUSE_SERVICE"}
    assert variables["GATEHOUSE_MIGRATE_ON_START"] == "false"
    assert variables["GATEHOUSE_HOST"] == "0.0.0.0"
    assert variables["GATEHOUSE_SERVICE"] == "${SERVICE}"
    assert "ARG SERVICE=auth" in f"ARG {FINAL.all('ARG')[0]}"


def test_exposed_ports_are_the_services_and_metrics() -> None:
    (exposed,) = FINAL.all("EXPOSE")
    defaults = Settings.model_construct()
    assert {int(port) for port in exposed.split()} == {
        *(defaults.port_of(name) for name in SERVICE_NAMES),
        defaults.metrics_port,
    }


def dockerignore_includes(relative: str) -> bool:
    """Docker's rule: the last pattern that matches decides; `!` re-includes."""
    included = True
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.removeprefix("!").rstrip("/")
        candidates = [relative, *(str(p) for p in Path(relative).parents if str(p) != ".")]
        if any(
            fnmatch.fnmatch(candidate, pattern) or fnmatch.fnmatch(candidate, f"**/{pattern}")
            for candidate in candidates
        ):
            included = negate
    return included


def test_build_context_holds_what_is_copied_and_no_local_state() -> None:
    sources = []
    for copy in STAGES[0].all("COPY"):
        parts = [part for part in shlex.split(copy) if not part.startswith("--")]
        sources.extend(parts[:-1])
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), source
        assert dockerignore_includes(source.rstrip("/")), source
    for secret_or_noise in (
        ".gatehouse/certs/ca-key.pem",
        ".venv/bin/python",
        ".git/HEAD",
        "tests/conftest.py",
        ".env",
    ):
        assert not dockerignore_includes(secret_or_noise), secret_or_noise
    assert not dockerignore_includes("services/gatehouse/auth/__pycache__/app.cpython-311.pyc")


def test_image_commands_are_copied_executable_with_their_names() -> None:
    copies = " ".join(STAGES[0].all("COPY"))
    for script, command in (
        ("entrypoint.sh", "gatehouse-entrypoint"),
        ("edge_files.py", "gatehouse-edge-files"),
        ("dev_certs.py", "gatehouse-dev-certs"),
    ):
        assert f"--chmod=0755 deploy/docker/{script} /opt/gatehouse/bin/{command}" in copies
    assert FINAL.all("ENTRYPOINT") == ['["/opt/gatehouse/bin/gatehouse-entrypoint"]']
    for program in (ROOT / "deploy" / "docker").glob("*.py"):
        assert program.read_text().startswith("#!/opt/gatehouse/bin/python\n"), program


@pytest.fixture
def fake_gatehouse(tmp_path: Path) -> Path:
    """A `gatehouse` on PATH that prints the arguments it was given, to observe the
    entrypoint's exec."""
    command = tmp_path / "gatehouse"
    command.write_text('#!/bin/sh\nprintf "%s|" "$@"\n')
    command.chmod(command.stat().st_mode | stat.S_IEXEC)
    return tmp_path


def run_entrypoint(
    bin_dir: Path, *args: str, service: str | None
) -> subprocess.CompletedProcess[str]:
    env = {"PATH": f"{bin_dir}{os.pathsep}/usr/bin:/bin"}
    if service is not None:
        env["GATEHOUSE_SERVICE"] = service
    return subprocess.run(
        ["/bin/sh", str(ENTRYPOINT), *args], env=env, capture_output=True, text=True, check=False
    )


def test_entrypoint_serves_the_configured_service(fake_gatehouse: Path) -> None:
    result = run_entrypoint(fake_gatehouse, service="payments")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "serve|payments|"


def test_entrypoint_passes_any_other_command_through(fake_gatehouse: Path) -> None:
    result = run_entrypoint(fake_gatehouse, "health", "auth", "--timeout", "3", service="auth")
    assert result.stdout == "health|auth|--timeout|3|"


def test_entrypoint_without_a_service_says_what_to_set(fake_gatehouse: Path) -> None:
    result = run_entrypoint(fake_gatehouse, service=None)
    assert result.returncode != 0
    assert "GATEHOUSE_SERVICE" in result.stderr
    assert result.stdout == ""


def test_edge_files_are_the_edge_descriptor_copy_and_the_openapi(tmp_path: Path) -> None:
    assert edge_files.main([str(tmp_path / "files")]) == 0
    descriptors = tmp_path / "files" / "gatehouse-edge.binpb"
    assert descriptors.read_bytes() == DescriptorSet.read(descriptor_set_path()).for_edge()
    assert (tmp_path / "files" / "openapi.json").read_bytes() == openapi_path().read_bytes()


def test_dev_certs_name_the_compose_host_and_keep_existing_files(tmp_path: Path) -> None:
    issued = dev_certs.issue_all(tmp_path)
    assert set(issued) == set(certificate_identities())
    for name, paths in issued.items():
        certificate = x509.load_pem_x509_certificate(paths.certificate.read_bytes())
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert spiffe_id(name) in names.get_values_for_type(x509.UniformResourceIdentifier)
        expected_host = "edge" if name == "envoy" else name
        assert expected_host in names.get_values_for_type(x509.DNSName)
        assert "localhost" in names.get_values_for_type(x509.DNSName)
    before = (tmp_path / "auth.pem").read_bytes()
    dev_certs.issue_all(tmp_path)
    assert (tmp_path / "auth.pem").read_bytes() == before
