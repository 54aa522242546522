"""argon2id password hashing off the event loop.

A hash at OWASP's minimum costs ~28 ms of CPU (BENCH-NOTES): on the event loop that would add
28 ms to every other RPC in flight. argon2-cffi releases the GIL inside the C code, so a
small thread pool runs hashes in parallel with the loop (one process per core in production
bounds the total). The pool is created on start, not at import.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from argon2 import PasswordHasher as Argon2
from argon2 import Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from gatehouse.auth.handlers.ports import PasswordCheck

T = TypeVar("T")


def _lower_priority(nice: int) -> None:
    """Make this hashing thread yield the CPU to the event loop (Linux: per-thread nice).

    A burst of sign-ins then slows sign-ins, not every other RPC of the process. Best
    effort: elsewhere (or without the right) hashes just run at normal priority.
    """
    if nice <= 0:
        return
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)


@dataclass(frozen=True, slots=True)
class Argon2Parameters:
    time_cost: int = 2
    memory_kib: int = 19 * 1024
    parallelism: int = 1

    def describe(self) -> str:
        return (
            f"argon2id m={self.memory_kib} KiB ({self.memory_kib / 1024:g} MiB), "
            f"t={self.time_cost}, p={self.parallelism}"
        )


class Argon2Hasher:
    """`PasswordHasher` with argon2id; `start()` before use, `stop()` on shutdown."""

    def __init__(self, parameters: Argon2Parameters, *, workers: int = 1, nice: int = 10) -> None:
        self.parameters = parameters
        self._argon2 = Argon2(
            time_cost=parameters.time_cost,
            memory_cost=parameters.memory_kib,
            parallelism=parameters.parallelism,
            hash_len=32,
            salt_len=16,
            type=Type.ID,
        )
        self._workers = workers
        self._nice = nice
        self._executor: ThreadPoolExecutor | None = None
        self._dummy_hash: str | None = None

    async def start(self) -> None:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=self._workers,
                thread_name_prefix="argon2",
                initializer=_lower_priority,
                initargs=(self._nice,),
            )
        if self._dummy_hash is None:
            # Same parameters as real hashes, so verifying against it costs the same; the
            # password behind it is random and thrown away.
            self._dummy_hash = await self.hash(secrets.token_urlsafe(24))

    async def stop(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)

    async def hash(self, password: str) -> str:
        return await self._run(self._argon2.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> PasswordCheck:
        if password_hash is None:
            await self._run(self._verify, self._dummy(), password)
            return PasswordCheck(ok=False)
        ok = await self._run(self._verify, password_hash, password)
        return PasswordCheck(ok=ok, needs_rehash=ok and self._needs_rehash(password_hash))

    def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return self._argon2.verify(password_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def _needs_rehash(self, password_hash: str) -> bool:
        try:
            return self._argon2.check_needs_rehash(password_hash)
        except InvalidHashError:
            return True

    def _dummy(self) -> str:
        if self._dummy_hash is None:
            raise RuntimeError("Argon2Hasher.start() was not awaited")
        return self._dummy_hash

    async def _run(self, function: Callable[..., T], *args: str) -> T:
        if self._executor is None:
            raise RuntimeError("Argon2Hasher.start() was not awaited")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, function, *args)
