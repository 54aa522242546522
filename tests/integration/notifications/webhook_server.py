"""A small HTTP/1.1 server on raw asyncio streams that records webhook deliveries.

Each request is kept (method, path, headers, body); the answer is configurable per test:
status, body, or a delay longer than the sender's timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class ReceivedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def header(self, name: str) -> str:
        return self.headers.get(name.lower(), "")

    def signature_valid(self, secret: bytes) -> bool:
        timestamp = self.header("X-Gatehouse-Timestamp")
        expected = hmac.new(secret, f"{timestamp}.".encode() + self.body, hashlib.sha256)
        return hmac.compare_digest(
            self.header("X-Gatehouse-Signature"), f"v1={expected.hexdigest()}"
        )


@dataclass
class WebhookServer:
    host: str = "127.0.0.1"
    port: int = 0
    status: int = 200
    body: bytes = b'{"messageId": "gw-1"}'
    delay: float = 0.0
    requests: list[ReceivedRequest] = field(default_factory=list)
    _server: asyncio.base_events.Server | None = None
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/hook"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[ReceivedRequest]:
        async with asyncio.timeout(timeout), self._arrived:
            await self._arrived.wait_for(lambda: len(self.requests) >= count)
            return list(self.requests)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = (await reader.readline()).decode().strip()
            if not request_line:
                return
            method, path, _ = request_line.split(" ", 2)
            headers: dict[str, str] = {}
            while True:
                line = (await reader.readline()).decode()
                if line in ("\r\n", "\n", ""):
                    break
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            async with self._arrived:
                self.requests.append(ReceivedRequest(method, path, headers, body))
                self._arrived.notify_all()
            if self.delay:
                await asyncio.sleep(self.delay)
            reason = {200: "OK", 202: "Accepted"}.get(self.status, "Status")
            writer.write(
                f"HTTP/1.1 {self.status} {reason}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(self.body)}\r\nConnection: close\r\n\r\n".encode()
                + self.body
            )
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
