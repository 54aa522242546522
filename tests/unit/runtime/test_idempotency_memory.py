"""The in-memory idempotency repository keeps the contract of the SQL one (no database)."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from gatehouse.runtime.db import DuplicateKeyError
from gatehouse.runtime.idempotency import (
    IdempotencyRecord,
    IdempotencyRepository,
    InMemoryIdempotencyRepository,
)

SCOPE = "gatehouse.payments.v1.PaymentsService/CreatePayment|spiffe://gatehouse/access"
NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def make_record(
    request_id: str = "r1",
    *,
    scope: str = SCOPE,
    expires_at: datetime = NOW + timedelta(hours=24),
) -> IdempotencyRecord:
    return IdempotencyRecord(
        scope=scope,
        request_id=request_id,
        request_fingerprint=hashlib.sha256(b"amount=100 EUR").digest(),
        response=b"\x0a\x10payments/01J8",
        response_type="gatehouse.payments.v1.CreatePaymentResponse",
        # The retention window the services use; only its end matters to the repository.
        created_at=expires_at - timedelta(hours=24),
        expires_at=expires_at,
    )


@pytest.fixture
def repository() -> IdempotencyRepository:
    return InMemoryIdempotencyRepository()


async def test_add_then_get_returns_the_record(repository: IdempotencyRepository) -> None:
    await repository.add(make_record())

    assert await repository.get(SCOPE, "r1") == make_record()


async def test_get_of_an_unknown_key_is_none(repository: IdempotencyRepository) -> None:
    await repository.add(make_record("r1"))

    assert await repository.get(SCOPE, "r2") is None
    assert await repository.get("another/Method|caller", "r1") is None


async def test_a_duplicate_key_raises_and_keeps_the_first_record(
    repository: IdempotencyRepository,
) -> None:
    await repository.add(make_record())

    with pytest.raises(DuplicateKeyError):
        await repository.add(replace(make_record(), response=b"a second result"))

    assert await repository.get(SCOPE, "r1") == make_record()


async def test_the_same_request_id_in_two_scopes_is_two_records(
    repository: IdempotencyRepository,
) -> None:
    await repository.add(make_record(scope="a/Create|alice"))
    await repository.add(make_record(scope="a/Create|bob"))

    assert await repository.get("a/Create|alice", "r1") is not None
    assert await repository.get("a/Create|bob", "r1") is not None


async def test_delete_expired_removes_exactly_the_expired_records(
    repository: IdempotencyRepository,
) -> None:
    await repository.add(make_record("long-gone", expires_at=NOW - timedelta(days=1)))
    await repository.add(make_record("expires-now", expires_at=NOW))
    await repository.add(make_record("still-valid", expires_at=NOW + timedelta(seconds=1)))

    assert await repository.delete_expired(NOW) == 2
    assert await repository.get(SCOPE, "long-gone") is None
    assert await repository.get(SCOPE, "expires-now") is None
    assert await repository.get(SCOPE, "still-valid") is not None
    assert await repository.delete_expired(NOW) == 0


def test_records_refuse_naive_datetimes() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        replace(make_record(), created_at=datetime(2030, 1, 1))


def test_records_refuse_to_expire_before_they_were_created() -> None:
    with pytest.raises(ValueError, match="before created_at"):
        replace(make_record(), expires_at=make_record().created_at - timedelta(seconds=1))


def test_a_record_is_expired_from_its_expiry_time_on() -> None:
    record = make_record(expires_at=NOW)

    assert not record.is_expired(NOW - timedelta(microseconds=1))
    assert record.is_expired(NOW)
