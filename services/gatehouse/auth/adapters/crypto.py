"""The key-encryption key (KEK) and what is derived from it.

One 32-byte secret, shared by every replica (a platform secret in production, a 0600 file
under `<home>/keys` in embedded mode), never stored in the database. From it HKDF derives
one subkey per purpose, so a key used to encrypt signing keys is never also a MAC key:

- AES-256-GCM seals signing keys, TOTP secrets and idempotent replies that carry tokens;
- HMAC-SHA256 "digests" what the store keeps of refresh/reset/challenge tokens, recovery
  codes, request fingerprints and lockout keys. Refresh tokens have 256 bits of entropy and
  would be safe under a plain hash; recovery codes and emails would not: with a key, a stolen
  database alone does not let anyone brute-force them offline.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
from functools import cache
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEK_BYTES = 32
_NONCE_BYTES = 12
_VERSION = b"\x01"  # first byte of every sealed value, so the format can evolve


class KeyEncryptionKeyError(Exception):
    """The KEK is missing, malformed or does not open what the database holds."""


class SealedValueError(Exception):
    """A sealed value failed authentication: tampered with, or sealed under another KEK."""


class KeyedSecretBox:
    """`SecretBox` over a KEK."""

    def __init__(self, kek: bytes) -> None:
        if len(kek) != KEK_BYTES:
            raise KeyEncryptionKeyError(f"the key-encryption key must be {KEK_BYTES} bytes")
        self._kek = kek

    def seal(self, purpose: str, plaintext: bytes, associated_data: bytes = b"") -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        ciphertext = AESGCM(self._subkey("seal:" + purpose)).encrypt(
            nonce, plaintext, _VERSION + associated_data
        )
        return _VERSION + nonce + ciphertext

    def open(self, purpose: str, sealed: bytes, associated_data: bytes = b"") -> bytes:
        if len(sealed) < 1 + _NONCE_BYTES or sealed[:1] != _VERSION:
            raise SealedValueError("not a sealed value")
        nonce, ciphertext = sealed[1 : 1 + _NONCE_BYTES], sealed[1 + _NONCE_BYTES :]
        try:
            return AESGCM(self._subkey("seal:" + purpose)).decrypt(
                nonce, ciphertext, _VERSION + associated_data
            )
        except InvalidTag:
            raise SealedValueError("sealed value does not authenticate") from None

    def digest(self, purpose: str, value: str | bytes) -> str:
        data = value.encode() if isinstance(value, str) else value
        return hmac.new(self._subkey("mac:" + purpose), data, hashlib.sha256).hexdigest()

    def _subkey(self, info: str) -> bytes:
        return _derive(self._kek, info)


@cache
def _derive(kek: bytes, info: str) -> bytes:
    # Cached: HKDF per call would cost more than the AES it keys. The cache holds derived
    # keys of a handful of purposes only.
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info.encode()).derive(kek)


def decode_kek(text: str) -> bytes:
    """A KEK from its base64url (or standard base64) text form."""
    cleaned = text.strip()
    try:
        kek = base64.urlsafe_b64decode(cleaned + "=" * (-len(cleaned) % 4))
    except (binascii.Error, ValueError):
        raise KeyEncryptionKeyError("the key-encryption key is not base64") from None
    if len(kek) != KEK_BYTES:
        raise KeyEncryptionKeyError(
            f"the key-encryption key must decode to {KEK_BYTES} bytes, got {len(kek)}"
        )
    return kek


def new_kek_text() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(KEK_BYTES)).decode().rstrip("=")


def load_or_create_kek_file(path: Path, *, create: bool) -> bytes:
    """Read the KEK file; with `create`, make it (0600, in a 0700 directory) when absent.

    Created with O_EXCL so two processes starting at once cannot write two different keys:
    the loser reads the winner's.
    """
    if not path.exists():
        if not create:
            raise KeyEncryptionKeyError(f"key-encryption key file {path} does not exist")
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as handle:
                handle.write(new_kek_text() + "\n")
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise KeyEncryptionKeyError(
            f"key-encryption key file {path} is readable by others (mode {mode:o}); chmod 600 it"
        )
    return decode_kek(path.read_text())
