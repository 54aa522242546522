"""Signing keys: make sure one exists, rotate when it is old (or when asked).

A key's life: published from `created_at`, signs from `activates_at` until `superseded_at`,
stays published for a token lifetime after that. A scheduled rotation publishes the next
key `prepublish` ahead of its first signature, so every verifier that caches the JWKS (Envoy
caches it for minutes) knows the key before any token carries it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from gatehouse.auth.handlers.ports import AuthUnitOfWork, SecretBox, StoredSigningKey

NewKey = Callable[[SecretBox, datetime], StoredSigningKey]


def signs_at(key: StoredSigningKey, now: datetime) -> bool:
    return key.activates_at <= now and (key.superseded_at is None or now < key.superseded_at)


def current_signing_key(keys: Sequence[StoredSigningKey], now: datetime) -> StoredSigningKey | None:
    """The key to sign with at `now`: the most recently activated one still signing. Replicas
    that raced to create one at the same moment all pick the same (then highest kid)."""
    live = [key for key in keys if signs_at(key, now)]
    return max(live, key=lambda key: (key.activates_at, key.kid), default=None)


def upcoming_signing_key(
    keys: Sequence[StoredSigningKey], now: datetime
) -> StoredSigningKey | None:
    """A key already published that starts signing later, if a rotation is under way."""
    later = [key for key in keys if key.activates_at > now and key.superseded_at is None]
    return max(later, key=lambda key: (key.activates_at, key.kid), default=None)


async def ensure_signing_key(
    uow: AuthUnitOfWork,
    box: SecretBox,
    now: datetime,
    rotation: timedelta,
    new_key: NewKey,
    *,
    prepublish: timedelta = timedelta(0),
) -> list[StoredSigningKey]:
    """The stored keys, after adding a new one if none signs now (it then signs at once:
    there is nothing else to sign with) or the current one has signed for `rotation` and no
    successor is published yet (that one signs `prepublish` from now). Replicas doing this at
    once may each add one; they all then sign with the newest, and the others stay published
    until superseded."""
    async with uow.reader() as reader:
        keys = await reader.signing_keys.all()
    current = current_signing_key(keys, now)
    if current is None:
        _, keys = await rotate_signing_key(uow, box, now, new_key)
    elif now - current.activates_at >= rotation and upcoming_signing_key(keys, now) is None:
        _, keys = await rotate_signing_key(uow, box, now, new_key, prepublish=prepublish)
    return keys


async def rotate_signing_key(
    uow: AuthUnitOfWork,
    box: SecretBox,
    now: datetime,
    new_key: NewKey,
    *,
    prepublish: timedelta = timedelta(0),
) -> tuple[StoredSigningKey, list[StoredSigningKey]]:
    """A new key, published now, that signs from `now + prepublish`; every other key stops
    signing then (one superseded earlier keeps its earlier end) and stays published for a
    token lifetime after, so nobody is signed out. Returns the new key and all stored keys."""
    key = dataclasses.replace(new_key(box, now), activates_at=now + prepublish)
    async with uow:
        await uow.signing_keys.add(key)
        await uow.signing_keys.supersede_all_but(key.kid, key.activates_at)
        await uow.commit()
    async with uow.reader() as reader:
        return key, await reader.signing_keys.all()
