"""A service's secret key and what is derived from it, for every service that keeps secrets.

One 32-byte key per service, shared by its replicas (a platform secret in production, a 0600
file under `<home>/keys` in embedded mode), never stored in the database. From it HKDF derives
one subkey per purpose, so a key used to encrypt is never also a MAC key:

- `seal`/`open`: AES-256-GCM, for what must be read back (auth's signing keys and TOTP
  secrets, idempotent replies that carry tokens);
- `digest`: HMAC-SHA256, for what is only ever compared (token and code hashes, request
  fingerprints, page-token signatures). With a key, a stolen database alone does not let
  anyone brute-force low-entropy values (recovery codes, PINs) offline.

Auth calls its key the key-encryption key (KEK); the derivation is the same for every service,
and changing it would make stored secrets unreadable.
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
from pydantic import SecretStr

from gatehouse.runtime.config import ConfigurationError

SECRET_KEY_BYTES = 32
_NONCE_BYTES = 12
_VERSION = b"\x01"  # first byte of every sealed value, so the format can evolve


class SecretKeyError(ConfigurationError):
    """A service's secret key is missing, malformed or exposed."""


class SealedValueError(Exception):
    """A sealed value failed authentication: tampered with, or sealed under another KEK."""


class KeyedSecretBox:
    """Sealing and keyed digests under one secret key (services type it by their own port)."""

    def __init__(self, key: bytes) -> None:
        if len(key) != SECRET_KEY_BYTES:
            raise SecretKeyError(f"a secret key must be {SECRET_KEY_BYTES} bytes")
        self._key = key

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
        return _derive(self._key, info)


def derive_key(key: bytes, purpose: str) -> bytes:
    """A 32-byte subkey of `key` for a purpose whose code does its own keyed hashing (say, a
    PIN digest built into a lookup index); never equal to a subkey `KeyedSecretBox` uses."""
    return _derive(key, "key:" + purpose)


@cache
def _derive(key: bytes, info: str) -> bytes:
    # Cached: HKDF per call would cost more than the AES it keys. The cache holds derived
    # keys of a handful of purposes only.
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info.encode()).derive(key)


def decode_secret_key(text: str, *, what: str = "the secret key") -> bytes:
    """A key from its base64url (or standard base64) text form."""
    cleaned = text.strip()
    try:
        key = base64.urlsafe_b64decode(cleaned + "=" * (-len(cleaned) % 4))
    except (binascii.Error, ValueError):
        raise SecretKeyError(f"{what} is not base64") from None
    if len(key) != SECRET_KEY_BYTES:
        raise SecretKeyError(f"{what} must decode to {SECRET_KEY_BYTES} bytes, got {len(key)}")
    return key


def new_secret_key_text() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(SECRET_KEY_BYTES)).decode().rstrip("=")


def load_or_create_key_file(path: Path, *, create: bool, what: str = "secret key") -> bytes:
    """Read a key file; with `create`, make it (0600, in a 0700 directory) when absent.

    Created with O_EXCL so two processes starting at once cannot write two different keys:
    the loser reads the winner's.
    """
    try:
        if not path.exists():
            if not create:
                raise SecretKeyError(f"{what} file {path} does not exist")
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass
            else:
                with os.fdopen(fd, "w") as handle:
                    handle.write(new_secret_key_text() + "\n")
        mode = path.stat().st_mode & 0o777
        text = path.read_text()
    except OSError as error:
        raise SecretKeyError(f"{what} file {path}: {error.strerror}") from None
    if mode & 0o077:
        raise SecretKeyError(
            f"{what} file {path} is readable by others (mode {mode:o}); chmod 600 it"
        )
    return decode_secret_key(text, what=f"the {what} in {path}")


def resolve_secret_key(
    *, value: SecretStr | None, file: Path | None, default_file: Path, what: str
) -> bytes:
    """A service's key: from its setting, else from its configured file, else from
    `default_file`, created on first start (embedded mode)."""
    if value is not None:
        return decode_secret_key(value.get_secret_value(), what=what)
    if file is not None:
        return load_or_create_key_file(file, create=False, what=what)
    return load_or_create_key_file(default_file, create=True, what=what)
