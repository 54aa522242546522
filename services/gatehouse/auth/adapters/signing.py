"""Ed25519 (EdDSA) signing keys: generation, sealing at rest, the in-memory key ring, JWKS.

Keys live in the auth database (table `auth_signing_keys`) so every replica and every restart
signs with the same key; the private half is sealed with the KEK (`gatehouse.runtime.secrets`),
so a database dump alone yields no signing key. The `kid` is the RFC 7638 thumbprint of the
public key: stable, unique, and checkable by anyone holding the JWKS.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from gatehouse.auth.domain.tokens import ALGORITHM, LEEWAY, InactiveReason, TokenRejectedError
from gatehouse.auth.handlers.keys import current_signing_key
from gatehouse.auth.handlers.ports import SecretBox, StoredSigningKey, VerifiedToken
from gatehouse.runtime.identity import ALLOWED_ALGORITHMS

_SEAL_PURPOSE = "signing-key"
_REQUIRED_CLAIMS = ["exp", "iat", "sub", "jti", "iss", "aud"]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def public_jwk(public_key: Ed25519PublicKey) -> dict[str, str]:
    """The RFC 8037 OKP form, with `kid` (the RFC 7638 thumbprint), `use` and `alg`."""
    x = _b64url(public_key.public_bytes(Encoding.Raw, PublicFormat.Raw))
    # RFC 7638: the required members only, lexicographic order, no whitespace.
    canonical = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": x}, separators=(",", ":"))
    kid = _b64url(hashlib.sha256(canonical.encode()).digest())
    return {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "use": "sig", "alg": ALGORITHM}


def new_signing_key(box: SecretBox, now: datetime) -> StoredSigningKey:
    private = Ed25519PrivateKey.generate()
    jwk = public_jwk(private.public_key())
    raw = private.private_bytes_raw()
    return StoredSigningKey(
        kid=jwk["kid"],
        algorithm=ALGORITHM,
        public_jwk=jwk,
        # The kid as associated data: a sealed key copied onto another row does not open.
        sealed_private_key=box.seal(_SEAL_PURPOSE, raw, jwk["kid"].encode()),
        created_at=now,
        activates_at=now,
    )


@dataclass(frozen=True, slots=True)
class _LoadedKey:
    stored: StoredSigningKey
    public: Ed25519PublicKey

    @property
    def kid(self) -> str:
        return self.stored.kid


class SigningKeyRing:
    """`KeyRing`: signs with the current key, verifies with every published one.

    Published are the keys not yet signing (a prepublished successor), the current one, and
    those superseded less than `publish_window` ago (the longest access-token lifetime plus
    skew), so a rotation invalidates no token. Which key signs is decided at each signature
    from the clock, so a prepublished key takes over on time without waiting for a reload.
    """

    def __init__(
        self,
        box: SecretBox,
        *,
        issuer: str,
        audience: str,
        publish_window: timedelta,
        clock: Callable[[], datetime],
    ) -> None:
        self._box = box
        self._issuer = issuer
        self._audience = audience
        self._publish_window = publish_window
        self._clock = clock
        self._published: dict[str, _LoadedKey] = {}
        # Private halves of the keys that sign now or will, opened once each.
        self._private: dict[str, Ed25519PrivateKey] = {}

    @property
    def current_kid(self) -> str | None:
        current = current_signing_key(
            [key.stored for key in self._published.values()], self._clock()
        )
        return None if current is None else current.kid

    def load(self, keys: Sequence[StoredSigningKey]) -> bool:
        """Adopt the stored keys; whether what is published (or its order) changed."""
        now = self._clock()
        current = current_signing_key(keys, now)
        if current is None:
            raise RuntimeError("no signing key: ensure_signing_key must run first")
        published: dict[str, _LoadedKey] = {}
        # Current first (GetJwks promises that order), then the newest first.
        ordered = sorted(keys, key=lambda k: (k.activates_at, k.created_at, k.kid), reverse=True)
        for key in [current, *(key for key in ordered if key is not current)]:
            retired = (
                key.superseded_at is not None and now - key.superseded_at >= self._publish_window
            )
            if retired or key.algorithm != ALGORITHM:
                continue
            public = Ed25519PublicKey.from_public_bytes(
                base64.urlsafe_b64decode(str(key.public_jwk["x"]) + "==")
            )
            published[key.kid] = _LoadedKey(key, public)
        private: dict[str, Ed25519PrivateKey] = {}
        for loaded in published.values():
            stored = loaded.stored
            if stored.superseded_at is not None and stored.superseded_at <= now:
                continue  # signs no more
            opened = self._private.get(stored.kid)
            if opened is None:
                raw = self._box.open(_SEAL_PURPOSE, stored.sealed_private_key, stored.kid.encode())
                opened = Ed25519PrivateKey.from_private_bytes(raw)
            private[stored.kid] = opened
        changed = list(published) != list(self._published)
        self._published, self._private = published, private
        return changed

    def sign(self, claims: Mapping[str, Any]) -> str:
        kid = self.current_kid
        signing_key = self._private.get(kid) if kid is not None else None
        if kid is None or signing_key is None:
            raise RuntimeError("the key ring is not loaded")
        return jwt.encode(
            dict(claims), signing_key, algorithm=ALGORITHM, headers={"kid": kid, "typ": "JWT"}
        )

    def public_keys(self) -> list[dict[str, str]]:
        return [
            {k: str(v) for k, v in key.stored.public_jwk.items()}
            for key in self._published.values()
        ]

    def jwks_document(self) -> bytes:
        return json.dumps({"keys": self.public_keys()}, separators=(",", ":")).encode()

    def verify(self, token: str) -> VerifiedToken:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenRejectedError(InactiveReason.MALFORMED) from None
        # `alg: none` and symmetric algorithms are refused before any key is looked at.
        if header.get("alg") not in ALLOWED_ALGORITHMS:
            raise TokenRejectedError(InactiveReason.MALFORMED)
        kid = header.get("kid")
        key = self._published.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise TokenRejectedError(InactiveReason.UNKNOWN_KEY)
        try:
            claims = jwt.decode(
                token,
                key=key.public,
                algorithms=[ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                # Times are checked below against the injected clock, not PyJWT's.
                options={
                    "require": _REQUIRED_CLAIMS,
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except jwt.InvalidSignatureError:
            raise TokenRejectedError(InactiveReason.INVALID_SIGNATURE) from None
        except (jwt.InvalidAudienceError, jwt.InvalidIssuerError):
            raise TokenRejectedError(InactiveReason.WRONG_AUDIENCE) from None
        except jwt.PyJWTError:
            raise TokenRejectedError(InactiveReason.MALFORMED) from None
        self._check_times(claims)
        return VerifiedToken(claims=claims, kid=key.kid)

    def _check_times(self, claims: Mapping[str, Any]) -> None:
        now = self._clock().timestamp()
        leeway = LEEWAY.total_seconds()
        try:
            expires = float(claims["exp"])
            issued = float(claims["iat"])
            not_before = float(claims.get("nbf", issued))
        except (TypeError, ValueError):
            raise TokenRejectedError(InactiveReason.MALFORMED) from None
        # Like every service's verifier: no grace after `exp`; skew tolerated only for tokens
        # that look issued slightly in the future by another replica's clock.
        if now >= expires or now + leeway < max(issued, not_before):
            raise TokenRejectedError(InactiveReason.EXPIRED)
