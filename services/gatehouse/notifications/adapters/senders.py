"""Provider adapters: email over SMTP (aiosmtplib), HMAC-signed webhooks over HTTPS (httpx),
and a file outbox that writes the same webhook documents to a directory.

Every adapter classifies its failures instead of raising them (notifications.proto, delivery
rules): SMTP 4xx and connection trouble, webhook timeouts and HTTP 408/429/5xx are transient;
SMTP 5xx and any other HTTP status are permanent. Retries never duplicate a message at the
receiver: an email keeps one Message-ID per notification, a webhook one Idempotency-Key.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path

import aiosmtplib
import httpx
from google.protobuf import json_format, timestamp_pb2

from gatehouse.notifications.domain.addresses import Channel
from gatehouse.notifications.domain.notifications import Outcome
from gatehouse.notifications.handlers.ports import OutgoingMessage, Sender, SendResult
from gatehouse.notifications.v1 import notifications_pb2

log = logging.getLogger("gatehouse.notifications.senders")

_MAX_RESPONSE = 1024

CHANNEL_TO_PROTO = {
    Channel.EMAIL: notifications_pb2.CHANNEL_EMAIL,
    Channel.SMS: notifications_pb2.CHANNEL_SMS,
    Channel.WHATSAPP: notifications_pb2.CHANNEL_WHATSAPP,
    Channel.PUSH: notifications_pb2.CHANNEL_PUSH,
    Channel.CHAT: notifications_pb2.CHANNEL_CHAT,
    Channel.WEBHOOK: notifications_pb2.CHANNEL_WEBHOOK,
}
_CATEGORY_TO_PROTO = {
    "TRANSACTIONAL": notifications_pb2.CATEGORY_TRANSACTIONAL,
    "ALERT": notifications_pb2.CATEGORY_ALERT,
    "SECURITY": notifications_pb2.CATEGORY_SECURITY,
    "EMERGENCY": notifications_pb2.CATEGORY_EMERGENCY,
    "MARKETING": notifications_pb2.CATEGORY_MARKETING,
}


def _transient(provider: str, code: str, message: str, response: str = "") -> SendResult:
    return SendResult(Outcome.TRANSIENT_FAILURE, provider, response, "", code, message)


def _permanent(provider: str, code: str, message: str, response: str = "") -> SendResult:
    return SendResult(Outcome.PERMANENT_FAILURE, provider, response, "", code, message)


# --- email -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SmtpOptions:
    host: str = "127.0.0.1"
    port: int = 2525
    # "none", "starttls" (upgrade after connecting) or "tls" (implicit TLS, port 465).
    security: str = "none"
    username: str = ""
    password: str = field(default="", repr=False)
    sender: str = "Gatehouse <no-reply@gatehouse.local>"
    timeout: timedelta = timedelta(seconds=10)
    message_id_domain: str = "gatehouse.local"
    validate_certs: bool = True
    ca_file: str = ""


def message_id(notification_id: str, domain: str) -> str:
    """One Message-ID per notification, the same on every attempt (receivers dedupe on it)."""
    return f"<{notification_id}@{domain}>"


def build_email(message: OutgoingMessage, options: SmtpOptions) -> EmailMessage:
    n = message.notification
    assert n.address is not None
    email = EmailMessage()
    email["From"] = options.sender
    email["To"] = n.address.value
    email["Subject"] = message.subject
    email["Message-ID"] = message_id(n.id, options.message_id_domain)
    email["Date"] = formatdate(n.create_time.timestamp(), usegmt=True)
    email["X-Gatehouse-Notification"] = n.name
    email["X-Gatehouse-Category"] = n.category.value
    if n.category.value in ("SECURITY", "EMERGENCY") or int(n.priority) >= 3:
        email["X-Priority"] = "1"
    email.set_content(message.text_body)
    if message.html_body:
        email.add_alternative(message.html_body, subtype="html")
    return email


class SmtpSender:
    """Email over SMTP; one connection per message (simple, and what relays expect)."""

    def __init__(self, options: SmtpOptions) -> None:
        self._options = options

    @property
    def name(self) -> str:
        return "smtp"

    def _tls_context(self) -> ssl.SSLContext | None:
        if self._options.security == "none":
            return None
        context = ssl.create_default_context(cafile=self._options.ca_file or None)
        if not self._options.validate_certs:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    async def send(self, message: OutgoingMessage) -> SendResult:
        options = self._options
        n = message.notification
        if n.address is None:
            return _permanent(self.name, "INVALID_ADDRESS", "the notification has no address")
        email = build_email(message, options)
        security = options.security
        try:
            _, reply = await aiosmtplib.send(
                email,
                hostname=options.host,
                port=options.port,
                username=options.username or None,
                password=options.password or None,
                use_tls=security == "tls",
                start_tls=security == "starttls",
                tls_context=self._tls_context(),
                validate_certs=options.validate_certs,
                timeout=options.timeout.total_seconds(),
            )
        except aiosmtplib.SMTPRecipientsRefused as error:
            refusal = error.recipients[0] if error.recipients else None
            code = refusal.code if refusal is not None else 550
            text = refusal.message if refusal is not None else "recipient refused"
            return _classify_reply(self.name, code, text)
        except aiosmtplib.SMTPAuthenticationError as error:
            # Our credentials, not the message: retrying once they are fixed will work.
            return _transient(
                self.name,
                "SMTP_AUTH_FAILED",
                "the SMTP server refused our credentials",
                f"{error.code} {error.message}"[:_MAX_RESPONSE],
            )
        except aiosmtplib.SMTPResponseException as error:
            return _classify_reply(self.name, error.code, error.message)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as error:
            return _transient(
                self.name,
                "SMTP_UNREACHABLE",
                f"the SMTP server could not be reached: {type(error).__name__}",
            )
        return SendResult(
            Outcome.SUCCEEDED,
            self.name,
            provider_response=f"250 {reply}"[:_MAX_RESPONSE],
            provider_message_id=email["Message-ID"],
        )


def _classify_reply(provider: str, code: int, text: str) -> SendResult:
    response = f"{code} {text}"[:_MAX_RESPONSE]
    if 400 <= code < 500:
        return _transient(
            provider, "SMTP_TEMPORARY_FAILURE", "the SMTP server deferred the message", response
        )
    return _permanent(provider, "SMTP_REJECTED", "the SMTP server rejected the message", response)


# --- webhooks --------------------------------------------------------------------------------


def _stamp(value: object) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)  # type: ignore[arg-type]
    return stamp


def webhook_payload(message: OutgoingMessage) -> bytes:
    """The documented JSON body (`WebhookPayload`, proto3 JSON mapping, lowerCamelCase)."""
    n = message.notification
    address = notifications_pb2.Address()
    if n.address is not None:
        setattr(address, n.address.kind.value, n.address.value)
    payload = notifications_pb2.WebhookPayload(
        notification=n.name,
        channel=CHANNEL_TO_PROTO[n.channel],
        address=address,
        subject=message.subject,
        text_body=message.text_body,
        priority=int(n.priority),  # type: ignore[arg-type]
        category=_CATEGORY_TO_PROTO[n.category.value],
        attempt_number=message.attempt_number,
        create_time=_stamp(n.create_time),
        related_resource=n.related_resource,
    )
    document = json_format.MessageToDict(payload)
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """`v1=` + hex HMAC-SHA256 over `<timestamp>.<raw body>`."""
    mac = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"v1={mac.hexdigest()}"


def webhook_headers(
    message: OutgoingMessage, body: bytes, secret: bytes, now: Callable[[], float]
) -> dict[str, str]:
    timestamp = int(now())
    return {
        "Content-Type": "application/json",
        "Idempotency-Key": message.notification.id,
        "X-Gatehouse-Timestamp": str(timestamp),
        "X-Gatehouse-Signature": sign(secret, timestamp, body),
        "User-Agent": "gatehouse-notifications/1",
    }


@dataclass(frozen=True, slots=True)
class WebhookTarget:
    """Where one channel's messages go: a fixed gateway URL, or (empty) the recipient's own
    URL (CHAT and WEBHOOK), and the shared secret that signs them."""

    url: str
    secret: bytes = field(repr=False)


class WebhookSender:
    """HTTPS POST of the WebhookPayload, signed; never follows redirects (the allow-list is
    about the first host, and a redirect could point anywhere)."""

    def __init__(
        self,
        channel: Channel,
        target: WebhookTarget,
        *,
        timeout: timedelta = timedelta(seconds=10),
        client: httpx.AsyncClient | None = None,
        verify: bool | str = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._channel = channel
        self._target = target
        self._timeout = timeout
        self._client = client
        self._verify = verify
        self._clock = clock

    @property
    def name(self) -> str:
        return f"webhook:{self._channel.value.lower()}"

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self._timeout.total_seconds(),
                follow_redirects=False,
                verify=self._verify,
                trust_env=False,
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def send(self, message: OutgoingMessage) -> SendResult:
        n = message.notification
        url = self._target.url or (n.address.value if n.address is not None else "")
        if not url:
            return _permanent(self.name, "INVALID_ADDRESS", "no webhook URL to deliver to")
        body = webhook_payload(message)
        headers = webhook_headers(message, body, self._target.secret, self._clock)
        try:
            response = await self._http().post(url, content=body, headers=headers)
        except httpx.TimeoutException:
            return _transient(self.name, "WEBHOOK_TIMEOUT", "the webhook did not answer in time")
        except httpx.HTTPError as error:
            return _transient(
                self.name,
                "WEBHOOK_UNREACHABLE",
                f"the webhook could not be reached: {type(error).__name__}",
            )
        text = response.text[:_MAX_RESPONSE]
        summary = f"HTTP {response.status_code} {text}".strip()[:_MAX_RESPONSE]
        status = response.status_code
        if 200 <= status < 300:
            return SendResult(
                Outcome.SUCCEEDED,
                self.name,
                provider_response=summary,
                provider_message_id=_receipt_id(response.content) or n.id,
            )
        if status in (408, 429) or status >= 500:
            return _transient(
                self.name, "WEBHOOK_HTTP_ERROR", f"the webhook answered {status}", summary
            )
        return _permanent(
            self.name, "WEBHOOK_HTTP_ERROR", f"the webhook refused the message ({status})", summary
        )


def _receipt_id(content: bytes) -> str:
    if not content:
        return ""
    try:
        receipt = json_format.Parse(
            content, notifications_pb2.WebhookReceipt(), ignore_unknown_fields=True
        )
    except (json_format.ParseError, UnicodeDecodeError):
        return ""
    return receipt.message_id[:255]


class FileOutboxSender:
    """Writes each webhook document (body and headers) to `<directory>/<notification>.json`.

    For development without a gateway: a developer reads what would have been posted. A
    retry overwrites the same file, so nothing is written twice.
    """

    def __init__(self, channel: Channel, directory: Path, secret: bytes = b"") -> None:
        self._channel = channel
        self._directory = directory
        self._secret = secret

    @property
    def name(self) -> str:
        return f"file:{self._channel.value.lower()}"

    async def send(self, message: OutgoingMessage) -> SendResult:
        body = webhook_payload(message)
        headers = webhook_headers(message, body, self._secret, time.time)
        document = {"headers": headers, "body": json.loads(body)}
        path = self._directory / f"{message.notification.id}.json"
        try:
            await asyncio.to_thread(_write_atomically, path, document)
        except OSError as error:
            return _transient(
                self.name, "OUTBOX_WRITE_FAILED", f"could not write the outbox: {error.strerror}"
            )
        return SendResult(
            Outcome.SUCCEEDED,
            self.name,
            provider_response=f"written {path.name}",
            provider_message_id=path.name,
        )


def _write_atomically(path: Path, document: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(document, indent=2, sort_keys=True))
    os.replace(temporary, path)


class UnconfiguredSender:
    """A channel without a provider: transient, so messages wait (and dead-letter) instead of
    being lost while an operator configures one."""

    def __init__(self, channel: Channel) -> None:
        self._channel = channel

    @property
    def name(self) -> str:
        return f"none:{self._channel.value.lower()}"

    async def send(self, message: OutgoingMessage) -> SendResult:
        return _transient(
            self.name,
            "PROVIDER_NOT_CONFIGURED",
            f"no provider is configured for {self._channel.value}",
        )


class ChannelSenders:
    def __init__(self, senders: Mapping[Channel, Sender]) -> None:
        self._senders = dict(senders)

    def for_channel(self, channel: Channel) -> Sender:
        return self._senders.get(channel) or UnconfiguredSender(channel)

    async def aclose(self) -> None:
        for sender in self._senders.values():
            close = getattr(sender, "aclose", None)
            if close is not None:
                await close()
