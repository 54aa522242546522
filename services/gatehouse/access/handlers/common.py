"""What the access use cases share: dependencies, idempotent transactions, page tokens,
lookups through monitoring, and appending to the hash-chained log with its event."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TypeVar
from zoneinfo import ZoneInfo

from google.protobuf.message import Message

from gatehouse.access import mapping
from gatehouse.access.domain import names
from gatehouse.access.domain.chain import LogEntry, sealed
from gatehouse.access.domain.lockout import LockoutPolicy
from gatehouse.access.domain.pins import PinHasher, PinPolicy, RandomBelow
from gatehouse.access.domain.schedules import load_zone
from gatehouse.access.handlers.ports import (
    AccessUnitOfWork,
    BuildingInfo,
    Clock,
    Directory,
    DirectoryUnavailableError,
    DoorCommands,
    DoorInfo,
    People,
    UnitOfWorkFactory,
)
from gatehouse.events.v1.envelope_pb2 import Event
from gatehouse.runtime.db import DuplicateKeyError
from gatehouse.runtime.errors import (
    AlreadyExists,
    FieldViolation,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from gatehouse.runtime.events import new_event
from gatehouse.runtime.idempotency import IdempotencyRecord
from gatehouse.runtime.identity import Caller
from gatehouse.runtime.ids import new_ulid
from gatehouse.runtime.kv import KeyValueStore

log = logging.getLogger("gatehouse.access")

SERVICE_PATH = "gatehouse.access.v1.AccessService"
SOURCE = "access"
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
_PAGE_TOKEN_LIFETIME = timedelta(hours=24)
# Transactions retried after losing a race (a twin request, a first chain entry).
_ATTEMPTS = 5

M = TypeVar("M", bound=Message)
T = TypeVar("T")


@dataclass(frozen=True)
class AccessDeps:
    """Everything a use case needs besides its unit of work; built by the composition root."""

    clock: Clock
    pins: PinHasher
    pin_policy: PinPolicy
    lockout: LockoutPolicy
    directory: Directory
    people: People
    secret_key: bytes
    doors: DoorCommands | None = None
    # Counts wrong invitation codes per caller (TOO_MANY_ATTEMPTS); None: not limited.
    kv: KeyValueStore | None = None
    idempotency_ttl: timedelta = timedelta(hours=24)
    command_timeout: timedelta = timedelta(seconds=10)
    max_invitation_failures: int = 10
    # SQLite: one writer at a time anyway; queueing writers here (FIFO, in the event loop)
    # instead of in SQLite's busy handler (sleep and poll) keeps the latency tail short.
    write_gate: asyncio.Lock | None = None
    new_id: Callable[[], str] = field(default=new_ulid)
    random_below: RandomBelow = field(default=secrets.randbelow)


# --- who is asking ---------------------------------------------------------------------------


def principal_of(caller: Caller) -> str:
    """Scopes idempotency records: the user, else the calling peer."""
    return caller.user or caller.peer_spiffe_id or "anonymous"


# --- idempotent transactions -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IdempotencyKey:
    scope: str
    request_id: str
    fingerprint: bytes


def idempotency_key(method: str, caller: Caller, request: Message) -> IdempotencyKey:
    request_id = str(getattr(request, "request_id", ""))
    if not request_id:
        raise InvalidArgument(
            [FieldViolation("request_id", "is required: a client-chosen UUID per request")],
            reason="INVALID_REQUEST_ID",
        )
    body = type(request)()
    body.CopyFrom(request)
    body.ClearField("request_id")
    scope = f"{SERVICE_PATH}/{method}|{principal_of(caller)}"
    fingerprint = hashlib.sha256(
        scope.encode() + b"\0" + body.SerializeToString(deterministic=True)
    ).digest()
    return IdempotencyKey(scope, request_id, fingerprint)


class _LostRaceError(Exception):
    """A concurrent twin of this request committed first: replay its reply instead."""


async def _replay(
    uow: AccessUnitOfWork, deps: AccessDeps, key: IdempotencyKey, parse: Callable[[bytes], M]
) -> M | None:
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
    return parse(record.response)


async def _remember(
    uow: AccessUnitOfWork, deps: AccessDeps, key: IdempotencyKey, stored: Message
) -> None:
    now = deps.clock()
    try:
        await uow.idempotency.add(
            IdempotencyRecord(
                scope=key.scope,
                request_id=key.request_id,
                request_fingerprint=key.fingerprint,
                response=stored.SerializeToString(deterministic=True),
                response_type=stored.DESCRIPTOR.full_name,
                created_at=now,
                expires_at=now + deps.idempotency_ttl,
            )
        )
    except DuplicateKeyError:
        raise _LostRaceError from None


@dataclass(frozen=True, slots=True)
class Reply:
    """What a mutating use case answers, and what a replay answers (secrets removed)."""

    response: Message
    stored: Message | None = None


async def replayed(
    uow_factory: UnitOfWorkFactory,
    deps: AccessDeps,
    key: IdempotencyKey,
    parse: Callable[[bytes], M],
) -> M | None:
    """The stored reply of an earlier identical request, for use cases that act outside the
    database before their transaction (and must not act twice)."""
    async with uow_factory() as uow:
        return await _replay(uow, deps, key, parse)


async def in_transaction(
    uow_factory: UnitOfWorkFactory,
    deps: AccessDeps,
    key: IdempotencyKey,
    parse: Callable[[bytes], M],
    work: Callable[[AccessUnitOfWork], Awaitable[Reply]],
) -> M:
    """Run `work` once per request id: the change, its events and the stored reply commit
    together; a retry replays the stored reply; a lost race with a twin replays the twin's."""
    gate = deps.write_gate or contextlib.nullcontext()
    for _attempt in range(_ATTEMPTS):
        try:
            async with gate, uow_factory() as uow:
                replayed = await _replay(uow, deps, key, parse)
                if replayed is not None:
                    return replayed
                reply = await work(uow)
                await _remember(uow, deps, key, reply.stored or reply.response)
                await uow.commit()
                return reply.response  # type: ignore[return-value]
        except (_LostRaceError, DuplicateKeyError):
            # A twin or a concurrent first chain entry won; the next attempt sees its commit.
            await asyncio.sleep(0)
            continue
    raise Unavailable(
        "too much contention on this building; retry with the same request_id",
        reason="CONTENTION",
        retry_after=timedelta(seconds=1),
    )


# --- page tokens -----------------------------------------------------------------------------


class PageTokens:
    """Opaque page tokens: a keyset position, MACed and bound to the filters they were made
    for (a token reused with other filters, altered or expired is INVALID_PAGE_TOKEN)."""

    def __init__(self, key: bytes, kind: str) -> None:
        self._key = hmac.new(key, b"gatehouse-access:page:" + kind.encode(), "sha256").digest()

    def _mac(self, data: bytes) -> str:
        return hmac.new(self._key, data, hashlib.sha256).hexdigest()[:32]

    def make(self, position: list[str], filters: str, now: datetime) -> str:
        body = json.dumps(
            {
                "p": position,
                "f": hashlib.sha256(filters.encode()).hexdigest()[:16],
                "e": int((now + _PAGE_TOKEN_LIFETIME).timestamp()),
            },
            separators=(",", ":"),
        ).encode()
        encoded = base64.urlsafe_b64encode(body).decode().rstrip("=")
        return f"{encoded}.{self._mac(encoded.encode())}"

    def read(self, token: str, filters: str, now: datetime) -> list[str] | None:
        if not token:
            return None
        encoded, _, mac = token.partition(".")
        if not hmac.compare_digest(mac, self._mac(encoded.encode())):
            raise invalid_page_token("is malformed")
        try:
            body = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
            position = [str(part) for part in body["p"]]
            digest, expires = str(body["f"]), int(body["e"])
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise invalid_page_token("is malformed") from None
        if digest != hashlib.sha256(filters.encode()).hexdigest()[:16]:
            raise invalid_page_token("was made for other request parameters")
        if now.timestamp() >= expires:
            raise invalid_page_token("has expired; start from the first page")
        return position


def invalid_page_token(problem: str) -> InvalidArgument:
    return InvalidArgument([FieldViolation("page_token", problem)], reason="INVALID_PAGE_TOKEN")


def page_size(requested: int) -> int:
    if requested <= 0:
        return DEFAULT_PAGE_SIZE
    return min(requested, MAX_PAGE_SIZE)


# --- lookups through monitoring --------------------------------------------------------------


def directory_unavailable() -> Unavailable:
    return Unavailable(
        "the building directory (monitoring) cannot be reached; retry",
        reason="DIRECTORY_UNAVAILABLE",
        retry_after=timedelta(seconds=2),
    )


async def ask(call: Awaitable[T]) -> T:
    try:
        return await call
    except DirectoryUnavailableError:
        raise directory_unavailable() from None


async def building_or_404(deps: AccessDeps, building_id: str) -> BuildingInfo:
    building = await ask(deps.directory.building(building_id))
    if building is None:
        raise NotFound(names.building_name(building_id), reason="BUILDING_NOT_FOUND")
    return building


async def door_or_404(deps: AccessDeps, building_id: str, door_id: str) -> DoorInfo:
    door = await ask(deps.directory.door(building_id, door_id))
    if door is None:
        if await ask(deps.directory.building(building_id)) is None:
            raise NotFound(names.building_name(building_id), reason="BUILDING_NOT_FOUND")
        raise NotFound(names.door_name(building_id, door_id), reason="DOOR_NOT_FOUND")
    return door


def zone_of(building: BuildingInfo) -> ZoneInfo:
    zone = load_zone(building.time_zone)
    if zone is None:
        # Monitoring validates zones on create; a zone the tz database lost is UTC until fixed.
        log.warning("building %s has an unknown time zone; using UTC", building.building_id)
        return ZoneInfo("UTC")
    return zone


async def check_doors(
    deps: AccessDeps, building_id: str, doors: list[str], field_name: str
) -> tuple[list[str], list[FieldViolation], str]:
    """Door names -> door ids of the building; violations with their reason otherwise."""
    ids: list[str] = []
    problems: list[FieldViolation] = []
    reason = ""
    for index, door in enumerate(doors):
        path = f"{field_name}[{index}]"
        parsed = names.door_ids(door)
        if parsed is None:
            problems.append(FieldViolation(path, "must look like 'buildings/*/doors/*'"))
            reason = reason or "INVALID_FIELD"
            continue
        if parsed[0] != building_id:
            problems.append(FieldViolation(path, "is not a door of this building"))
            reason = "UNKNOWN_DOOR"
            continue
        if parsed[1] in ids:
            problems.append(FieldViolation(path, "is listed twice"))
            reason = reason or "INVALID_FIELD"
            continue
        if await ask(deps.directory.door(building_id, parsed[1])) is None:
            problems.append(FieldViolation(path, "is not a door of this building"))
            reason = "UNKNOWN_DOOR"
            continue
        ids.append(parsed[1])
    return ids, problems, reason


# --- the log and its events ------------------------------------------------------------------


async def append_entry(
    uow: AccessUnitOfWork,
    entry: LogEntry,
    event_type: str,
    subject: str,
    payload_for: Callable[[str], Message],
) -> tuple[LogEntry, Event]:
    """Append `entry` to its building's chain (locking the head, if the caller has not
    already) and publish its event through the outbox, in the caller's transaction.

    `payload_for(entry_name)` builds the event payload; the entry records the event's id.
    """
    head = await uow.log.lock_head(entry.building_id)
    entry_name = names.log_entry_name(entry.building_id, entry.id)
    event = new_event(
        event_type, source=SOURCE, subject=subject, data=payload_for(entry_name), time=entry.time
    )
    placed, new_head = sealed(replace(entry, event_id=event.id), head, mapping.entry_hash)
    await uow.log.append(placed, new_head)
    await uow.outbox.add(event)
    return placed, event
