"""The secret box every service seals and digests with, and its key's text and file forms."""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path

import pytest
from pydantic import SecretStr

from gatehouse.runtime.config import ConfigurationError
from gatehouse.runtime.secrets import (
    KeyedSecretBox,
    SealedValueError,
    SecretKeyError,
    decode_secret_key,
    derive_key,
    load_or_create_key_file,
    new_secret_key_text,
    resolve_secret_key,
)


@pytest.fixture
def box() -> KeyedSecretBox:
    return KeyedSecretBox(secrets.token_bytes(32))


def test_sealed_values_open_only_with_the_same_key_purpose_and_context(
    box: KeyedSecretBox,
) -> None:
    sealed = box.seal("totp-secret", b"JBSWY3DP", b"user-1")
    assert b"JBSWY3DP" not in sealed
    assert box.open("totp-secret", sealed, b"user-1") == b"JBSWY3DP"
    for purpose, context in (("signing-key", b"user-1"), ("totp-secret", b"user-2")):
        with pytest.raises(SealedValueError):
            box.open(purpose, sealed, context)
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(SealedValueError):
        box.open("totp-secret", tampered, b"user-1")
    with pytest.raises(SealedValueError):
        KeyedSecretBox(secrets.token_bytes(32)).open("totp-secret", sealed, b"user-1")


def test_digests_are_keyed_and_separated_by_purpose(box: KeyedSecretBox) -> None:
    assert box.digest("recovery-code", "abcd") == box.digest("recovery-code", "abcd")
    assert box.digest("recovery-code", "abcd") != box.digest("reset-token", "abcd")
    other = KeyedSecretBox(secrets.token_bytes(32))
    assert box.digest("recovery-code", "abcd") != other.digest("recovery-code", "abcd")


def test_key_text_round_trips_and_bad_ones_are_named(tmp_path: Path) -> None:
    text = new_secret_key_text()
    assert len(decode_secret_key(text)) == 32
    with pytest.raises(SecretKeyError, match="32 bytes"):
        decode_secret_key(base64.urlsafe_b64encode(b"short").decode())
    with pytest.raises(SecretKeyError, match="base64"):
        decode_secret_key("not base64 !!")


def test_key_file_is_created_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "auth.kek"
    with pytest.raises(SecretKeyError, match="does not exist"):
        load_or_create_key_file(path, create=False)
    first = load_or_create_key_file(path, create=True)
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert load_or_create_key_file(path, create=True) == first
    os.chmod(path, 0o644)
    with pytest.raises(SecretKeyError, match="readable by others"):
        load_or_create_key_file(path, create=False)


def test_a_key_comes_from_its_setting_then_its_file_then_the_default_file(
    tmp_path: Path,
) -> None:
    text = new_secret_key_text()
    default = tmp_path / "keys" / "svc.key"
    from_setting = resolve_secret_key(
        value=SecretStr(text), file=None, default_file=default, what="the svc key"
    )
    assert from_setting == decode_secret_key(text)
    assert not default.exists()
    created = resolve_secret_key(value=None, file=None, default_file=default, what="the svc key")
    assert resolve_secret_key(value=None, file=default, default_file=tmp_path / "x", what="k") == (
        created
    )
    with pytest.raises(SecretKeyError, match=r"the svc key file .* does not exist") as missing:
        resolve_secret_key(
            value=None, file=tmp_path / "absent", default_file=default, what="the svc key"
        )
    # A configuration problem, reported like any other bad setting (no traceback).
    assert isinstance(missing.value, ConfigurationError)
    with pytest.raises(SecretKeyError, match="the svc key is not base64"):
        resolve_secret_key(
            value=SecretStr("not base64 !!"), file=None, default_file=default, what="the svc key"
        )


def test_standard_base64_keys_are_accepted_too() -> None:
    raw = secrets.token_bytes(32)
    assert decode_secret_key(base64.b64encode(raw).decode() + "\n") == raw


def test_derived_keys_are_stable_per_purpose_and_apart_from_the_boxes_own() -> None:
    key = secrets.token_bytes(32)
    pins = derive_key(key, "access-pins")
    assert pins == derive_key(key, "access-pins")
    assert len(pins) == 32
    assert pins != derive_key(key, "access-pages")
    assert pins != derive_key(secrets.token_bytes(32), "access-pins")
