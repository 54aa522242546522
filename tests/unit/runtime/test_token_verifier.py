from __future__ import annotations

import datetime as dt
import json

import pytest

from gatehouse.runtime.errors import Unauthenticated
from gatehouse.runtime.identity import (
    JWKS_KEY,
    JwksTokenVerifier,
    KeyValueKeySource,
    KeyValueRevocationList,
)
from gatehouse.runtime.kv import InMemoryKeyValueStore
from tests.support.tokens import TestIssuer


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_keys_come_from_the_store_and_a_rotated_key_is_picked_up() -> None:
    kv = InMemoryKeyValueStore()
    old, new = TestIssuer("k1"), TestIssuer("k2")
    await kv.set(JWKS_KEY, old.jwks_json())
    clock = Clock()
    verifier = JwksTokenVerifier(
        KeyValueKeySource(kv), issuer="gatehouse", audience="gatehouse", monotonic=clock
    )
    assert (await verifier.verify(old.token(subject="users/a"))).subject == "users/a"

    # Auth rotates: the published set now holds the new key and, for a while, the old one.
    await kv.set(JWKS_KEY, json.dumps({"keys": old.jwks()["keys"] + new.jwks()["keys"]}).encode())
    clock.now += 5  # past the reload guard, well within the cache age
    assert (await verifier.verify(new.token(subject="users/b"))).subject == "users/b"
    assert (await verifier.verify(old.token(subject="users/c"))).subject == "users/c"


async def test_unknown_kid_does_not_reload_more_than_once_a_second() -> None:
    kv = InMemoryKeyValueStore()
    issuer = TestIssuer("k1")
    clock = Clock()
    verifier = JwksTokenVerifier(
        KeyValueKeySource(kv), issuer="gatehouse", audience="gatehouse", monotonic=clock
    )
    with pytest.raises(Unauthenticated) as raised:
        await verifier.verify(issuer.token())
    assert raised.value.reason == "TOKEN_KEY_UNKNOWN"
    await kv.set(JWKS_KEY, issuer.jwks_json())
    with pytest.raises(Unauthenticated):
        await verifier.verify(issuer.token())  # still inside the guard: no reload yet
    clock.now += 1.5
    await verifier.verify(issuer.token())


async def test_revocation_expires_with_the_token() -> None:
    kv = InMemoryKeyValueStore()
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    revocations = KeyValueRevocationList(kv, clock=lambda: now)
    await revocations.revoke("t1", until=now + dt.timedelta(minutes=5))
    await revocations.revoke("t2", until=now - dt.timedelta(seconds=1))  # already expired
    assert await revocations.is_revoked("t1")
    assert not await revocations.is_revoked("t2")
    assert await kv.ttl("auth:revoked:t1") is not None
