"""Device tokens: opaque bearer secrets, stored only as a hash."""

from __future__ import annotations

import hashlib
import secrets

TOKEN_PREFIX = "gdt_"  # noqa: S105 - a prefix that tells leaked tokens apart in scanners
MAX_TOKEN = 200


def new_device_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """sha256 is enough here: a token carries 256 random bits, so no one can guess one by
    trying hashes; a slow password hash would only slow every device down."""
    return hashlib.sha256(token.encode()).hexdigest()


def plausible_token(token: str) -> bool:
    return token.startswith(TOKEN_PREFIX) and len(token) <= MAX_TOKEN
