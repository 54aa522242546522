"""A catch-all SMTP server for development and tests (aiosmtpd), run in the caller's loop.

Every message it accepts is kept in memory (for tests) and, with a directory, written there
as `<time>-<n>.eml` (for `gatehouse mail`, in another process). It accepts any sender and
recipient; nothing leaves the machine. Tests can make it answer a given SMTP reply instead
(`reply_with`) to exercise 4xx/5xx handling.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import itertools
import logging
import os
import ssl
import time
import warnings
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

log = logging.getLogger("gatehouse.notifications.sink")


@dataclass(frozen=True, slots=True)
class ReceivedMail:
    sender: str
    recipients: tuple[str, ...]
    raw: bytes
    message: EmailMessage = field(repr=False)

    @property
    def subject(self) -> str:
        return str(self.message.get("Subject", ""))

    @property
    def message_id(self) -> str:
        return str(self.message.get("Message-ID", ""))

    def part(self, content_type: str) -> str:
        body = self.message.get_body(preferencelist=(content_type.split("/")[1],))
        if body is None:
            return ""
        content = body.get_content()
        return str(content)


def parse_mail(raw: bytes, sender: str = "", recipients: tuple[str, ...] = ()) -> ReceivedMail:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return ReceivedMail(sender, recipients, raw, message)


class _Handler:
    def __init__(self, sink: MailSink) -> None:
        self._sink = sink

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        reply = self._sink.reply
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        raw = envelope.original_content or envelope.content or b""
        if isinstance(raw, str):
            raw = raw.encode()
        mail = parse_mail(
            raw, str(envelope.mail_from or ""), tuple(str(r) for r in envelope.rcpt_tos)
        )
        queued = await self._sink.keep(mail)
        return f"250 OK queued as {queued}"


class MailSink:
    """`start()` listens on host:port (0 picks a free port); `stop()` closes.

    For tests of secured relays: `tls_context` offers STARTTLS (or, with `implicit_tls`,
    TLS from the first byte) and `credentials` requires AUTH with that login and password
    (over TLS only).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        directory: Path | None = None,
        *,
        tls_context: ssl.SSLContext | None = None,
        implicit_tls: bool = False,
        credentials: tuple[str, str] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.directory = directory
        self.tls_context = tls_context
        self.implicit_tls = implicit_tls
        self.credentials = credentials
        self.logins: list[str] = []
        self.received: list[ReceivedMail] = []
        self.reply: str | None = None
        self._server: asyncio.base_events.Server | None = None
        self._arrived = asyncio.Condition()
        self._counter = itertools.count(1)

    def reply_with(self, reply: str | None) -> None:
        """Answer every RCPT with `reply` (e.g. "451 4.3.0 try later"); None: accept."""
        self.reply = reply

    async def start(self) -> int:
        loop = asyncio.get_running_loop()

        starttls = self.tls_context is not None and not self.implicit_tls

        def factory() -> Any:
            with warnings.catch_warnings():
                # "AUTH without requiring TLS": on an implicit-TLS listener it is TLS.
                warnings.simplefilter("ignore", UserWarning)
                return self._protocol(starttls)

        self._server = await loop.create_server(
            factory,
            host=self.host,
            port=self.port,
            ssl=self.tls_context if self.implicit_tls else None,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
        log.info("mail sink listening on %s:%d", self.host, self.port)
        return self.port

    def _protocol(self, starttls: bool) -> SMTP:
        return SMTP(
            _Handler(self),
            hostname="gatehouse-sink",
            enable_SMTPUTF8=True,
            tls_context=self.tls_context if starttls else None,
            require_starttls=starttls,
            auth_required=self.credentials is not None,
            # aiosmtpd only knows STARTTLS sessions as TLS; an implicit-TLS listener is
            # encrypted from the first byte anyway.
            auth_require_tls=not self.implicit_tls,
            authenticator=self._authenticate if self.credentials is not None else None,
        )

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if not isinstance(data, LoginPassword) or self.credentials is None:
            return AuthResult(success=False, handled=False)
        login, password = data.login.decode(), data.password.decode()
        if (login, password) != self.credentials:
            return AuthResult(success=False, handled=False)
        self.logins.append(login)
        return AuthResult(success=True)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()

    async def keep(self, mail: ReceivedMail) -> str:
        queued = f"{time.time_ns()}-{next(self._counter)}"
        if self.directory is not None:
            await asyncio.to_thread(_write, self.directory / f"{queued}.eml", mail.raw)
        async with self._arrived:
            self.received.append(mail)
            self._arrived.notify_all()
        return queued

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[ReceivedMail]:
        """The messages once at least `count` arrived (TimeoutError otherwise)."""
        async with asyncio.timeout(timeout), self._arrived:
            await self._arrived.wait_for(lambda: len(self.received) >= count)
            return list(self.received)


def _write(path: Path, raw: bytes) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_bytes(raw)
    os.replace(temporary, path)


def stored_mail(directory: Path) -> list[tuple[Path, ReceivedMail]]:
    """What a sink wrote to `directory`, oldest first."""
    if not directory.is_dir():
        return []
    found = []
    for path in sorted(directory.glob("*.eml")):
        found.append((path, parse_mail(path.read_bytes())))
    return found
