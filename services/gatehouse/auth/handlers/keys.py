"""Signing keys: make sure one exists, rotate when it is old (or when asked)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from gatehouse.auth.handlers.ports import AuthUnitOfWork, SecretBox, StoredSigningKey

NewKey = Callable[[SecretBox, datetime], StoredSigningKey]


def current_signing_key(keys: Sequence[StoredSigningKey]) -> StoredSigningKey | None:
    """The key to sign with: the newest one not superseded. Replicas that raced to create
    one at the same moment all pick the same (newest, then highest kid)."""
    live = [key for key in keys if key.superseded_at is None]
    return max(live, key=lambda key: (key.created_at, key.kid), default=None)


async def ensure_signing_key(
    uow: AuthUnitOfWork,
    box: SecretBox,
    now: datetime,
    rotation: timedelta,
    new_key: NewKey,
) -> list[StoredSigningKey]:
    """The stored keys, after adding a new current one if there is none or it has reached
    `rotation` age. Replicas doing this at once may each add one; they all then sign with the
    newest, and the others stay published until superseded."""
    async with uow.reader() as reader:
        keys = await reader.signing_keys.all()
        current = current_signing_key(keys)
        if current is not None and now - current.created_at < rotation:
            return keys
    return await rotate_signing_key(uow, box, now, new_key)


async def rotate_signing_key(
    uow: AuthUnitOfWork, box: SecretBox, now: datetime, new_key: NewKey
) -> list[StoredSigningKey]:
    """A new current key; the previous ones are superseded (still published for a token
    lifetime, so nobody is signed out)."""
    key = new_key(box, now)
    async with uow:
        await uow.signing_keys.add(key)
        await uow.signing_keys.supersede_all_but(key.kid, now)
        await uow.commit()
    async with uow.reader() as reader:
        return await reader.signing_keys.all()
