"""Auth adapters without a server: the signing key ring, lockout
counters on the in-memory key-value store, page tokens, settings."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
import secrets

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from redis.exceptions import ConnectionError as RedisConnectionError

from gatehouse.auth.adapters.lockout import (
    GuardedRevocations,
    KeyValueLockout,
    KeyValueRateLimiter,
)
from gatehouse.auth.adapters.signing import SigningKeyRing, new_signing_key
from gatehouse.auth.domain.lockout import LockoutPolicy, LockScope
from gatehouse.auth.domain.tokens import InactiveReason, TokenRejectedError
from gatehouse.auth.handlers.pagination import PageTokens
from gatehouse.auth.settings import load_auth_settings
from gatehouse.runtime.config import ConfigurationError
from gatehouse.runtime.errors import InvalidArgument, Unavailable
from gatehouse.runtime.identity import KeyValueRevocationList
from gatehouse.runtime.kv import InMemoryKeyValueStore
from gatehouse.runtime.secrets import KeyedSecretBox, SealedValueError
from tests.support.auth import TestClock

ISSUER = AUDIENCE = "gatehouse"


@pytest.fixture
def box() -> KeyedSecretBox:
    return KeyedSecretBox(secrets.token_bytes(32))


def _ring(box: KeyedSecretBox, clock: TestClock) -> SigningKeyRing:
    return SigningKeyRing(
        box,
        issuer=ISSUER,
        audience=AUDIENCE,
        publish_window=dt.timedelta(minutes=16),
        clock=clock,
    )


def _claims(clock: TestClock, **overrides: object) -> dict[str, object]:
    now = int(clock().timestamp())
    claims: dict[str, object] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "users/01J0000000000000000000000A",
        "iat": now,
        "exp": now + 900,
        "jti": "t1",
        "sid": "s1",
        "roles": [],
        "permissions": [],
    }
    claims.update(overrides)
    return claims


def test_key_ring_signs_with_kid_and_verifies_its_own_tokens(box: KeyedSecretBox) -> None:
    clock = TestClock()
    key = new_signing_key(box, clock())
    ring = _ring(box, clock)
    assert ring.load([key]) is True
    token = ring.sign(_claims(clock))
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "EdDSA", "kid": key.kid, "typ": "JWT"}
    assert ring.verify(token).claims["sub"] == "users/01J0000000000000000000000A"
    (published,) = ring.public_keys()
    assert published["kid"] == key.kid
    assert set(published) == {"kty", "crv", "x", "kid", "use", "alg"}
    # The JWKS document parses as one, and its key verifies the token independently.
    key_set = jwt.PyJWKSet.from_dict(json.loads(ring.jwks_document()))
    assert jwt.decode(token, key_set[key.kid], algorithms=["EdDSA"], audience=AUDIENCE)
    assert b"d" not in json.loads(ring.jwks_document())["keys"][0]  # no private part


def test_private_keys_are_sealed_at_rest(box: KeyedSecretBox) -> None:
    key = new_signing_key(box, dt.datetime.now(dt.UTC))
    with pytest.raises(SealedValueError):
        KeyedSecretBox(secrets.token_bytes(32)).open(
            "signing-key", key.sealed_private_key, key.kid.encode()
        )


def _forge(claims: dict[str, object], *, kid: str, key: Ed25519PrivateKey | None = None) -> str:
    return jwt.encode(claims, key or Ed25519PrivateKey.generate(), "EdDSA", headers={"kid": kid})


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def test_key_ring_names_why_a_token_is_refused(box: KeyedSecretBox) -> None:
    clock = TestClock()
    key = new_signing_key(box, clock())
    ring = _ring(box, clock)
    ring.load([key])
    good = ring.sign(_claims(clock))
    head, body, signature = good.split(".")
    tampered_body = _b64({**_claims(clock), "permissions": ["*"]})
    cases = {
        "not.a.jwt": InactiveReason.MALFORMED,
        "garbage": InactiveReason.MALFORMED,
        f"{_b64({'alg': 'none', 'kid': key.kid})}.{body}.": InactiveReason.MALFORMED,
        jwt.encode(
            _claims(clock), "shared-secret-32-bytes-long-enough!", "HS256", headers={"kid": key.kid}
        ): InactiveReason.MALFORMED,
        _forge(_claims(clock), kid="someone-elses-key"): InactiveReason.UNKNOWN_KEY,
        _forge(_claims(clock), kid=key.kid): InactiveReason.INVALID_SIGNATURE,
        f"{head}.{tampered_body}.{signature}": InactiveReason.INVALID_SIGNATURE,
        ring.sign(_claims(clock, exp=int(clock().timestamp()) - 1)): InactiveReason.EXPIRED,
        ring.sign(_claims(clock, iat=int(clock().timestamp()) + 3600)): InactiveReason.EXPIRED,
        ring.sign(_claims(clock, aud="someone-else")): InactiveReason.WRONG_AUDIENCE,
        ring.sign(_claims(clock, iss="someone-else")): InactiveReason.WRONG_AUDIENCE,
    }
    for token, reason in cases.items():
        with pytest.raises(TokenRejectedError) as rejected:
            ring.verify(token)
        assert rejected.value.reason is reason, token
    claims = _claims(clock)
    del claims["jti"]
    with pytest.raises(TokenRejectedError) as rejected:
        ring.verify(ring.sign(claims))
    assert rejected.value.reason is InactiveReason.MALFORMED


def test_rotation_keeps_the_previous_key_published_for_a_token_lifetime(
    box: KeyedSecretBox,
) -> None:
    clock = TestClock()
    old = new_signing_key(box, clock())
    ring = _ring(box, clock)
    ring.load([old])
    old_token = ring.sign(_claims(clock))
    clock.advance(dt.timedelta(days=30))
    new = new_signing_key(box, clock())
    superseded = dataclasses.replace(old, superseded_at=clock())
    assert ring.load([superseded, new]) is True
    assert ring.current_kid == new.kid
    assert [key["kid"] for key in ring.public_keys()] == [new.kid, old.kid]
    assert jwt.get_unverified_header(ring.sign(_claims(clock)))["kid"] == new.kid
    # A token the old key signed a moment before the rotation still verifies...
    recent = jwt.encode(
        _claims(clock),
        Ed25519PrivateKey.from_private_bytes(
            box.open("signing-key", old.sealed_private_key, old.kid.encode())
        ),
        "EdDSA",
        headers={"kid": old.kid},
    )
    assert ring.verify(recent)
    # ...and once every token it could have signed has expired, the old key goes.
    clock.advance(dt.timedelta(minutes=17))
    assert ring.load([superseded, new]) is True
    assert [key["kid"] for key in ring.public_keys()] == [new.kid]
    with pytest.raises(TokenRejectedError) as rejected:
        ring.verify(old_token)
    assert rejected.value.reason is InactiveReason.UNKNOWN_KEY


def test_a_prepublished_key_is_published_first_and_signs_from_its_activation(
    box: KeyedSecretBox,
) -> None:
    clock = TestClock()
    old = new_signing_key(box, clock())
    activation = clock() + dt.timedelta(minutes=6)
    upcoming = dataclasses.replace(new_signing_key(box, clock()), activates_at=activation)
    ending = dataclasses.replace(old, superseded_at=activation)
    ring = _ring(box, clock)
    assert ring.load([ending, upcoming]) is True
    # Verifiers caching the JWKS learn the new key now; tokens still carry the old one.
    assert [key["kid"] for key in ring.public_keys()] == [old.kid, upcoming.kid]
    assert jwt.get_unverified_header(ring.sign(_claims(clock)))["kid"] == old.kid
    clock.advance(dt.timedelta(minutes=6))
    # The switch needs no reload: the ring asks the clock at each signature.
    assert ring.current_kid == upcoming.kid
    assert jwt.get_unverified_header(ring.sign(_claims(clock)))["kid"] == upcoming.kid
    # A reload puts the new current key first (what GetJwks promises); the old one stays.
    assert ring.load([ending, upcoming]) is True
    assert [key["kid"] for key in ring.public_keys()] == [upcoming.kid, old.kid]


def _lockout(clock: TestClock, kv: InMemoryKeyValueStore) -> KeyValueLockout:
    def policy(max_failures: int) -> LockoutPolicy:
        return LockoutPolicy(
            max_failures=max_failures,
            window=dt.timedelta(minutes=15),
            base_lock=dt.timedelta(minutes=1),
            max_lock=dt.timedelta(hours=1),
            memory=dt.timedelta(hours=24),
        )

    return KeyValueLockout(kv, account=policy(3), address=policy(5), clock=clock)


async def test_lockout_locks_at_the_threshold_and_lifts_with_time() -> None:
    clock = TestClock()
    kv = InMemoryKeyValueStore(clock=clock.monotonic)
    lockout = _lockout(clock, kv)
    assert await lockout.record_failure("acct", "10.0.0.1") is None
    assert await lockout.record_failure("acct", "10.0.0.2") is None
    lock = await lockout.record_failure("acct", "10.0.0.3")
    assert lock is not None
    assert (lock.scope, lock.retry_after, lock.failures, lock.level) == (
        LockScope.ACCOUNT,
        dt.timedelta(minutes=1),
        3,
        1,
    )
    current = await lockout.current("acct", "10.0.0.9")
    assert current is not None
    assert current.scope is LockScope.ACCOUNT
    clock.advance(dt.timedelta(seconds=59))
    assert await lockout.current("acct", "10.0.0.9") is not None
    clock.advance(dt.timedelta(seconds=1))
    assert await lockout.current("acct", "10.0.0.9") is None
    # The next lock within the memory lasts twice as long.
    for _ in range(2):
        assert await lockout.record_failure("acct", "10.0.0.4") is None
    again = await lockout.record_failure("acct", "10.0.0.4")
    assert again is not None
    assert (again.retry_after, again.level) == (dt.timedelta(minutes=2), 2)
    await lockout.clear("acct")
    assert await lockout.current("acct", "") is None


async def test_address_lockout_counts_across_accounts() -> None:
    clock = TestClock()
    lockout = _lockout(clock, InMemoryKeyValueStore(clock=clock.monotonic))
    for index in range(4):
        assert await lockout.record_failure(f"acct-{index}", "10.0.0.1") is None
    lock = await lockout.record_failure("acct-4", "10.0.0.1")
    assert lock is not None
    assert lock.scope is LockScope.CLIENT_ADDRESS
    current = await lockout.current("someone-new", "10.0.0.1")
    assert current is not None
    assert current.scope is LockScope.CLIENT_ADDRESS
    assert await lockout.current("someone-new", "10.0.0.2") is None


async def test_failures_outside_the_window_are_forgotten() -> None:
    clock = TestClock()
    lockout = _lockout(clock, InMemoryKeyValueStore(clock=clock.monotonic))
    for _ in range(2):
        await lockout.record_failure("acct", "")
    clock.advance(dt.timedelta(minutes=16))
    assert await lockout.record_failure("acct", "") is None


async def test_rate_limiter_counts_per_window() -> None:
    clock = TestClock()
    limiter = KeyValueRateLimiter(InMemoryKeyValueStore(clock=clock.monotonic))
    window = dt.timedelta(hours=1)
    assert [await limiter.hit("k", 2, window) for _ in range(2)] == [None, None]
    assert await limiter.hit("k", 2, window) == window
    clock.advance(window)
    assert await limiter.hit("k", 2, window) is None


def test_page_tokens_refuse_tampering_expiry_and_other_filters(box: KeyedSecretBox) -> None:
    clock = TestClock()
    tokens = PageTokens(box, "users")
    token = tokens.make(["2025-01-01T00:00:00+00:00", "01J0"], "filters-a", clock())
    assert tokens.read(token, "filters-a", clock()) == ["2025-01-01T00:00:00+00:00", "01J0"]
    assert tokens.read("", "filters-a", clock()) is None
    for bad, filters, problem in (
        (token[:-1] + ("A" if token[-1] != "A" else "B"), "filters-a", "malformed"),
        ("garbage", "filters-a", "malformed"),
        (token, "filters-b", "other request parameters"),
    ):
        with pytest.raises(InvalidArgument) as raised:
            tokens.read(bad, filters, clock())
        assert raised.value.reason == "INVALID_PAGE_TOKEN"
        assert problem in raised.value.violations[0].description
    clock.advance(dt.timedelta(days=2))
    with pytest.raises(InvalidArgument, match="expired"):
        tokens.read(token, "filters-a", clock())
    with pytest.raises(InvalidArgument):
        PageTokens(box, "roles").read(token, "filters-a", dt.datetime.now(dt.UTC))


def test_settings_come_from_gatehouse_auth_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEHOUSE_AUTH_ARGON2_TIME_COST", "3")
    monkeypatch.setenv("GATEHOUSE_AUTH_DEFAULT_ROLES", "visitor, resident")
    monkeypatch.setenv("GATEHOUSE_AUTH_PORT", "50099")  # the shared settings' variable
    settings = load_auth_settings(_env_file=None)
    assert settings.argon2_time_cost == 3
    assert settings.default_roles == ["visitor", "resident"]
    monkeypatch.setenv("GATEHOUSE_AUTH_ACCOUNT_MAX_FAILURES", "zero")
    with pytest.raises(ConfigurationError, match="GATEHOUSE_AUTH_ACCOUNT_MAX_FAILURES"):
        load_auth_settings(_env_file=None)


class BrokenStore(InMemoryKeyValueStore):
    """A store whose backend is down, as redis-py reports it."""

    async def get(self, key: str) -> bytes | None:
        raise RedisConnectionError("Connection refused")

    async def increment(self, key: str, ttl_on_create: dt.timedelta | None = None) -> int:
        raise RedisConnectionError("Connection refused")


async def test_a_store_outage_is_unavailable_never_internal() -> None:
    clock = TestClock()
    lockout = _lockout(clock, BrokenStore())
    for attempt in (lockout.current("acct", "a"), lockout.record_failure("acct", "a")):
        with pytest.raises(Unavailable) as raised:
            await attempt
        assert raised.value.reason == "STORE_UNAVAILABLE"
    with pytest.raises(Unavailable):
        await KeyValueRateLimiter(BrokenStore()).hit("k", 1, dt.timedelta(minutes=1))
    with pytest.raises(Unavailable):
        await GuardedRevocations(KeyValueRevocationList(BrokenStore())).is_revoked("jti")
