"""Who is calling: the mTLS peer (a service, Envoy, a device) and the end user's token.

The authentication interceptor builds a `Caller` for every RPC and makes it available to
handlers through `current_caller()`. It verifies a bearer token when one is presented and
refuses a bad one with UNAUTHENTICATED; whether an RPC *needs* a user, and which permission,
is decided by the RBAC table (auth issue), not here.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
import jwt
from google.protobuf.message import Message

from gatehouse.runtime.errors import Unauthenticated
from gatehouse.runtime.interception import ScopedInterceptor

AUTHORIZATION_HEADER = "authorization"
# Set by Envoy at the edge; trusted only when the mTLS peer is Envoy itself.
FORWARDED_FOR_HEADER = "x-forwarded-for"
EDGE_SPIFFE_ID = "spiffe://gatehouse/envoy"
# Only asymmetric algorithms: a leaked verification key must never let anyone mint tokens.
ALLOWED_ALGORITHMS = ("EdDSA", "ES256")


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

    @property
    def user(self) -> str | None:
        """Resource name of the end user (`users/{id}`), if a valid token was presented."""
        return self.claims.subject if self.claims else None


ANONYMOUS = Caller(peer_spiffe_id=None)
_current: contextvars.ContextVar[Caller] = contextvars.ContextVar(
    "gatehouse_caller", default=ANONYMOUS
)


def current_caller() -> Caller:
    return _current.get()


class TokenVerifier(Protocol):
    def verify(self, token: str) -> TokenClaims:
        """Return the claims of a valid token; raise `Unauthenticated` otherwise."""


class JwksTokenVerifier:
    """Verifies asymmetric JWTs against a JWKS (RFC 7517) document, choosing the key by `kid`.

    Keys come from the auth service's published JWKS, so every service verifies on its own
    without calling auth per request.
    """

    def __init__(self, jwks: Mapping[str, Any], *, issuer: str, audience: str) -> None:
        key_set = jwt.PyJWKSet.from_dict(dict(jwks))
        self._keys = {key.key_id: key for key in key_set.keys if key.key_id}
        self._issuer = issuer
        self._audience = audience

    @classmethod
    def from_json(cls, document: str, *, issuer: str, audience: str) -> JwksTokenVerifier:
        return cls(json.loads(document), issuer=issuer, audience=audience)

    def verify(self, token: str) -> TokenClaims:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthenticated("malformed access token", reason="TOKEN_MALFORMED") from None
        key = self._keys.get(str(header.get("kid", "")))
        if key is None:
            raise Unauthenticated(
                "access token signed by an unknown key", reason="TOKEN_KEY_UNKNOWN"
            )
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=list(ALLOWED_ALGORITHMS),
                audience=self._audience,
                issuer=self._issuer,
                options={"require": ["exp", "iat", "sub", "jti", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("access token expired", reason="TOKEN_EXPIRED") from None
        except jwt.PyJWTError:
            raise Unauthenticated("access token is not valid", reason="TOKEN_INVALID") from None
        return TokenClaims(
            subject=str(claims["sub"]),
            token_id=str(claims["jti"]),
            expires_at=dt.datetime.fromtimestamp(int(claims["exp"]), dt.UTC),
            roles=tuple(claims.get("roles", ())),
            permissions=tuple(claims.get("permissions", ())),
            raw=claims,
        )


class NoTokenVerifier:
    """Used until a service is given keys: any presented token is refused, never trusted."""

    def verify(self, token: str) -> TokenClaims:
        raise Unauthenticated(
            "this service cannot verify access tokens yet (no JWKS configured)",
            reason="TOKEN_VERIFICATION_UNAVAILABLE",
        )


class AuthenticationInterceptor(ScopedInterceptor):
    def __init__(self, verifier: TokenVerifier) -> None:
        self._verifier = verifier

    @asynccontextmanager
    async def scope(
        self, method: str, request: Message | None, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[None]:
        metadata = _metadata(context)
        peer = peer_spiffe_id(context)
        claims = None
        authorization = metadata.get(AUTHORIZATION_HEADER)
        if authorization is not None:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not token:
                raise Unauthenticated(
                    "authorization metadata must be 'Bearer <token>'", reason="TOKEN_MALFORMED"
                )
            claims = self._verifier.verify(token.strip())
        client_address = _client_address(peer, metadata, context)
        reset_token = _current.set(
            Caller(peer_spiffe_id=peer, claims=claims, client_address=client_address)
        )
        try:
            yield
        finally:
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
