"""Stored first results of mutating RPCs, so a retry with the same `request_id` replays them.

A record is keyed by `(scope, request_id)`. The scope names the RPC and the caller
(`gatehouse.payments.v1.PaymentsService/CreatePayment` + the caller's identity), so two callers
choosing the same request id never see each other's results. The fingerprint (sha256 of the
deterministic serialization of the request without `request_id`, computed by the caller) tells
a genuine retry from a request id reused for a different request.

How a mutating RPC uses it, inside the unit of work that makes the change:

1. `get()`; a record with the same fingerprint is the answer (replay it), a different
   fingerprint is the caller's error;
2. otherwise make the change and `add()` the response in the same transaction, then commit.
   A concurrent twin that got there first makes `add()` raise `DuplicateKeyError`: roll back
   and replay the twin's record instead.

Records live until `delete_expired()` sweeps them: `expires_at` is the earliest time a record
may disappear, and an expired record still answers `get()` until then.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, cast

from sqlalchemy import CursorResult, LargeBinary, String, delete
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from gatehouse.runtime.db import (
    DuplicateKeyError,
    RuntimeBase,
    UtcDateTime,
    translate_integrity_errors,
)


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    """The first response to one request: serialized bytes plus the message's full name."""

    scope: str
    request_id: str
    request_fingerprint: bytes
    response: bytes
    response_type: str
    created_at: datetime
    expires_at: datetime

    def __post_init__(self) -> None:
        for field_name in ("created_at", "expires_at"):
            if getattr(self, field_name).utcoffset() is None:
                raise ValueError(f"{field_name} must be timezone-aware")
        if self.expires_at < self.created_at:
            raise ValueError("expires_at is before created_at")

    def is_expired(self, now: datetime) -> bool:
        return self.expires_at <= now


class IdempotencyRepository(Protocol):
    """Idempotency records of one service database, seen through the caller's transaction."""

    async def get(self, scope: str, request_id: str) -> IdempotencyRecord | None:
        """The record for this key, or `None`."""
        ...

    async def add(self, record: IdempotencyRecord) -> None:
        """Store a new record; raises `DuplicateKeyError` if its key is already taken.

        After the error the caller's transaction is still usable (e.g. to `get()` the record
        that won).
        """
        ...

    async def delete_expired(self, now: datetime) -> int:
        """Delete every record with `expires_at <= now`; returns how many went."""
        ...


class IdempotencyRecordRow(RuntimeBase):
    """Table `idempotency_records` (created by migration `runtime_0001`)."""

    __tablename__ = "idempotency_records"

    scope: Mapped[str] = mapped_column(String(512), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    request_fingerprint: Mapped[bytes] = mapped_column(LargeBinary)
    response: Mapped[bytes] = mapped_column(LargeBinary)
    response_type: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    # Indexed for the sweep, which deletes by expiry across all scopes.
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)

    @classmethod
    def from_record(cls, record: IdempotencyRecord) -> IdempotencyRecordRow:
        return cls(
            scope=record.scope,
            request_id=record.request_id,
            request_fingerprint=record.request_fingerprint,
            response=record.response,
            response_type=record.response_type,
            created_at=record.created_at,
            expires_at=record.expires_at,
        )

    def to_record(self) -> IdempotencyRecord:
        return IdempotencyRecord(
            scope=self.scope,
            request_id=self.request_id,
            request_fingerprint=self.request_fingerprint,
            response=self.response,
            response_type=self.response_type,
            created_at=self.created_at,
            expires_at=self.expires_at,
        )


class SqlAlchemyIdempotencyRepository:
    """`IdempotencyRepository` on a unit of work's session; commits are the unit of work's."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def get(self, scope: str, request_id: str) -> IdempotencyRecord | None:
        row = await self._session.get(IdempotencyRecordRow, (scope, request_id))
        return None if row is None else row.to_record()

    async def add(self, record: IdempotencyRecord) -> None:
        # The savepoint confines a unique violation to this insert: PostgreSQL would
        # otherwise abort the whole transaction and the caller could not read the winner.
        with translate_integrity_errors():
            async with self._session.begin_nested():
                self._session.add(IdempotencyRecordRow.from_record(record))

    async def delete_expired(self, now: datetime) -> int:
        # Nobody keeps expired records loaded in the session, so skip synchronising it: that
        # would fetch the key of every deleted row.
        result = await self._session.execute(
            delete(IdempotencyRecordRow)
            .where(IdempotencyRecordRow.expires_at <= now)
            .execution_options(synchronize_session=False)
        )
        return cast("CursorResult[Any]", result).rowcount


class InMemoryIdempotencyRepository:
    """`IdempotencyRepository` in a dict, for unit tests: changes apply at once (no transaction)."""

    def __init__(self) -> None:
        self._records: dict[tuple[str, str], IdempotencyRecord] = {}

    async def get(self, scope: str, request_id: str) -> IdempotencyRecord | None:
        return self._records.get((scope, request_id))

    async def add(self, record: IdempotencyRecord) -> None:
        key = (record.scope, record.request_id)
        if key in self._records:
            raise DuplicateKeyError("pk_idempotency_records")
        self._records[key] = record

    async def delete_expired(self, now: datetime) -> int:
        expired = [key for key, record in self._records.items() if record.is_expired(now)]
        for key in expired:
            del self._records[key]
        return len(expired)
