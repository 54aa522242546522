"""A stand-in token issuer for tests: an Ed25519 key, its JWKS, and access tokens it signs."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Sequence
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

ISSUER = "gatehouse"
AUDIENCE = "gatehouse"


class TestIssuer:
    __test__ = False  # not a pytest test class

    def __init__(self, kid: str = "test-key-1") -> None:
        self.kid = kid
        self.key = Ed25519PrivateKey.generate()

    def jwks(self) -> dict[str, Any]:
        public: dict[str, Any] = json.loads(
            jwt.algorithms.OKPAlgorithm.to_jwk(self.key.public_key())
        )
        public.update(kid=self.kid, use="sig", alg="EdDSA")
        return {"keys": [public]}

    def jwks_json(self) -> bytes:
        return json.dumps(self.jwks()).encode()

    def token(
        self,
        *,
        subject: str = "users/u1",
        permissions: Sequence[str] = (),
        roles: Sequence[str] = ("roles/resident",),
        expires_in: float = 300,
        token_id: str | None = None,
        kid: str | None = None,
        audience: str = AUDIENCE,
    ) -> str:
        now = dt.datetime.now(dt.UTC)
        claims = {
            "sub": subject,
            "jti": token_id or str(uuid.uuid4()),
            "iss": ISSUER,
            "aud": audience,
            "iat": now,
            "exp": now + dt.timedelta(seconds=expires_in),
            "roles": list(roles),
            "permissions": list(permissions),
        }
        return jwt.encode(claims, self.key, algorithm="EdDSA", headers={"kid": kid or self.kid})

    def bearer(self, **claims: Any) -> tuple[tuple[str, str]]:
        return (("authorization", f"Bearer {self.token(**claims)}"),)
