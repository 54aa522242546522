"""What the monitoring use cases share: their dependencies, who is asking, idempotent replies,
page tokens and lookups that fail with the contract's reasons."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from google.protobuf.message import Message

from gatehouse.monitoring.domain.alerts import Actor
from gatehouse.monitoring.domain.buildings import Building
from gatehouse.monitoring.domain.devices import Device
from gatehouse.monitoring.handlers.ports import (
    Clock,
    FeedHeads,
    MonitoringUnitOfWork,
    Sealer,
)
from gatehouse.monitoring.settings import MonitoringSettings
from gatehouse.runtime.db import DuplicateKeyError
from gatehouse.runtime.errors import AlreadyExists, FieldViolation, InvalidArgument, NotFound
from gatehouse.runtime.idempotency import IdempotencyRecord
from gatehouse.runtime.identity import Caller

SERVICE_PATH = "gatehouse.monitoring.v1.MonitoringService"
MONITORING_SPIFFE_ID = "spiffe://gatehouse/monitoring"
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
_PAGE_TOKEN_LIFETIME = timedelta(hours=24)

M = TypeVar("M", bound=Message)


@dataclass(frozen=True)
class MonitoringDependencies:
    """Everything a handler needs besides its unit of work; built by the composition root."""

    settings: MonitoringSettings
    clock: Clock
    sealer: Sealer
    feed: FeedHeads


# --- who is asking ---------------------------------------------------------------------------


def actor_of(caller: Caller) -> Actor:
    return Actor(
        user=caller.user or "",
        service=caller.peer_spiffe_id or "",
        client_address=caller.client_address or "",
    )


def principal_of(caller: Caller) -> str:
    """Scopes idempotency records: the user, else the calling peer."""
    return caller.user or caller.peer_spiffe_id or "anonymous"


# --- idempotent replies ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IdempotencyKey:
    scope: str
    request_id: str
    fingerprint: bytes
    # Replies that carry a device token are stored sealed with the service key.
    secret: bool = False


def idempotency_key(
    method: str, caller: Caller, request: Message, *, secret: bool = False
) -> IdempotencyKey | None:
    request_id = str(getattr(request, "request_id", ""))
    if not request_id:
        return None
    body = type(request)()
    body.CopyFrom(request)
    body.ClearField("request_id")
    scope = f"{SERVICE_PATH}/{method}|{principal_of(caller)}"
    fingerprint = hashlib.sha256(
        scope.encode() + b"\0" + body.SerializeToString(deterministic=True)
    ).digest()
    return IdempotencyKey(scope, request_id, fingerprint, secret)


class LostIdempotencyRaceError(Exception):
    """A concurrent twin of this request committed first: replay its reply instead."""


async def replay(
    uow: MonitoringUnitOfWork,
    deps: MonitoringDependencies,
    key: IdempotencyKey | None,
    parse: Callable[[bytes], M],
) -> M | None:
    """The stored reply of an earlier identical request, if any (inside `uow`)."""
    if key is None:
        return None
    record = await uow.idempotency.get(key.scope, key.request_id)
    if record is None:
        return None
    now = deps.clock()
    if record.is_expired(now):
        await uow.idempotency.delete_expired(now)
        return None
    if not hmac.compare_digest(record.request_fingerprint, key.fingerprint):
        raise AlreadyExists(
            "request_id was already used for a different request", reason="REQUEST_ID_REUSED"
        )
    body = record.response
    if key.secret:
        body = deps.sealer.open("idempotent-reply", body)
    return parse(body)


async def remember(
    uow: MonitoringUnitOfWork,
    deps: MonitoringDependencies,
    key: IdempotencyKey | None,
    response: Message,
) -> None:
    if key is None:
        return
    now = deps.clock()
    body = response.SerializeToString(deterministic=True)
    if key.secret:
        body = deps.sealer.seal("idempotent-reply", body)
    try:
        await uow.idempotency.add(
            IdempotencyRecord(
                scope=key.scope,
                request_id=key.request_id,
                request_fingerprint=key.fingerprint,
                response=body,
                response_type=response.DESCRIPTOR.full_name,
                created_at=now,
                expires_at=now + deps.settings.idempotency_ttl,
            )
        )
    except DuplicateKeyError:
        raise LostIdempotencyRaceError from None


# --- page tokens -----------------------------------------------------------------------------


class PageTokens:
    """Opaque page tokens: a keyset position, MACed and bound to the filters they were made
    for (a token reused with other filters, altered or expired is INVALID_PAGE_TOKEN)."""

    def __init__(self, sealer: Sealer, kind: str) -> None:
        self._sealer = sealer
        self._kind = kind

    def make(self, position: list[str], filters: str, now: datetime) -> str:
        body = json.dumps(
            {
                "p": position,
                "f": self._digest(filters),
                "e": int((now + _PAGE_TOKEN_LIFETIME).timestamp()),
            },
            separators=(",", ":"),
        ).encode()
        encoded = base64.urlsafe_b64encode(body).decode().rstrip("=")
        return f"{encoded}.{self._sealer.digest(f'page:{self._kind}', encoded)[:32]}"

    def read(self, token: str, filters: str, now: datetime) -> list[str] | None:
        if not token:
            return None
        encoded, _, mac = token.partition(".")
        expected = self._sealer.digest(f"page:{self._kind}", encoded)[:32]
        if not hmac.compare_digest(mac, expected):
            raise invalid_page_token("is malformed")
        try:
            body = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
            position = [str(part) for part in body["p"]]
            digest, expires = str(body["f"]), int(body["e"])
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise invalid_page_token("is malformed") from None
        if digest != self._digest(filters):
            raise invalid_page_token("was made for other request parameters")
        if now.timestamp() >= expires:
            raise invalid_page_token("has expired; start from the first page")
        return position

    @staticmethod
    def _digest(filters: str) -> str:
        return hashlib.sha256(filters.encode()).hexdigest()[:16]


def invalid_page_token(problem: str) -> InvalidArgument:
    return InvalidArgument([FieldViolation("page_token", problem)], reason="INVALID_PAGE_TOKEN")


def page_size(requested: int) -> int:
    if requested <= 0:
        return DEFAULT_PAGE_SIZE
    return min(requested, MAX_PAGE_SIZE)


# --- lookups ---------------------------------------------------------------------------------


async def building_or_404(uow: MonitoringUnitOfWork, building_id: str) -> Building:
    building = await uow.buildings.get(building_id)
    if building is None:
        raise NotFound(f"buildings/{building_id}", reason="BUILDING_NOT_FOUND")
    return building


async def device_or_404(
    uow: MonitoringUnitOfWork, building_id: str, device_id: str, *, for_update: bool = False
) -> Device:
    device = await uow.devices.get(building_id, device_id, for_update=for_update)
    if device is None:
        name = f"buildings/{building_id}/devices/{device_id}"
        if await uow.buildings.get(building_id) is None:
            raise NotFound(f"buildings/{building_id}", reason="BUILDING_NOT_FOUND")
        raise NotFound(name, reason="DEVICE_NOT_FOUND")
    return device
