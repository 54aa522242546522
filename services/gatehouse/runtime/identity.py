"""Who is calling: the mTLS peer (a service, Envoy, a device) and the end user's token.

The authentication interceptor builds a `Caller` for every RPC and makes it available to
handlers through `current_caller()`. It verifies a bearer token when one is presented and
refuses a bad one with UNAUTHENTICATED. Whether an RPC *needs* a user, and which permission,
is the authorization interceptor's business (`gatehouse.runtime.authorization`).

Tokens are verified locally in every service (ARCHITECTURE §6): the auth service publishes its
JWKS into the shared key-value store and revoked token ids into the same store, so no RPC
needs a round trip to auth.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import json
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
import jwt
from google.protobuf.message import Message

from gatehouse.runtime.errors import Unauthenticated, Unavailable
from gatehouse.runtime.interception import ScopedInterceptor
from gatehouse.runtime.kv import KeyValueStore

AUTHORIZATION_HEADER = "authorization"
DEVICE_TOKEN_HEADER = "x-gatehouse-device-token"  # noqa: S105 - a header name, not a secret
# Set by Envoy at the edge; trusted only when the mTLS peer is Envoy itself.
FORWARDED_FOR_HEADER = "x-forwarded-for"
# The client certificate Envoy verified at the edge (`forward_client_cert_details: SANITIZE_SET`,
# so a client cannot supply its own); trusted only from Envoy, like the address.
FORWARDED_CLIENT_CERT_HEADER = "x-forwarded-client-cert"
# The identity a device certificate carries (`gatehouse certs device`).
DEVICE_IDENTITY = re.compile(r"spiffe://gatehouse/buildings/[^/]+/devices/[^/]+")
EDGE_SPIFFE_ID = "spiffe://gatehouse/envoy"
# Only asymmetric algorithms: a leaked verification key must never let anyone mint tokens,
# and `alg: none` is never accepted.
ALLOWED_ALGORITHMS = ("EdDSA", "ES256")
# Where auth publishes what every service needs to verify tokens on its own.
JWKS_KEY = "auth:jwks"
REVOKED_TOKEN_PREFIX = "auth:revoked:"  # noqa: S105 - a key prefix, not a secret


@dataclass(frozen=True, slots=True)
class TokenClaims:
    """The verified claims of an access token."""

    subject: str
    token_id: str
    expires_at: dt.datetime
    roles: tuple[str, ...] = ()
    permissions: tuple[str, ...] = ()
    raw: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Caller:
    """The identity behind one RPC."""

    peer_spiffe_id: str | None
    claims: TokenClaims | None = None
    client_address: str | None = None
    device_token: str | None = None
    # The SPIFFE URI of the client certificate Envoy verified, for calls through the edge.
    edge_client_id: str | None = None

    @property
    def user(self) -> str | None:
        """Resource name of the end user (`users/{id}`), if a valid token was presented."""
        return self.claims.subject if self.claims else None

    @property
    def device_spiffe_id(self) -> str | None:
        """The device whose certificate made this call: presented to the service itself, or
        to the edge, which vouches for it. Only device identities count from the edge: a
        service's certificate shown to Envoy must never make an outside call internal."""
        for candidate in (self.peer_spiffe_id, self.edge_client_id):
            if candidate and DEVICE_IDENTITY.fullmatch(candidate):
                return candidate
        return None


ANONYMOUS = Caller(peer_spiffe_id=None)
_current: contextvars.ContextVar[Caller] = contextvars.ContextVar(
    "gatehouse_caller", default=ANONYMOUS
)


def current_caller() -> Caller:
    return _current.get()


# Set by an outer interceptor (the RPC log line) that wants to know who called once the inner
# ones have decided it; their context variables are gone by the time its own code runs again.
_observed: contextvars.ContextVar[list[Caller] | None] = contextvars.ContextVar(
    "gatehouse_observed_caller", default=None
)


@contextlib.contextmanager
def observing_caller() -> Iterator[list[Caller]]:
    """Collects the callers the authentication interceptor settles on inside this block
    (the last one is the final word: the peer first, then the verified token)."""
    seen: list[Caller] = []
    reset_token = _observed.set(seen)
    try:
        yield seen
    finally:
        with contextlib.suppress(ValueError):
            _observed.reset(reset_token)


def _observe(caller: Caller) -> None:
    seen = _observed.get()
    if seen is not None:
        seen.append(caller)


class TokenVerifier(Protocol):
    async def verify(self, token: str) -> TokenClaims:
        """Return the claims of a valid, unrevoked token; raise `Unauthenticated` otherwise."""


class KeySource(Protocol):
    async def jwks(self) -> Mapping[str, Any] | None:
        """The current JWKS document (RFC 7517), or None when none is published yet."""


class StaticKeySource:
    """A fixed JWKS: tests, and deployments that mount the public keys as a file."""

    def __init__(self, jwks: Mapping[str, Any]) -> None:
        self._jwks = dict(jwks)

    async def jwks(self) -> Mapping[str, Any]:
        return self._jwks


class KeyValueKeySource:
    """The JWKS the auth service publishes in the shared key-value store."""

    def __init__(self, kv: KeyValueStore, key: str = JWKS_KEY) -> None:
        self._kv = kv
        self._key = key

    async def jwks(self) -> Mapping[str, Any] | None:
        document = await self._kv.get(self._key)
        if document is None:
            return None
        loaded: Mapping[str, Any] = json.loads(document)
        return loaded


class RevocationList(Protocol):
    async def is_revoked(self, token_id: str) -> bool: ...

    async def revoke(self, token_id: str, until: dt.datetime) -> None: ...


class KeyValueRevocationList:
    """Revoked access-token ids, kept only until the token would have expired anyway."""

    def __init__(self, kv: KeyValueStore, clock: Callable[[], dt.datetime] | None = None) -> None:
        self._kv = kv
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))

    async def is_revoked(self, token_id: str) -> bool:
        return await self._kv.get(REVOKED_TOKEN_PREFIX + token_id) is not None

    async def revoke(self, token_id: str, until: dt.datetime) -> None:
        remaining = until - self._clock()
        if remaining > dt.timedelta(0):
            await self._kv.set(REVOKED_TOKEN_PREFIX + token_id, b"1", ttl=remaining)


class NothingRevoked:
    async def is_revoked(self, token_id: str) -> bool:
        return False

    async def revoke(self, token_id: str, until: dt.datetime) -> None:
        raise NotImplementedError("this verifier has no revocation store")


class JwksTokenVerifier:
    """Verifies asymmetric JWTs against a JWKS, choosing the key by `kid`, then checks that the
    token id is not revoked.

    Keys are cached; an unknown `kid` triggers a reload (at most once per `min_reload`), so a
    key rotated in by auth is picked up at once and a flood of forged kids cannot turn into a
    flood of store reads.
    """

    def __init__(
        self,
        keys: KeySource,
        *,
        issuer: str,
        audience: str,
        revocations: RevocationList | None = None,
        max_age: dt.timedelta = dt.timedelta(minutes=1),
        leeway: dt.timedelta = dt.timedelta(seconds=30),
        min_reload: dt.timedelta = dt.timedelta(seconds=1),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._source = keys
        self._issuer = issuer
        self._audience = audience
        self._revocations = revocations or NothingRevoked()
        self._max_age = max_age.total_seconds()
        self._leeway = leeway
        self._min_reload = min_reload.total_seconds()
        self._monotonic = monotonic
        self._keys: dict[str, jwt.PyJWK] = {}
        self._loaded_at: float | None = None

    async def verify(self, token: str) -> TokenClaims:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthenticated("malformed access token", reason="TOKEN_MALFORMED") from None
        if header.get("alg") not in ALLOWED_ALGORITHMS:
            raise Unauthenticated(
                "access token uses a disallowed algorithm", reason="TOKEN_INVALID"
            )
        key = await self._key(str(header.get("kid", "")))
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=list(ALLOWED_ALGORITHMS),
                audience=self._audience,
                issuer=self._issuer,
                options={"require": ["exp", "iat", "sub", "jti", "iss", "aud"]},
                # Replicas' clocks differ a little; without leeway a token issued by a host
                # whose clock runs ahead is refused for that moment.
                leeway=self._leeway,
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("access token expired", reason="TOKEN_EXPIRED") from None
        except jwt.PyJWTError:
            raise Unauthenticated("access token is not valid", reason="TOKEN_INVALID") from None
        token_id = str(claims["jti"])
        try:
            revoked = await self._revocations.is_revoked(token_id)
        except Exception as error:
            # Fail closed, and say so: a token we cannot check is not accepted.
            raise Unavailable(
                "cannot check token revocation right now", reason="REVOCATION_LIST_UNAVAILABLE"
            ) from error
        if revoked:
            raise Unauthenticated("access token was revoked", reason="TOKEN_REVOKED")
        return TokenClaims(
            subject=str(claims["sub"]),
            token_id=token_id,
            expires_at=dt.datetime.fromtimestamp(int(claims["exp"]), dt.UTC),
            roles=tuple(claims.get("roles", ())),
            permissions=tuple(claims.get("permissions", ())),
            raw=claims,
        )

    async def _key(self, kid: str) -> jwt.PyJWK:
        now = self._monotonic()
        stale = self._loaded_at is None or now - self._loaded_at > self._max_age
        may_reload = self._loaded_at is None or now - self._loaded_at > self._min_reload
        if stale or (kid not in self._keys and may_reload):
            document = await self._source.jwks()
            self._keys = _parse_jwks(document) if document else {}
            self._loaded_at = now
        key = self._keys.get(kid)
        if key is None:
            raise Unauthenticated(
                "access token signed by an unknown key", reason="TOKEN_KEY_UNKNOWN"
            )
        return key


def _parse_jwks(document: Mapping[str, Any]) -> dict[str, jwt.PyJWK]:
    key_set = jwt.PyJWKSet.from_dict(dict(document))
    return {key.key_id: key for key in key_set.keys if key.key_id}


class AuthenticationInterceptor(ScopedInterceptor):
    def __init__(self, verifier: TokenVerifier) -> None:
        self._verifier = verifier

    @asynccontextmanager
    async def scope(
        self, method: str, request: Message | None, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[None]:
        metadata = _metadata(context)
        peer = peer_spiffe_id(context)
        address = _client_address(peer, metadata, context)
        _observe(Caller(peer_spiffe_id=peer, client_address=address))
        claims = None
        authorization = metadata.get(AUTHORIZATION_HEADER)
        if authorization is not None:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthenticated(
                    "authorization metadata must be 'Bearer <token>'", reason="TOKEN_MALFORMED"
                )
            claims = await self._verifier.verify(token.strip())
        caller = Caller(
            peer_spiffe_id=peer,
            claims=claims,
            client_address=address,
            device_token=metadata.get(DEVICE_TOKEN_HEADER),
            edge_client_id=forwarded_client_id(peer, metadata),
        )
        _observe(caller)
        reset_token = _current.set(caller)
        try:
            yield
        finally:
            # A streaming RPC cancelled by its client is closed from another task, whose
            # context did not create the token; the caller's context dies with the call then.
            with contextlib.suppress(ValueError):
                _current.reset(reset_token)


def peer_spiffe_id(context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
    """The SPIFFE URI SAN of the verified client certificate, if any."""
    auth_context = context.auth_context()
    for key in ("peer_spiffe_id", "x509_subject_alternative_name"):
        for value in auth_context.get(key, ()):
            text = value.decode() if isinstance(value, bytes) else str(value)
            if text.startswith("spiffe://"):
                return text
    return None


def forwarded_client_id(peer: str | None, metadata: Mapping[str, str]) -> str | None:
    """The `URI` of the element Envoy added to `x-forwarded-client-cert` (the last one), when
    Envoy is the peer; anyone else's header is ignored."""
    header = metadata.get(FORWARDED_CLIENT_CERT_HEADER)
    if peer != EDGE_SPIFFE_ID or not header:
        return None
    element = header.rsplit(",", 1)[-1]
    for pair in element.split(";"):
        key, _, value = pair.strip().partition("=")
        if key.lower() == "uri":
            uri = value.strip('"')
            return uri if uri.startswith("spiffe://") else None
    return None


def _metadata(context: grpc.aio.ServicerContext[Any, Any]) -> dict[str, str]:
    return {
        key: value for key, value in context.invocation_metadata() or () if isinstance(value, str)
    }


def _client_address(
    peer: str | None, metadata: Mapping[str, str], context: grpc.aio.ServicerContext[Any, Any]
) -> str | None:
    if peer == EDGE_SPIFFE_ID and FORWARDED_FOR_HEADER in metadata:
        # Envoy appends the address it saw; the last hop before Envoy is the one it vouches for.
        return metadata[FORWARDED_FOR_HEADER].split(",")[-1].strip()
    return context.peer()
