"""Channels and the addresses that fit them: email, E.164 phone numbers, webhook URLs, push
tokens. Every check here is pure; the allow-list of webhook hosts comes from the settings."""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Collection
from dataclasses import dataclass
from urllib.parse import urlsplit


class Channel(enum.StrEnum):
    EMAIL = "EMAIL"
    SMS = "SMS"
    WHATSAPP = "WHATSAPP"
    PUSH = "PUSH"
    CHAT = "CHAT"
    WEBHOOK = "WEBHOOK"


class AddressKind(enum.StrEnum):
    EMAIL = "email_address"
    PHONE = "phone_number"
    WEBHOOK_URL = "webhook_url"
    PUSH_TOKEN = "push_token"  # noqa: S105 - a field name, not a secret


# Which address kind each channel takes (notifications.proto, `Address`).
CHANNEL_ADDRESS: dict[Channel, AddressKind] = {
    Channel.EMAIL: AddressKind.EMAIL,
    Channel.SMS: AddressKind.PHONE,
    Channel.WHATSAPP: AddressKind.PHONE,
    Channel.PUSH: AddressKind.PUSH_TOKEN,
    Channel.CHAT: AddressKind.WEBHOOK_URL,
    Channel.WEBHOOK: AddressKind.WEBHOOK_URL,
}
# Channels whose messages have a subject or title at all.
SUBJECT_CHANNELS = frozenset({Channel.EMAIL, Channel.PUSH, Channel.CHAT, Channel.WEBHOOK})
TEXT_ONLY_CHANNELS = frozenset({Channel.SMS, Channel.WHATSAPP})
MAX_EMAIL_LENGTH = 254
MAX_URL_LENGTH = 2048
MAX_PUSH_TOKEN_LENGTH = 4096

_LOCAL_PART = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_DOMAIN_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
# E.164: a plus, a country code not starting with 0, at most 15 digits in all.
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
_PUSH_TOKEN = re.compile(r"[A-Za-z0-9:_\-.]{8,4096}")


class AddressError(ValueError):
    """An address that does not pass; `reason` is the contract's ErrorInfo reason."""

    def __init__(self, description: str, reason: str = "INVALID_ADDRESS") -> None:
        super().__init__(description)
        self.description = description
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Address:
    """One destination. `value` is normalised (emails lower-cased in the domain part)."""

    kind: AddressKind
    value: str

    @property
    def key(self) -> str:
        """What the per-recipient rate limit counts on: kind and value."""
        return f"{self.kind.value}:{self.value}"

    def redacted(self) -> str:
        """For logs: enough to tell messages apart, not enough to contact anyone."""
        if self.kind is AddressKind.EMAIL:
            local, _, domain = self.value.rpartition("@")
            return f"{local[:1]}***@{domain}"
        if self.kind is AddressKind.PHONE:
            return f"{self.value[:3]}***{self.value[-2:]}"
        if self.kind is AddressKind.WEBHOOK_URL:
            return urlsplit(self.value).netloc
        return f"{self.value[:4]}***"


def check_email(raw: str) -> str:
    email = raw.strip()
    if not email:
        raise AddressError("is required")
    if len(email) > MAX_EMAIL_LENGTH:
        raise AddressError(f"must be at most {MAX_EMAIL_LENGTH} characters")
    local, at, domain = email.rpartition("@")
    if not at or not local or not domain:
        raise AddressError("must be an email address like name@example.com")
    if len(local) > 64 or _LOCAL_PART.fullmatch(local) is None:
        raise AddressError("has an invalid part before the @")
    labels = domain.split(".")
    if len(labels) < 2 or not all(_DOMAIN_LABEL.fullmatch(label) for label in labels):
        raise AddressError("has an invalid domain")
    if labels[-1].isdigit():
        raise AddressError("has an invalid domain")
    # The local part may be case-sensitive (RFC 5321); the domain is not.
    return f"{local}@{domain.lower()}"


def check_phone(raw: str) -> str:
    phone = raw.strip()
    if _E164.fullmatch(phone) is None:
        raise AddressError("must be a phone number in E.164 form, e.g. +34600123456")
    return phone


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_webhook_url(
    raw: str, *, allowed_hosts: Collection[str], allow_loopback_http: bool
) -> str:
    """An https URL whose host is on the allow-list (`*.example.com` entries match
    subdomains); plain http only for loopback when `allow_loopback_http`."""
    url = raw.strip()
    if not url or len(url) > MAX_URL_LENGTH:
        raise AddressError(f"must be an https URL of at most {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        _ = parts.port  # raises for a port out of range
    except ValueError:
        raise AddressError("must be an https URL") from None
    if not host or parts.username or parts.password:
        raise AddressError("must be an https URL with a host and no credentials")
    if parts.scheme == "http":
        if not (allow_loopback_http and _is_loopback(host)):
            raise AddressError("must be an https URL (http only for loopback in development)")
    elif parts.scheme != "https":
        raise AddressError("must be an https URL")
    if not host_allowed(host, allowed_hosts):
        raise AddressError(
            f"host {host!r} is not on the webhook allow-list", reason="ADDRESS_NOT_ALLOWED"
        )
    return url


def host_allowed(host: str, allowed_hosts: Collection[str]) -> bool:
    for raw in allowed_hosts:
        entry = raw.strip().lower()
        if not entry:
            continue
        if entry in ("*", host):
            return True
        if entry.startswith("*.") and host.endswith(entry[1:]):
            return True
    return False


def check_push_token(raw: str) -> str:
    token = raw.strip()
    if _PUSH_TOKEN.fullmatch(token) is None:
        raise AddressError("must be a push token (8 or more letters, digits, ':', '_', '-', '.')")
    return token


@dataclass(frozen=True, slots=True)
class AddressRules:
    """What the deployment allows for webhook URLs."""

    webhook_hosts: frozenset[str] = frozenset()
    allow_loopback_http: bool = False


def make_address(kind: AddressKind, raw: str, rules: AddressRules) -> Address:
    """A checked, normalised address, or `AddressError`."""
    if kind is AddressKind.EMAIL:
        return Address(kind, check_email(raw))
    if kind is AddressKind.PHONE:
        return Address(kind, check_phone(raw))
    if kind is AddressKind.WEBHOOK_URL:
        return Address(
            kind,
            check_webhook_url(
                raw,
                allowed_hosts=rules.webhook_hosts,
                allow_loopback_http=rules.allow_loopback_http,
            ),
        )
    return Address(kind, check_push_token(raw))


def check_fits(address: Address, channel: Channel) -> None:
    expected = CHANNEL_ADDRESS[channel]
    if address.kind is not expected:
        raise AddressError(
            f"a {channel.value} message needs a {expected.value}, not a {address.kind.value}",
            reason="ADDRESS_CHANNEL_MISMATCH",
        )
