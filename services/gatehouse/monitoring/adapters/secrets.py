"""The service's secret key: seals replies that hold a device token (kept for idempotent
replays) and signs page tokens. Every replica must share it."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
_NONCE_BYTES = 12


class SealedDataError(Exception):
    """Sealed bytes were altered, or sealed with another key."""


class KeySealer:
    """AES-GCM with a subkey per purpose, and HMAC-SHA256 MACs (implements `Sealer`)."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"the monitoring secret key must be {KEY_BYTES} bytes")
        self._key = key

    def _subkey(self, purpose: str) -> bytes:
        return hmac.new(self._key, b"gatehouse-monitoring:" + purpose.encode(), "sha256").digest()

    def seal(self, purpose: str, plaintext: bytes) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return nonce + AESGCM(self._subkey(purpose)).encrypt(nonce, plaintext, None)

    def open(self, purpose: str, sealed: bytes) -> bytes:
        nonce, body = sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:]
        try:
            return AESGCM(self._subkey(purpose)).decrypt(nonce, body, None)
        except (InvalidTag, ValueError):
            raise SealedDataError("sealed data does not open with this key") from None

    def mac(self, purpose: str, data: bytes) -> str:
        return hmac.new(self._subkey(purpose), data, hashlib.sha256).hexdigest()


def decode_key(text: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the monitoring secret key is not base64") from None
    if len(key) != KEY_BYTES:
        raise ValueError(f"the monitoring secret key must decode to {KEY_BYTES} bytes")
    return key


def load_or_create_key_file(path: Path, *, create: bool) -> bytes:
    """The key in `path` (base64); with `create`, a new random one written 0600 if missing."""
    if path.is_file():
        return decode_key(path.read_text())
    if not create:
        raise FileNotFoundError(f"monitoring secret key file {path} does not exist")
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(KEY_BYTES)
    try:
        # O_EXCL: a replica starting at the same moment must not overwrite our key.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return decode_key(path.read_text())
    with os.fdopen(fd, "w") as handle:
        handle.write(base64.b64encode(key).decode() + "\n")
    return key
